"""Real local servers for the channel tests: an HTTP server in a thread that records every
request and answers through a function the test chooses, a webhook sink that checks the
HMAC signature and dedupes by idempotency key, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8")).items()}


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[Request], Reply]


def json_reply(status: int, body: Any) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode("utf-8")


@dataclass
class HttpServer:
    """A recording HTTP/1.1 server on 127.0.0.1 (keep-alive)."""

    responder: Responder
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@contextmanager
def http_server(responder: Responder) -> Iterator[HttpServer]:
    state = HttpServer(responder)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle's algorithm and
            # delayed ACKs add ~40 ms to every keep-alive response
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(self.command, parts.path, parse_qs(parts.query),
                              {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(length))
            with state.lock:
                state.requests.append(request)
                status, headers, body = state.responder(request)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class WebhookSink:
    """A webhook receiver as a utility would write it: rejects a bad signature (401),
    answers a repeated Idempotency-Key with the first receipt and does not count it again."""

    def __init__(self, secret: bytes, fail: Callable[[Request], int | None] | None = None):
        self.secret = secret
        self.fail = fail
        self.delivered: Counter[str] = Counter()  # key -> deliveries accepted (must be 1)
        self.received: Counter[str] = Counter()  # key -> requests seen (resends included)
        self.bodies: dict[str, Any] = {}

    def __call__(self, request: Request) -> Reply:
        timestamp = request.headers.get("x-forewarn-timestamp", "")
        expected = "sha256=" + hmac.new(self.secret, timestamp.encode() + b"." + request.body,
                                        hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-forewarn-signature", "")):
            return json_reply(401, {"error": "bad signature"})
        key = request.headers["idempotency-key"]
        self.received[key] += 1
        if self.fail is not None and (status := self.fail(request)) is not None:
            return json_reply(status, {"error": "scripted failure"})
        if key not in self.delivered:
            self.delivered[key] += 1
            self.bodies[key] = request.json()
        return 200, {"X-Receipt-Id": f"rcpt-{key[:16]}", "Content-Type": "application/json"}, b"{}"
