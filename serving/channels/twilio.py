"""SMS and voice through the Twilio REST API shape.

SMS: ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded
``To``, ``From``, ``Body`` and optionally ``StatusCallback``, HTTP basic auth (account SID,
auth token); 201 with the message ``sid``. Voice: the same on ``Calls.json`` with ``Twiml``
holding ``<Response><Say language=..>script</Say></Response>``. Neither endpoint dedupes on a
client key, so the dedupe key travels in the status-callback URL (delivery receipts map back
to the outbox row) and a resend after a crash can reach the phone twice (see dispatch.py).
"""

from __future__ import annotations

from urllib.parse import quote
from xml.sax.saxutils import escape

from configs.settings import ChannelSecrets, TwilioChannelSettings
from serving.channels import http
from serving.channels.base import OutboundMessage, Receipt, TransientSendError, require

API_VERSION = "2010-04-01"


class _TwilioChannel:
    name = ""
    resource = ""

    def __init__(self, cfg: TwilioChannelSettings, secrets: ChannelSecrets) -> None:
        if not secrets.twilio_account_sid or secrets.twilio_auth_token is None:
            raise ValueError(
                "FOREWARN_TWILIO_ACCOUNT_SID and FOREWARN_TWILIO_AUTH_TOKEN must be set for "
                f"the {self.name} channel"
            )
        self.cfg = cfg
        self._sid = secrets.twilio_account_sid
        self._auth = (self._sid, secrets.twilio_auth_token.get_secret_value())
        self._url = (
            f"{cfg.base_url.rstrip('/')}/{API_VERSION}/Accounts/{quote(self._sid)}/"
            f"{self.resource}.json"
        )
        self._http = http.client(cfg.timeout_s)

    def _form(self, message: OutboundMessage) -> dict[str, str]:
        raise NotImplementedError

    def send(self, message: OutboundMessage) -> Receipt:
        to = require(message.contact.phone, "phone number", message.contact.customer_id)
        form = {"To": to, "From": self.cfg.from_number, **self._form(message)}
        if self.cfg.status_callback_url:
            sep = "&" if "?" in self.cfg.status_callback_url else "?"
            form["StatusCallback"] = (
                f"{self.cfg.status_callback_url}{sep}key={quote(message.dedupe_key)}"
            )
        response = http.post(self._http, self._url, self.name, data=form, auth=self._auth)
        body = http.json_body(response, self.name)
        if not body.get("sid"):
            raise TransientSendError(f"{self.name}: response without a sid")
        return Receipt(channel=self.name, provider_message_id=str(body["sid"]),
                       status=str(body.get("status", "queued")))

    def close(self) -> None:
        self._http.close()


class SmsChannel(_TwilioChannel):
    """SMS via Messages.json; content field ``text``."""

    name = "sms"
    resource = "Messages"

    def _form(self, message: OutboundMessage) -> dict[str, str]:
        return {"Body": str(message.content.get("text", ""))}


class VoiceChannel(_TwilioChannel):
    """Voice call via Calls.json with inline TwiML; content field ``script`` is read twice."""

    name = "voice"
    resource = "Calls"

    def _form(self, message: OutboundMessage) -> dict[str, str]:
        return {"Twiml": twiml(str(message.content.get("script", "")),
                               self.cfg.voice_languages.get(message.language, "en-US"))}


def twiml(script: str, language: str) -> str:
    """TwiML that says ``script`` in ``language`` (a TwiML <Say> language code), pauses, and
    says it again (people pick up mid-sentence)."""
    say = f'<Say language="{escape(language)}">{escape(script)}</Say>'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{say}<Pause length="1"/>{say}</Response>'
