"""Channel adapters behind one small protocol (see :mod:`serving.channels.base`).

Small hand-written adapters over http.client and smtplib rather than Apprise: Apprise's Twilio and
FCM plugins hard-code the provider hosts (no local test server, no config base URL), it has
no WeChat official-account template messages, and ``notify()`` answers a bool per batch with
no provider message id and no transient/permanent distinction, which the outbox needs for
receipts, retries and fallback.
"""

from __future__ import annotations

from collections.abc import Callable

from configs.settings import ChannelSecrets, ChannelsSettings
from serving.channels.base import (
    Channel,
    Contact,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    SendError,
    TransientSendError,
    scrub,
)
from serving.channels.email import EmailChannel
from serving.channels.fcm import PushChannel
from serving.channels.twilio import SmsChannel, VoiceChannel
from serving.channels.webhook import WebhookChannel
from serving.channels.wechat import WechatChannel

__all__ = [
    "Channel",
    "Contact",
    "EmailChannel",
    "OutboundMessage",
    "PermanentSendError",
    "PushChannel",
    "Receipt",
    "SendError",
    "SmsChannel",
    "TransientSendError",
    "VoiceChannel",
    "WebhookChannel",
    "WechatChannel",
    "build_channels",
    "scrub",
]


def build_channels(
    cfg: ChannelsSettings, secrets: ChannelSecrets
) -> tuple[dict[str, Channel], dict[str, str]]:
    """The enabled channels that have what they need, by name, and for the others the
    reason they are unavailable (disabled, no endpoint, no credentials)."""
    makers: dict[str, Callable[[], Channel]] = {
        "email": lambda: EmailChannel(cfg.email, secrets),
        "webhook": lambda: WebhookChannel(cfg.webhook, secrets),
        "sms": lambda: SmsChannel(cfg.sms, secrets),
        "voice": lambda: VoiceChannel(cfg.voice, secrets),
        "app_push": lambda: PushChannel(cfg.app_push, secrets),
        "wechat": lambda: WechatChannel(cfg.wechat, secrets),
    }
    ready: dict[str, Channel] = {}
    missing: dict[str, str] = {}
    for name, make in makers.items():
        if not cfg.limits(name).enabled:
            missing[name] = "disabled in config"
            continue
        try:
            ready[name] = make()
        except ValueError as exc:
            missing[name] = str(exc)
    return ready, missing
