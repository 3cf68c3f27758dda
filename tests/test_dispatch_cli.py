"""``forewarn dispatch``: dry run, limits, repeats, and one-line errors (exit 2), in process
against a real SQLite outbox, a registry file and a local webhook sink."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from local_servers import WebhookSink, http_server
from typer.testing import CliRunner

from flows.cli import app
from serving.contacts import RegistryContactBook, save_registry
from serving.outbox import enqueue_payloads

SECRET = "cli-secret"


def _registry(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(n)], "area_id": "21067",
        "segment": "residential", "channels": [("webhook", "sms")] * n, "language": "en",
        "timezone": "America/New_York", "name": "x", "phone": "+12025550100",
        "email": [f"c{i}@example.invalid" for i in range(n)], "wechat_openid": None,
        "synthetic": True})


def _payload(i: int, send_after: str = "2020-01-01T00:00:00Z") -> dict:
    return {"advisory_id": f"k{i:03d}", "run_id": "r", "kind": "risk_advisory",
            "customer_id": f"C{i}", "segment": "residential", "language": "en",
            "channel": "webhook", "send_after_utc": send_after, "subject": "s", "body": "b",
            "sms_text": "t"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    save_registry(_registry(8), home / "customers.parquet")
    payloads = [_payload(i) for i in range(7)] + [_payload(7, "2999-01-01T00:00:00Z")]
    enqueue_payloads(f"sqlite:///{home / 'outbox.db'}", payloads)
    return home


def _invoke(args: list[str], home: Path, profile: Path) -> object:
    env = {"FOREWARN_HOME": str(home), "FOREWARN_WEBHOOK_SECRET": SECRET}
    return CliRunner().invoke(app, ["dispatch", "--config", str(profile), *args], env=env)


def _states(home: Path) -> dict[str, int]:
    with sqlite3.connect(home / "outbox.db") as conn:
        return dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())


def test_dry_run_then_limited_runs_then_nothing_left(home: Path, tmp_path: Path) -> None:
    sink = WebhookSink(SECRET.encode())
    with http_server(sink) as server:
        profile = tmp_path / "p.yaml"
        profile.write_text(f"channels:\n  webhook: {{url: '{server.url}/in'}}\n")

        dry = _invoke(["--dry-run"], home, profile)
        assert dry.exit_code == 0, dry.output
        assert "due now: 7" in dry.output
        assert [line.split() for line in dry.output.splitlines()[1:]] == [
            ["webhook", "pending", "7"]]
        assert _states(home) == {"pending": 8} and not server.requests

        first = _invoke(["--limit", "3"], home, profile)
        assert first.exit_code == 0, first.output
        out = json.loads(first.output)
        assert out["run"]["sent"] == 3 and out["outbox"] == {"pending": 5, "sent": 3}
        assert "sms" in out["unavailable_channels"]  # no Twilio credentials in this env

        assert json.loads(_invoke([], home, profile).output)["run"]["sent"] == 4
        again = json.loads(_invoke([], home, profile).output)
        assert again["run"]["claimed"] == 0 and again["outbox"] == {"pending": 1, "sent": 7}
    assert sorted(sink.delivered) == [f"k{i:03d}" for i in range(7)]
    assert set(sink.delivered.values()) == {1}


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "0"], "--limit must be at least 1"),
    (["--customers", "/nonexistent/customers.parquet"], "customer registry not found"),
])
def test_bad_input_is_one_line_and_exit_2(home: Path, tmp_path: Path, args, message) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("channels:\n  webhook: {url: 'http://127.0.0.1:9/in'}\n")
    result = _invoke(args, home, profile)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("forewarn: error")]
    assert len(lines) == 1 and message in lines[0]


def test_unknown_fallback_channel_in_the_profile_is_named(home: Path, tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("dispatch:\n  fallback: [sms, carrier_pigeon]\n")
    result = _invoke(["--dry-run"], home, profile)
    assert result.exit_code == 2
    assert "dispatch.fallback" in result.output and "carrier_pigeon" in result.output


def test_the_saved_registry_gives_contacts_back(home: Path) -> None:
    book = RegistryContactBook.from_file(home / "customers.parquet")
    contact = book.lookup("C3")
    assert contact is not None and contact.channels == ("webhook", "sms")
    assert contact.email == "c3@example.invalid" and contact.push_token is None
    assert book.lookup("nobody") is None


def test_the_contact_book_serves_the_synthetic_registry(tmp_path: Path) -> None:
    from configs.settings import load_settings
    from features.customers import generate_registry

    areas = pd.DataFrame({"area_id": ["21067", "21111"], "customers_served": [30_000, 50_000],
                          "timezone": "America/New_York"})
    registry = generate_registry(areas, load_settings(environ={}).customers)
    book = RegistryContactBook.from_file(save_registry(registry, tmp_path / "c.parquet"))
    assert len(book) == len(registry) == 800
    for row in registry.sample(50, random_state=1).itertuples():
        contact = book.lookup(row.customer_id)
        assert contact is not None and contact.channels == tuple(row.channels)
        assert (contact.phone, contact.email) == (row.phone, row.email)
        assert (contact.wechat_openid is not None) == ("wechat" in row.channels)
        assert (contact.push_token is not None) == ("app_push" in row.channels)
