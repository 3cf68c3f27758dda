"""App push through the FCM HTTP v1 API shape.

``POST {base_url}/v1/projects/{project}/messages:send`` with ``Authorization: Bearer
<OAuth2 access token>`` and ``{"message": {"token", "notification": {"title", "body"},
"data": {...}}}``; 200 with ``{"name": "projects/../messages/<id>"}``. FCM has no request
dedupe, so the dedupe key goes in as the Android collapse key and the APNs collapse id (a
repeated push replaces the first on the device) and in ``data`` for the app.
"""

from __future__ import annotations

from configs.settings import ChannelSecrets, FcmChannelSettings
from serving.channels import http
from serving.channels.base import (
    OutboundMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
    require,
)

APNS_COLLAPSE_ID_MAX = 64  # bytes


class PushChannel:
    """FCM v1 adapter; content fields ``title``, ``body`` and optional ``data`` (str values)."""

    name = "app_push"

    def __init__(self, cfg: FcmChannelSettings, secrets: ChannelSecrets) -> None:
        if secrets.fcm_access_token is None:
            raise ValueError("FOREWARN_FCM_ACCESS_TOKEN must be set for the app_push channel")
        self.cfg = cfg
        self._token = secrets.fcm_access_token.get_secret_value()
        self._url = f"{cfg.base_url.rstrip('/')}/v1/projects/{cfg.project_id}/messages:send"
        self._http = http.client(cfg.timeout_s)

    def send(self, message: OutboundMessage) -> Receipt:
        token = require(message.contact.push_token, "app push token", message.contact.customer_id)
        content = message.content
        data = {str(k): str(v) for k, v in dict(content.get("data") or {}).items()}
        data.update({"idempotency_key": message.dedupe_key,
                     **{str(k): str(v) for k, v in message.meta.items()}})
        body = {
            "message": {
                "token": token,
                "notification": {"title": str(content.get("title", "")),
                                 "body": str(content.get("body", ""))},
                "data": data,
                "android": {"collapse_key": message.dedupe_key, "priority": "high"},
                "apns": {"headers": {
                    "apns-collapse-id": message.dedupe_key[:APNS_COLLAPSE_ID_MAX]}},
            }
        }
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = http.post(self._http, self._url, "app_push", json=body, headers=headers)
        except PermanentSendError as exc:
            if exc.status == 401:  # access token expired: a refreshed token will work
                raise TransientSendError(str(exc), status=401) from exc
            raise
        name = http.json_body(response, "app_push").get("name")
        if not name:
            raise TransientSendError("app_push: response without a message name")
        return Receipt(channel=self.name, provider_message_id=str(name))

    def close(self) -> None:
        self._http.close()
