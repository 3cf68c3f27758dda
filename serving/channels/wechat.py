"""WeChat official-account template messages (the official API shape).

``POST {base_url}/cgi-bin/message/template/send?access_token=TOKEN`` with ``{"touser":
OpenID, "template_id", "url"?, "data": {"first": {"value"}, "keyword1": {"value"}, ...,
"remark": {"value"}}}``. The HTTP status is 200 even on failure: the outcome is ``errcode``
in the body (0 and a ``msgid`` on success). The access token comes from the environment, or
is fetched with the app id and secret from ``GET /cgi-bin/token`` and kept until it expires.
No request dedupe exists on this API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.client import HTTPException
from typing import Any

from configs.settings import ChannelSecrets, WechatChannelSettings
from serving.channels import http
from serving.channels.base import (
    OutboundMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
    require,
)

# errcodes worth another try: system busy, token invalid/expired (refetched), rate limits.
TRANSIENT_ERRCODES = frozenset({-1, 40001, 40014, 42001, 45009, 45011, 45047})
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
TOKEN_MARGIN_S = 300  # refetch the token this long before it expires


class WechatChannel:
    """Template-message adapter; content fields ``template_id`` (optional) and ``data``
    (field name -> text), sent as ``{"value": text}`` each."""

    name = "wechat"

    def __init__(
        self,
        cfg: WechatChannelSettings,
        secrets: ChannelSecrets,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        fixed = secrets.wechat_access_token
        if fixed is None and not (secrets.wechat_appid and secrets.wechat_appsecret):
            raise ValueError("FOREWARN_WECHAT_ACCESS_TOKEN, or FOREWARN_WECHAT_APPID and "
                             "FOREWARN_WECHAT_APPSECRET, must be set for the wechat channel")
        self.cfg = cfg
        self._fixed = fixed.get_secret_value() if fixed else None
        self._appid = secrets.wechat_appid
        self._appsecret = (
            secrets.wechat_appsecret.get_secret_value() if secrets.wechat_appsecret else None
        )
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self._base = cfg.base_url.rstrip("/")
        self._http = http.client(cfg.timeout_s)

    def send(self, message: OutboundMessage) -> Receipt:
        openid = require(message.contact.wechat_openid, "WeChat OpenID",
                         message.contact.customer_id)
        content = message.content
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": str(content.get("template_id") or self.cfg.template_id),
            "data": template_data(content.get("data") or {}),
        }
        if self.cfg.url:
            body["url"] = self.cfg.url
        response = http.post(self._http, f"{self._base}/cgi-bin/message/template/send",
                             "wechat", params={"access_token": self._access_token()},
                             json=body)
        result = http.json_body(response, "wechat")
        code = int(result.get("errcode", 0))
        if code != 0:
            if code in TOKEN_ERRCODES:
                self._token = None
            kind = TransientSendError if code in TRANSIENT_ERRCODES else PermanentSendError
            raise kind(f"wechat errcode {code}: {result.get('errmsg', '')}", status=code)
        return Receipt(channel=self.name, provider_message_id=str(result.get("msgid", "")))

    def _access_token(self) -> str:
        if self._fixed:
            return self._fixed
        with self._lock:  # one fetch when several sending threads find the token stale
            return self._cached_token()

    def _cached_token(self) -> str:
        if self._token and self._clock() < self._expires:
            return self._token
        try:
            response = self._http.get(
                f"{self._base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self._appid or "",
                        "secret": self._appsecret or ""},
            )
        except (OSError, HTTPException) as exc:
            raise TransientSendError(f"wechat token: {type(exc).__name__}") from exc
        http.check(response, "wechat token")
        result = http.json_body(response, "wechat token")
        if not result.get("access_token"):
            raise TransientSendError(f"wechat token errcode {result.get('errcode')}: "
                                     f"{result.get('errmsg', '')}")
        self._token = str(result["access_token"])
        self._expires = self._clock() + float(result.get("expires_in", 7200)) - TOKEN_MARGIN_S
        return self._token

    def close(self) -> None:
        self._http.close()


def template_data(fields: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{"first": "text"}`` -> ``{"first": {"value": "text"}}``; values already in the
    ``{"value": ..}`` form are kept."""
    out: dict[str, dict[str, str]] = {}
    for key, value in fields.items():
        if isinstance(value, Mapping):
            out[str(key)] = {str(k): str(v) for k, v in value.items()}
        else:
            out[str(key)] = {"value": str(value)}
    return out
