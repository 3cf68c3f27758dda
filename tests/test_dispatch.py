"""The dispatcher over a real SQLite outbox and real local HTTP servers: signed webhooks,
send_after, fallback, retries then dead, rate limits, escalation until acknowledged,
receipts, atomic claims and crash recovery. Time is a controllable clock, never wall time."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from local_servers import WebhookSink, http_server, json_reply

from configs.settings import (
    ChannelSecrets,
    ChannelsSettings,
    DispatchSettings,
    FcmChannelSettings,
    TwilioChannelSettings,
    WebhookChannelSettings,
)
from serving.channels import PushChannel, SmsChannel, VoiceChannel, WebhookChannel
from serving.contacts import RegistryContactBook
from serving.dispatch import (
    Dispatcher,
    TokenBucket,
    acknowledge,
    backoff_s,
    due_summary,
    record_receipt,
    state_counts,
)
from serving.outbox import enqueue_payloads

T0 = datetime(2023, 7, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec-test"
SECRETS = ChannelSecrets.model_validate({
    "webhook_secret": SECRET, "twilio_account_sid": "AC123", "twilio_auth_token": "tw-token",
    "fcm_access_token": "fcm-token"})


class Clock:
    """A clock the test moves: sleep() advances it, nothing waits."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start
        self.mono = 1000.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        self.mono += seconds


def payload(i: int, **over: Any) -> dict[str, Any]:
    base = {
        "advisory_id": f"key-{i:05d}", "run_id": "run-1", "kind": "risk_advisory",
        "customer_id": f"C{i:05d}", "segment": "residential", "language": "en",
        "channels": ["webhook"], "send_after_utc": "2023-07-01T06:00:00Z",
        "subject": "Power cut risk Tue 4 Jul", "body": "Risk of a power cut.\n\nCall 1-800.",
        "sms_text": "Forewarn: power cut risk Tue 14:00-19:00. Call 1-800.",
    }
    return {**base, **over}


def registry(n: int, channels: tuple[str, ...] = ("webhook",), segment: str = "residential"
             ) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(n)],
        "area_id": "21067", "segment": segment, "channels": [channels] * n, "language": "en",
        "timezone": "America/New_York", "name": [f"Customer {i}" for i in range(n)],
        "phone": [f"+1202555{i % 100:04d}" for i in range(n)],
        "email": [f"c{i}@example.invalid" for i in range(n)],
        "wechat_openid": None, "synthetic": True,
    })


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


@pytest.fixture
def sink() -> Iterator[tuple[WebhookSink, Any]]:
    receiver = WebhookSink(SECRET.encode())
    with http_server(receiver) as server:
        yield receiver, server


def webhook_channel(url: str) -> WebhookChannel:
    return WebhookChannel(WebhookChannelSettings(url=f"{url}/hooks/forewarn"), SECRETS)


def limits(**over: Any) -> ChannelsSettings:
    fast = {"rate_per_s": 1000.0, "burst": 1000}
    return ChannelsSettings(**{name: cls(**{**fast, **over.get(name, {})}) for name, cls in (
        ("webhook", WebhookChannelSettings), ("sms", TwilioChannelSettings),
        ("voice", TwilioChannelSettings), ("app_push", FcmChannelSettings))})


def dispatcher(db: str, channels: dict[str, Any], book: RegistryContactBook, clock: Clock,
               **cfg: Any) -> Dispatcher:
    rates = cfg.pop("limits", None) or limits()
    settings = DispatchSettings(**{"backoff_base_s": 30, "jitter": 0.2, **cfg})
    return Dispatcher(db, settings, channels, book, rates, clock=clock, rng=random.Random(7))


def rows(db: str) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return {r["idempotency_key"]: dict(r) for r in conn.execute("SELECT * FROM outbox")}


def attempts(db: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT idempotency_key, channel, outcome FROM outbox_deliveries "
                            "ORDER BY id").fetchall()


# --- webhook, send_after, idempotent reruns ----------------------------------------------------


def test_due_messages_go_out_signed_once_and_a_rerun_sends_nothing(db, sink) -> None:
    receiver, server = sink
    enqueue_payloads(db, [payload(i) for i in range(5)]
                     + [payload(9, send_after_utc="2023-07-01T13:00:00Z")])
    clock = Clock()
    d = dispatcher(db, {"webhook": webhook_channel(server.url)}, RegistryContactBook(registry(10)),
                   clock)
    report = d.run()

    assert (report.claimed, report.sent, report.dead) == (5, 5, 0)
    assert sorted(receiver.delivered) == [f"key-{i:05d}" for i in range(5)]
    assert set(receiver.delivered.values()) == {1}
    first = server.requests[0]
    assert (first.method, first.path) == ("POST", "/hooks/forewarn")
    body = first.json()
    assert body["advisory_id"] == body["idempotency_key"] == "key-00000"
    assert body["content"]["subject"] == "Power cut risk Tue 4 Jul"
    assert "example.invalid" not in first.body.decode() and "+1202" not in first.body.decode()
    state = rows(db)
    assert state["key-00000"]["state"] == "sent"
    assert state["key-00000"]["provider_message_id"] == "rcpt-key-00000"
    assert state["key-00000"]["channel_used"] == "webhook"
    assert state["key-00009"]["state"] == "pending"  # send_after 13:00 is not yet

    assert d.run().claimed == 0  # rerun: nothing due, nothing sent
    clock.advance(3600)
    assert d.run().sent == 1
    assert len(server.requests) == 6


def test_a_bad_signature_is_a_permanent_failure(db, sink) -> None:
    receiver, server = sink
    enqueue_payloads(db, [payload(0)])
    wrong = WebhookChannel(WebhookChannelSettings(url=server.url),
                           ChannelSecrets.model_validate({"webhook_secret": "other"}))
    report = dispatcher(db, {"webhook": wrong}, RegistryContactBook(registry(1)), Clock()).run()
    assert (report.sent, report.dead) == (0, 1)
    assert "HTTP 401" in rows(db)["key-00000"]["last_error"]
    assert not receiver.delivered
