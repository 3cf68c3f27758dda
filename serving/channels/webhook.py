"""Webhook: a JSON POST to the utility's own notifier, signed with HMAC-SHA256.

The receiver checks ``X-Forewarn-Signature: sha256=<hex>`` where the hex digest is
HMAC-SHA256(secret, f"{timestamp}.{body}") over the exact body bytes and the Unix time in
``X-Forewarn-Timestamp`` (seconds, UTC), rejecting old timestamps to stop replays. The
``Idempotency-Key`` header carries the dedupe key: a receiver that keeps the keys it has seen
turns the dispatcher's at-least-once sending into exactly-once effect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

from configs.settings import ChannelSecrets, WebhookChannelSettings
from serving.channels import http
from serving.channels.base import OutboundMessage, Receipt


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + body``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class WebhookChannel:
    """JSON webhook adapter. The body holds the message meta and content, never contacts."""

    name = "webhook"

    def __init__(
        self,
        cfg: WebhookChannelSettings,
        secrets: ChannelSecrets,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not cfg.url:
            raise ValueError("channels.webhook.url is not set")
        if secrets.webhook_secret is None:
            raise ValueError("FOREWARN_WEBHOOK_SECRET is not set (webhooks are always signed)")
        self.cfg = cfg
        self._secret = secrets.webhook_secret.get_secret_value().encode("utf-8")
        self._clock = clock
        self._http = http.client(cfg.timeout_s)

    def send(self, message: OutboundMessage) -> Receipt:
        body = json.dumps(
            {"idempotency_key": message.dedupe_key, **message.meta, "language": message.language,
             "content": dict(message.content)},
            ensure_ascii=False, separators=(",", ":"), sort_keys=True,
        ).encode("utf-8")
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": message.dedupe_key,
            self.cfg.timestamp_header: timestamp,
            self.cfg.signature_header: signature(self._secret, timestamp, body),
        }
        assert self.cfg.url is not None
        response = http.post(self._http, self.cfg.url, "webhook", content=body, headers=headers)
        receipt_id = response.headers.get("x-receipt-id") or ""
        if not receipt_id and response.content:
            try:
                receipt_id = str(response.json().get("id", ""))
            except (ValueError, AttributeError):
                receipt_id = ""
        return Receipt(channel=self.name, provider_message_id=receipt_id or message.dedupe_key)

    def close(self) -> None:
        self._http.close()
