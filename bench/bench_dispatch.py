"""Dispatch throughput: N messages from a SQLite outbox to a local webhook sink.

Enqueues N payloads (webhook channel) into a fresh SQLite outbox, starts a webhook sink in
another process (checks every HMAC signature, dedupes by Idempotency-Key), runs the real
Dispatcher with the base settings (rate limit included) and prints messages per second,
seconds and peak memory (max RSS of this process). Issue 4 asks for at least 1,000 msg/s.

    .venv/bin/python bench/bench_dispatch.py --n 20000
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import urlopen

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.settings import channel_secrets, load_settings  # noqa: E402
from serving.channels import WebhookChannel  # noqa: E402
from serving.contacts import RegistryContactBook  # noqa: E402
from serving.dispatch import Dispatcher, state_counts  # noqa: E402
from serving.outbox import enqueue_payloads  # noqa: E402

SECRET = "bench-secret"


def serve(port_file: Path) -> None:
    """The sink: 200 with a receipt id for a well-signed request, 401 otherwise; GET /stats
    answers {"received", "unique", "bad_signatures"}."""
    received: Counter[str] = Counter()
    bad = [0]
    secret = SECRET.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ts = self.headers.get("X-Forewarn-Timestamp", "")
            good = "sha256=" + hmac.new(secret, ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
            if not hmac.compare_digest(good, self.headers.get("X-Forewarn-Signature", "")):
                bad[0] += 1
                self._reply(401, b'{"error":"signature"}')
                return
            key = self.headers["Idempotency-Key"]
            received[key] += 1
            self._reply(200, b"{}", {"X-Receipt-Id": "r-" + key[:12]})

        def do_GET(self) -> None:
            stats = {"received": sum(received.values()), "unique": len(received),
                     "bad_signatures": bad[0]}
            self._reply(200, json.dumps(stats).encode())

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None
                   ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    work = Path(tempfile.mkdtemp(prefix="forewarn-bench-dispatch-"))
    port_file = work / "port"
    sink = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        cfg = load_settings(overrides={"channels": {"webhook": {"url": f"{url}/in"}}},
                            environ={"FOREWARN_HOME": str(work)})
        outbox = f"sqlite:///{work / 'outbox.db'}"
        n = args.n
        t0 = time.perf_counter()
        enqueue_payloads(outbox, [
            {"advisory_id": hashlib.sha256(f"bench|{i}".encode()).hexdigest(), "run_id": "bench",
             "kind": "risk_advisory", "customer_id": f"C{i:06d}", "segment": "residential",
             "language": "en", "channel": "webhook", "send_after_utc": "2020-01-01T00:00:00Z",
             "subject": "Power cut risk Tue 4 Jul 14:00-19:00 EDT",
             "body": "There is a high chance of a power cut in your area.\n\nCall 1-800.",
             "sms_text": "Forewarn: power cut risk Tue 14:00-19:00 EDT. Call 1-800."}
            for i in range(n)])
        enqueue_s = time.perf_counter() - t0
        book = RegistryContactBook(pd.DataFrame({
            "customer_id": [f"C{i:06d}" for i in range(n)], "channels": [("webhook",)] * n,
            "phone": None, "email": None}))
        secrets = channel_secrets({"FOREWARN_WEBHOOK_SECRET": SECRET})
        channel = WebhookChannel(cfg.channels.webhook, secrets)
        dispatcher = Dispatcher(outbox, cfg.dispatch, {"webhook": channel}, book, cfg.channels)
        t1 = time.perf_counter()
        report = dispatcher.run()
        seconds = time.perf_counter() - t1
        dispatcher.close()
        channel.close()
        with urlopen(f"{url}/stats") as response:
            stats = json.loads(response.read())
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"messages        {n:,}  (enqueue {enqueue_s:.1f} s, {n / enqueue_s:,.0f} rows/s)")
        print(f"dispatch        {seconds:.2f} s  ->  {report.sent / seconds:,.0f} messages/s "
              f"(webhook rate limit {cfg.channels.webhook.rate_per_s:g}/s, batch "
              f"{cfg.dispatch.batch_size}, commit every {cfg.dispatch.commit_every})")
        print(f"rate-limit wait {report.waited_s:.2f} s")
        print(f"sink            {stats['unique']:,} unique keys, {stats['received']:,} requests, "
              f"{stats['bad_signatures']} bad signatures")
        print(f"outbox          {dict(state_counts(outbox))}")
        print(f"peak memory     {peak_mib:,.0f} MiB (max RSS of the dispatcher process)")
        print(f"cores           {os.cpu_count()} (the sink runs in its own process)")
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
