"""What HTTP status codes mean for a send, shared by the HTTP channel adapters."""

from __future__ import annotations

from typing import Any

import httpx

from serving.channels.base import PermanentSendError, SendError, TransientSendError

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def client(timeout_s: float) -> httpx.Client:
    """A keep-alive client for one provider; ``timeout_s`` seconds per request."""
    return httpx.Client(timeout=timeout_s, follow_redirects=False)


def post(http: httpx.Client, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """POST and classify the outcome: a 2xx response is returned; timeouts, connection
    errors, 408/425/429 and 5xx raise TransientSendError; other statuses PermanentSendError."""
    try:
        response = http.post(url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientSendError(f"{what}: timeout ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransientSendError(f"{what}: {type(exc).__name__}: {exc}") from exc
    check(response, what)
    return response


def check(response: httpx.Response, what: str) -> None:
    """Raise the typed error for a non-2xx response (body text scrubbed, cut)."""
    code = response.status_code
    if 200 <= code < 300:
        return
    kind: type[SendError]
    kind = TransientSendError if code in TRANSIENT_STATUS or code >= 500 else PermanentSendError
    raise kind(f"{what}: HTTP {code}: {response.text}", status=code)


def json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object of a 2xx response; a body that is not one is a transient failure
    (a proxy or an outage page), so the send is tried again."""
    try:
        body = response.json()
    except ValueError as exc:
        raise TransientSendError(f"{what}: response is not JSON: {response.text}") from exc
    if not isinstance(body, dict):
        raise TransientSendError(f"{what}: response is not a JSON object")
    return body
