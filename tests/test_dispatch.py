"""The dispatcher over a real SQLite outbox and real local HTTP servers: signed webhooks,
send_after, fallback, retries then dead, rate limits, escalation until acknowledged,
receipts, atomic claims and crash recovery. Time is a controllable clock, never wall time."""

from __future__ import annotations

import json
import logging
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
    DispatchReport,
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
    settings = DispatchSettings(**{"backoff_base_s": 30, "jitter": 0.2, "concurrency": 1,
                                   **cfg})
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


def test_progress_counts_messages_handled_of_those_due(db, sink, caplog) -> None:
    """The dispatcher reports progress per batch (the CLI draws it as a bar, see
    flows/progress.py): handled of due, with rows not yet due left out of the total."""
    _, server = sink
    enqueue_payloads(db, [payload(i) for i in range(5)]
                     + [payload(9, send_after_utc="2023-07-01T13:00:00Z")])
    d = dispatcher(db, {"webhook": webhook_channel(server.url)}, RegistryContactBook(registry(10)),
                   Clock(), batch_size=2)
    with caplog.at_level(logging.INFO, logger="forewarn.progress.dispatch"):
        d.run()
    steps = [(r.step, r.steps) for r in caplog.records if r.name == "forewarn.progress.dispatch"]
    assert steps == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert caplog.records[-1].getMessage() == "5 sent, 5 handled of 5 due"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forewarn.progress.dispatch"):
        d.run(limit=3)  # nothing due now
    assert [(r.step, r.steps) for r in caplog.records] == [(0, 0)]


def test_a_bad_signature_is_a_permanent_failure(db, sink) -> None:
    receiver, server = sink
    enqueue_payloads(db, [payload(0)])
    wrong = WebhookChannel(WebhookChannelSettings(url=server.url),
                           ChannelSecrets.model_validate({"webhook_secret": "other"}))
    report = dispatcher(db, {"webhook": wrong}, RegistryContactBook(registry(1)), Clock()).run()
    assert (report.sent, report.dead) == (0, 1)
    assert "HTTP 401" in rows(db)["key-00000"]["last_error"]
    assert not receiver.delivered


# --- fallback, retries, dead ------------------------------------------------------------------


def twilio_fcm(url: str) -> dict[str, Any]:
    return {
        "app_push": PushChannel(FcmChannelSettings(base_url=url, project_id="p1"), SECRETS),
        "sms": SmsChannel(TwilioChannelSettings(base_url=url), SECRETS),
        "voice": VoiceChannel(TwilioChannelSettings(base_url=url), SECRETS),
    }


def provider(push_status: int = 200, sms_status: int = 201):
    """FCM and Twilio on one local server, with the statuses the test picks."""
    def reply(request):
        if request.path.endswith("messages:send"):
            if push_status != 200:
                return json_reply(push_status, {"error": {"status": "UNREGISTERED"}})
            return json_reply(200, {"name": f"projects/p1/messages/{len(request.body)}"})
        if request.path.endswith("Messages.json"):
            if sms_status != 201:
                return json_reply(sms_status, {"code": 21211, "message": "Invalid 'To' "
                                                "Phone Number: +12025550100"})
            return json_reply(201, {"sid": "SM" + request.form()["To"][-4:], "status": "queued"})
        return json_reply(201, {"sid": "CA" + request.form()["To"][-4:], "status": "queued"})
    return reply


def test_a_permanent_failure_falls_back_to_the_next_channel(db) -> None:
    enqueue_payloads(db, [payload(1, channels=["app_push", "sms", "voice"])])
    book = RegistryContactBook(registry(2, channels=("app_push", "sms", "voice")))
    with http_server(provider(push_status=404)) as server:
        report = dispatcher(db, twilio_fcm(server.url), book, Clock()).run()
        paths = [r.path for r in server.requests]

    assert paths == ["/v1/projects/p1/messages:send", "/2010-04-01/Accounts/AC123/Messages.json"]
    assert (report.sent, report.dead) == (1, 0)
    row = rows(db)["key-00001"]
    assert (row["state"], row["channel_used"], row["provider_message_id"]) == ("sent", "sms",
                                                                               "SM0001")
    assert row["escalate_at"] is None  # not critical: no escalation after delivery
    assert attempts(db) == [("key-00001", "app_push", "permanent"), ("key-00001", "sms", "sent")]


def test_the_chain_used_up_is_dead_and_the_error_hides_the_number(db) -> None:
    enqueue_payloads(db, [payload(1, channels=["app_push", "sms"])])
    book = RegistryContactBook(registry(2, channels=("app_push", "sms")))
    with http_server(provider(push_status=400, sms_status=400)) as server:
        report = dispatcher(db, twilio_fcm(server.url), book, Clock()).run()
    assert report.dead == 1
    row = rows(db)["key-00001"]
    assert row["state"] == "dead"
    assert "HTTP 400" in row["last_error"] and "+1202" not in row["last_error"]
    assert "<phone>" in row["last_error"]


def test_transient_failures_back_off_then_the_row_is_dead(db) -> None:
    receiver = WebhookSink(SECRET.encode(), fail=lambda request: 503)
    enqueue_payloads(db, [payload(0)])
    clock = Clock()
    with http_server(receiver) as server:
        d = dispatcher(db, {"webhook": webhook_channel(server.url)},
                       RegistryContactBook(registry(1)), clock, max_attempts=3,
                       backoff_base_s=60, jitter=0.5)
        delays = []
        for _ in range(3):
            report = d.run()
            assert report.claimed == 1
            row = rows(db)["key-00000"]
            if row["state"] == "dead":
                break
            assert row["state"] == "failed"
            due = datetime.fromisoformat(row["next_attempt_at"]).replace(tzinfo=UTC)
            delays.append((due - clock.now()).total_seconds())
            assert d.run().claimed == 0  # not due before its backoff
            clock.advance(delays[-1])
    assert 30 <= delays[0] <= 60 and 60 <= delays[1] <= 120  # 60 * 2**(n-1), jitter 0.5
    assert rows(db)["key-00000"]["state"] == "dead"
    assert rows(db)["key-00000"]["attempts"] == 3
    assert sum(receiver.received.values()) == 3
    assert not receiver.delivered


def test_backoff_is_exponential_capped_and_jitter_bounded() -> None:
    cfg = DispatchSettings(backoff_base_s=10, backoff_max_s=100, jitter=0.25)
    rng = random.Random(1)
    for attempt, full in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)):
        draws = [backoff_s(attempt, cfg, rng) for _ in range(200)]
        assert full * 0.75 <= min(draws) and max(draws) <= full
        assert max(draws) - min(draws) > full * 0.2  # jitter spreads the retries


# --- rate limits ---------------------------------------------------------------------------


def test_token_bucket_grants_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=4, burst=2, clock=clock)
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.25)
    clock.advance(0.25)
    assert bucket.take() == 0.0
    clock.advance(100)
    assert bucket.tokens <= 2 and bucket.granted == 3


def test_each_channel_keeps_its_rate_limit(db, sink) -> None:
    receiver, server = sink
    enqueue_payloads(db, [payload(i) for i in range(25)])
    clock = Clock()
    d = dispatcher(db, {"webhook": webhook_channel(server.url)},
                   RegistryContactBook(registry(25)), clock,
                   limits=limits(webhook={"rate_per_s": 5.0, "burst": 5}))
    report = d.run()

    assert report.sent == 25 and len(receiver.delivered) == 25
    assert d.buckets["webhook"].granted == 25
    # 5 at once, then 20 more at 5 per second: 4 s of (clock) waiting, no more, no less
    assert report.waited_s == pytest.approx(4.0, abs=1e-6) == sum(clock.slept)
    sends = [datetime.fromisoformat(t) for (t,) in sqlite3.connect(
        db.removeprefix("sqlite:///")).execute("SELECT attempted_at FROM outbox_deliveries")]
    per_second = pd.Series(1, index=pd.DatetimeIndex(sends)).resample("1s").sum()
    assert per_second.max() <= 5 + 5  # burst plus one second of rate at most


# --- escalation, acknowledgement, receipts ----------------------------------------------------


def test_a_critical_customer_is_escalated_until_acknowledged(db) -> None:
    enqueue_payloads(db, [payload(3, segment="critical", channels=["app_push", "sms", "voice"])])
    book = RegistryContactBook(registry(5, channels=("app_push", "sms", "voice"),
                                        segment="critical"))
    clock = Clock()
    with http_server(provider()) as server:
        d = dispatcher(db, twilio_fcm(server.url), book, clock, escalate_after_s=900,
                       fallback=["email"])
        assert d.run().sent == 1
        assert d.run().claimed == 0  # waiting for the acknowledgement
        clock.advance(899)
        assert d.run().claimed == 0
        clock.advance(1)
        second = d.run()
        assert (second.sent, second.escalations) == (1, 1)
        assert acknowledge(db, "key-00003", at=clock.now())
        clock.advance(3600)
        assert d.run().claimed == 0  # acknowledged: the voice call is never made
        paths = [r.path.rsplit("/", 1)[-1] for r in server.requests]

    assert paths == ["messages:send", "Messages.json"]
    row = rows(db)["key-00003"]
    assert row["state"] == "sent" and row["channel_used"] == "sms"
    assert row["acknowledged_at"] is not None and row["escalate_at"] is None
    assert not acknowledge(db, "no-such-key")


def test_an_unacknowledged_critical_customer_gets_every_channel_then_stops(db) -> None:
    enqueue_payloads(db, [payload(3, critical=True, channels=["app_push"])])
    book = RegistryContactBook(registry(5, channels=("app_push", "sms")))
    clock = Clock()
    with http_server(provider()) as server:
        d = dispatcher(db, twilio_fcm(server.url), book, clock, escalate_after_s=60,
                       fallback=["sms", "voice"])
        for _ in range(5):
            d.run()
            clock.advance(60)
        kinds = [r.path.rsplit("/", 1)[-1] for r in server.requests]
    assert kinds == ["messages:send", "Messages.json", "Calls.json"]
    assert "<Say language=\"en-US\">" in server.requests[2].form()["Twiml"]
    assert rows(db)["key-00003"]["escalate_at"] is None


def test_delivery_receipts_are_recorded(db) -> None:
    enqueue_payloads(db, [payload(1, channels=["sms"])])
    book = RegistryContactBook(registry(2, channels=("sms",)))
    with http_server(provider()) as server:
        dispatcher(db, twilio_fcm(server.url), book, Clock()).run()
    assert record_receipt(db, "delivered", provider_message_id="SM0001", at=T0) == 1
    assert record_receipt(db, "undelivered", key="no-such-key") == 0
    row = rows(db)["key-00001"]
    assert row["delivery_status"] == "delivered" and row["delivered_at"] is not None
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT receipt_status FROM outbox_deliveries").fetchall() == [
            ("delivered",)]


def test_unknown_customer_and_missing_channel_are_dead_not_retried(db, sink) -> None:
    _, server = sink
    enqueue_payloads(db, [payload(50), payload(1, channels=["wechat"])])
    report = dispatcher(db, {"webhook": webhook_channel(server.url)},
                        RegistryContactBook(registry(2)), Clock()).run()
    assert report.dead == 2
    state = rows(db)
    assert "not in the contact book" in state["key-00050"]["last_error"]
    assert "wechat is not available" in state["key-00001"]["last_error"]


# --- claims, crash, dry run ------------------------------------------------------------------


def test_two_dispatchers_never_claim_the_same_row(db, sink) -> None:
    _, server = sink
    enqueue_payloads(db, [payload(i) for i in range(30)])
    book = RegistryContactBook(registry(30))
    clock = Clock()
    a = dispatcher(db, {"webhook": webhook_channel(server.url)}, book, clock)
    b = dispatcher(db, {"webhook": webhook_channel(server.url)}, book, clock)
    first, second, third = a.claim(12), b.claim(12), a.claim(12)
    keys = [c.key for c in (*first, *second, *third)]
    assert len(keys) == len(set(keys)) == 30
    assert b.claim(5) == []  # everything is held under a lease


def test_a_row_left_sending_by_a_crash_is_resent_once_with_the_same_key(db, sink) -> None:
    receiver, server = sink
    enqueue_payloads(db, [payload(i) for i in range(10)])
    book = RegistryContactBook(registry(10))
    clock = Clock()
    crashed = dispatcher(db, {"webhook": webhook_channel(server.url)}, book, clock,
                         lease_s=120)
    batch = crashed.claim(4)
    for item in batch[:3]:  # sent to the provider, then the process died before recording
        crashed._send_one(item, book.lookup(item.customer_id), "webhook", 0)
    restarted = dispatcher(db, {"webhook": webhook_channel(server.url)}, book, clock,
                           lease_s=120)
    assert restarted.run().claimed == 6  # the crashed claim still holds its 4 rows
    clock.advance(120)
    assert restarted.run().claimed == 4
    assert state_counts(db) == {"sent": 10}
    assert set(receiver.delivered.values()) == {1} and len(receiver.delivered) == 10
    assert sum(receiver.received.values()) == 13  # 3 resends, deduped by the receiver
    late = DispatchReport()
    crashed.process(batch, late)  # the crashed claim comes back to life: it may not write
    assert late.lost_claims == 4
    assert state_counts(db) == {"sent": 10}


def test_dry_run_counts_by_channel_and_state_and_changes_nothing(db) -> None:
    enqueue_payloads(db, [payload(0), payload(1, channels=["sms", "voice"]),
                          payload(2, channels=["sms"]),
                          payload(3, send_after_utc="2023-07-02T00:00:00Z")])
    book = RegistryContactBook(registry(5))
    before = rows(db)
    summary = due_summary(db, book, DispatchSettings(), now=T0)
    assert summary == {("webhook", "pending"): 1, ("sms", "pending"): 2}
    assert rows(db) == before


def test_an_outbox_from_before_the_dispatcher_gains_its_columns(tmp_path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE outbox (idempotency_key VARCHAR(64) PRIMARY KEY, run_id "
                     "VARCHAR(128) NOT NULL, customer_id VARCHAR(128) NOT NULL, channel "
                     "VARCHAR(32) NOT NULL, kind VARCHAR(64) NOT NULL, payload TEXT NOT NULL, "
                     "state VARCHAR(7) NOT NULL, attempts INTEGER NOT NULL, created_at DATETIME "
                     "NOT NULL, send_after DATETIME NOT NULL)")
        conn.execute("INSERT INTO outbox VALUES ('k1', 'r', 'C00000', 'webhook', 'risk_advisory',"
                     " ?, 'pending', 0, '2023-07-01 00:00:00', '2023-07-01 00:00:00')",
                     (json.dumps(payload(0)),))
    url = f"sqlite:///{path}"
    assert state_counts(url) == {"pending": 1}
    row = rows(url)["k1"]
    assert row["channel_index"] == 0 and row["acknowledged_at"] is None
    assert due_summary(url, RegistryContactBook(registry(1)), DispatchSettings(), now=T0) == {
        ("webhook", "pending"): 1}


def test_parallel_sending_delivers_each_message_once(db, sink) -> None:
    receiver, server = sink
    enqueue_payloads(db, [payload(i) for i in range(120)])
    d = dispatcher(db, {"webhook": webhook_channel(server.url)}, RegistryContactBook(
        registry(120)), Clock(), concurrency=4, batch_size=50, commit_every=7)
    try:
        report = d.run()
    finally:
        d.close()
    assert (report.claimed, report.sent, report.lost_claims) == (120, 120, 0)
    assert report.outcomes == {("webhook", "sent"): 120}
    assert len(receiver.delivered) == 120 and sum(receiver.received.values()) == 120
    assert state_counts(db) == {"sent": 120}
