"""Crash and restart: the real ``forewarn dispatch`` in a subprocess, a SQLite file outbox and
a local webhook sink. The sink holds one response open and the test kills the dispatcher
(SIGKILL) while it waits, so the kill lands mid-run without depending on timing. A second
dispatcher then finishes the work: every message is delivered exactly once (the sink counts
by idempotency key), none is lost, and the resends are few and carry the same keys."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
from local_servers import Request, WebhookSink, http_server

from configs.settings import DispatchSettings
from serving.contacts import save_registry
from serving.outbox import enqueue_payloads

FOREWARN = Path(sys.executable).with_name("forewarn")
REPO = Path(__file__).resolve().parents[1]
N = 300
KILL_AT = 137  # the sink holds its answer to this request until the dispatcher is killed
SECRET = "crash-secret"


class HoldingSink(WebhookSink):
    def __init__(self) -> None:
        super().__init__(SECRET.encode())
        self.reached = threading.Event()
        self.release = threading.Event()
        self.count = 0

    def __call__(self, request: Request):
        self.count += 1
        reply = super().__call__(request)  # the delivery counts: the provider has it
        if self.count == KILL_AT:
            self.reached.set()
            self.release.wait(timeout=60)
        return reply


def test_a_killed_dispatcher_restarted_delivers_everything_exactly_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(N)], "area_id": "21067",
        "segment": "residential", "channels": [("webhook",)] * N, "language": "en",
        "timezone": "America/New_York", "name": "x", "phone": None, "email": None,
        "wechat_openid": None, "synthetic": True})
    save_registry(registry, home / "customers.parquet")
    keys = [f"key-{i:04d}" for i in range(N)]
    enqueue_payloads(f"sqlite:///{home / 'outbox.db'}", [
        {"advisory_id": k, "run_id": "r", "kind": "risk_advisory", "customer_id": f"C{i}",
         "segment": "residential", "language": "en", "channel": "webhook",
         "send_after_utc": "2020-01-01T00:00:00Z", "subject": "s", "body": "b", "sms_text": "t"}
        for i, k in enumerate(keys)])
    sink = HoldingSink()
    with http_server(sink) as server:
        profile = tmp_path / "p.yaml"
        # a tiny lease: the restarted dispatcher may take the dead one's rows at once
        profile.write_text(f"channels:\n  webhook: {{url: '{server.url}/in'}}\n"
                           "dispatch: {lease_s: 0.001, batch_size: 50}\n")
        env = {**os.environ, "FOREWARN_HOME": str(home), "FOREWARN_WEBHOOK_SECRET": SECRET}
        command = [str(FOREWARN), "dispatch", "--config", str(profile)]
        first = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            assert sink.reached.wait(timeout=120), first.stderr.read() if first.stderr else ""
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            sink.release.set()
        assert first.returncode == -signal.SIGKILL

        with sqlite3.connect(home / "outbox.db") as conn:
            states = dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state"))
        assert states.get("sending", 0) >= 1 and states.get("sent", 0) < KILL_AT

        second = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 0, second.stderr

    with sqlite3.connect(home / "outbox.db") as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state"))
    assert states == {"sent": N}
    assert sorted(sink.delivered) == keys and set(sink.delivered.values()) == {1}
    resent = sum(sink.received.values()) - N
    # at least the held request, at most one unrecorded commit group (commit_every)
    assert 1 <= resent <= DispatchSettings().commit_every
    assert all(sink.received[k] == 1 for k in keys[: KILL_AT - resent])
