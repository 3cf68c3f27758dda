"""HTTP for the channel adapters: a small keep-alive client over the standard library's
``http.client``, and what status codes mean for a send.

Not httpx: its per-request overhead (request building, cookie handling, pooling layers) was
~0.55 ms of CPU here, four times ``http.client``'s, and it alone capped the dispatcher near
1,100 messages/s on two cores. One connection per (thread, host) is kept open and reused.
"""

from __future__ import annotations

import base64
import http.client
import json as jsonlib
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from serving.channels.base import PermanentSendError, SendError, TransientSendError

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Response:
    """A complete response: status, headers (lower-case names) and body bytes."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Client:
    """Keep-alive HTTP(S) client, safe to share between threads (each thread has its own
    connections). ``timeout_s`` is seconds per connect and per read."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()

    def post(self, url: str, *, content: bytes | None = None, data: Mapping[str, str] | None = None,
             json: Any = None, headers: Mapping[str, str] | None = None,
             params: Mapping[str, str] | None = None,
             auth: tuple[str, str] | None = None) -> Response:
        """POST raw ``content``, a form (``data``) or a JSON body."""
        head = dict(headers or {})
        if data is not None:
            content = urlencode(data).encode("utf-8")
            head.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json is not None:
            content = jsonlib.dumps(json, ensure_ascii=False).encode("utf-8")
            head.setdefault("Content-Type", "application/json; charset=utf-8")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            head["Authorization"] = f"Basic {token}"
        return self.request("POST", url, content or b"", head, params)

    def get(self, url: str, *, params: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", url, b"", {}, params)

    def request(self, method: str, url: str, body: bytes, headers: dict[str, str],
                params: Mapping[str, str] | None = None) -> Response:
        """Send one request; a kept-alive connection that the server closed meanwhile is
        replaced once. Raises OSError / http.client.HTTPException on transport failures."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": "forewarn-dispatch", **headers}
        for fresh in (False, True):
            conn, reused = self._connection(parts.scheme, parts.netloc, fresh)
            try:
                conn.request(method, target, body=body, headers=headers)
                reply = conn.getresponse()
                payload = reply.read()
            except _STALE:
                self._drop(parts.scheme, parts.netloc)
                if reused and not fresh:
                    continue
                raise
            except (OSError, http.client.HTTPException):
                self._drop(parts.scheme, parts.netloc)
                raise
            if reply.will_close:
                self._drop(parts.scheme, parts.netloc)
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, payload)
        raise AssertionError("unreachable")

    def _connection(self, scheme: str, netloc: str, fresh: bool
                    ) -> tuple[http.client.HTTPConnection, bool]:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._pool()
        conn = pool.get((scheme, netloc))
        if conn is not None and not fresh:
            return conn, True
        if conn is not None:
            conn.close()
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=self.timeout_s, context=self._tls)
        elif scheme == "http":
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout_s)
        else:
            raise ValueError(f"unsupported URL scheme {scheme!r}")
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pool[(scheme, netloc)] = conn
        with self._lock:
            self._all.append(conn)
        return conn, False

    def _pool(self) -> dict[tuple[str, str], http.client.HTTPConnection]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._pool().pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def client(timeout_s: float) -> Client:
    """A keep-alive client for one provider; ``timeout_s`` seconds per connect and read."""
    return Client(timeout_s)


def post(http_client: Client, url: str, what: str, **kwargs: Any) -> Response:
    """POST and classify the outcome: a 2xx response is returned; timeouts, connection
    errors, 408/425/429 and 5xx raise TransientSendError; other statuses PermanentSendError."""
    try:
        response = http_client.post(url, **kwargs)
    except TimeoutError as exc:
        raise TransientSendError(f"{what}: timeout") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise TransientSendError(f"{what}: {type(exc).__name__}: {exc}") from exc
    check(response, what)
    return response


def check(response: Response, what: str) -> None:
    """Raise the typed error for a non-2xx response (body text scrubbed, cut)."""
    code = response.status_code
    if 200 <= code < 300:
        return
    kind: type[SendError]
    kind = TransientSendError if code in TRANSIENT_STATUS or code >= 500 else PermanentSendError
    raise kind(f"{what}: HTTP {code}: {response.text}", status=code)


def json_body(response: Response, what: str) -> dict[str, Any]:
    """The JSON object of a 2xx response; a body that is not one is a transient failure
    (a proxy or an outage page), so the send is tried again."""
    try:
        body = response.json()
    except ValueError as exc:
        raise TransientSendError(f"{what}: response is not JSON: {response.text}") from exc
    if not isinstance(body, dict):
        raise TransientSendError(f"{what}: response is not a JSON object")
    return body
