"""The channel protocol: one outbound message in, one provider receipt out, or a typed error.

A :class:`Channel` sends one :class:`OutboundMessage` and returns a :class:`Receipt` once the
provider has accepted it. It raises :class:`TransientSendError` when trying again later may
work (timeouts, 429, 5xx, provider busy) and :class:`PermanentSendError` when it will not
(bad address, unsubscribed user, rejected content): the dispatcher retries the first and
falls back to the customer's next channel on the second. Error texts never carry contact
details (see :func:`scrub`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ERROR_MAX_CHARS = 300  # provider error text kept in the outbox


@dataclass(frozen=True)
class Contact:
    """Where one customer can be reached; looked up at send time, never stored in the outbox.
    ``channels`` is the customer's own order of preference."""

    customer_id: str
    channels: tuple[str, ...] = ()
    phone: str | None = None  # E.164-like
    email: str | None = None
    wechat_openid: str | None = None
    push_token: str | None = None  # FCM registration token
    name: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """One message for one channel. ``dedupe_key`` is the outbox idempotency key (suffixed
    with the step for escalations and fallbacks), passed to the provider wherever its API
    can dedupe on it. ``content`` holds the channel's fields (see serving.dispatch)."""

    dedupe_key: str
    channel: str
    contact: Contact
    content: Mapping[str, Any]
    language: str = "en"
    meta: Mapping[str, Any] = field(default_factory=dict)  # advisory_id, kind, customer_id...


@dataclass(frozen=True)
class Receipt:
    """The provider accepted the message: its own id for it (for delivery receipts)."""

    channel: str
    provider_message_id: str
    status: str = "accepted"


class SendError(Exception):
    """A send that did not go through; ``str()`` is safe to store and log."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(scrub(message))
        self.status = status


class TransientSendError(SendError):
    """Trying again later may work."""


class PermanentSendError(SendError):
    """This message will never go through on this channel for this customer."""


class Channel(Protocol):
    """A way to reach customers (email, webhook, sms, voice, app_push, wechat)."""

    name: str

    def send(self, message: OutboundMessage) -> Receipt:
        """Hand ``message`` to the provider; raise Transient/PermanentSendError on failure."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
# WeChat OpenIDs: "o" then 10+ id characters with at least one digit or capital (not words)
_OPENID = re.compile(r"\bo(?=[A-Za-z0-9_-]*[0-9A-Z])[A-Za-z0-9_-]{10,}\b")


def mask_contacts(text: str) -> str:
    """``text`` with anything that looks like an e-mail address, a phone number or a WeChat
    OpenID replaced by ``<email>``, ``<phone>``, ``<openid>``; line breaks are kept."""
    text = _EMAIL.sub("<email>", str(text))
    text = _OPENID.sub("<openid>", text)
    return _PHONE.sub("<phone>", text)


def scrub(text: str) -> str:
    """``text`` on one line, cut to ERROR_MAX_CHARS, with anything that looks like an e-mail
    address, a phone number or a WeChat OpenID masked (provider errors often echo them)."""
    return mask_contacts(" ".join(str(text).split()))[:ERROR_MAX_CHARS]


def require(value: str | None, what: str, customer_id: str) -> str:
    """The contact field, or a PermanentSendError naming the customer (not the address)."""
    if not value:
        raise PermanentSendError(f"customer {customer_id} has no {what}")
    return value
