"""Each channel adapter against a real local server that checks the requests: SMTP
(aiosmtpd), and HTTP servers speaking the Twilio, FCM v1, WeChat and webhook shapes."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import socket
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from local_servers import http_server, json_reply

from configs.settings import (
    ChannelSecrets,
    EmailChannelSettings,
    FcmChannelSettings,
    TwilioChannelSettings,
    WebhookChannelSettings,
    WechatChannelSettings,
)
from serving.channels import (
    Contact,
    EmailChannel,
    OutboundMessage,
    PermanentSendError,
    PushChannel,
    SmsChannel,
    TransientSendError,
    VoiceChannel,
    WebhookChannel,
    WechatChannel,
    build_channels,
    scrub,
)
from serving.channels.webhook import signature
from serving.dispatch import content_for

SECRETS = ChannelSecrets.model_validate({
    "webhook_secret": "s3cret", "twilio_account_sid": "AC42", "twilio_auth_token": "tok",
    "fcm_access_token": "ya29.test", "wechat_appid": "wxapp", "wechat_appsecret": "wxsecret",
    "smtp_user": "mailer", "smtp_password": "pw"})
CONTACT = Contact(customer_id="SYN-21067-000007", channels=("email",), phone="+12025550107",
                  email="syn-21067-000007@example.invalid", wechat_openid="oSYN21067000007",
                  push_token="synthetic-fcm-abc")
ADVISORY = {"advisory_id": "k" * 64, "kind": "risk_advisory", "customer_id": CONTACT.customer_id,
            "segment": "critical", "language": "zh-CN", "subject": "停电风险 <提醒>",
            "body": "第一段。\n\n第二段 & 热线。", "sms_text": "Forewarn: 停电风险。"}


def message(channel: str, key: str = "k" * 64, **content: Any) -> OutboundMessage:
    return OutboundMessage(dedupe_key=key, channel=channel, contact=CONTACT,
                           content=content or content_for(ADVISORY, channel),
                           language="zh-CN", meta={"advisory_id": "k" * 64, "kind": "risk_advisory"})


# --- e-mail -------------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("gone"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK queued"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp():
    box = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        box.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.login == b"mailer" and auth_data.password == b"pw")

    controller = Controller(box, hostname="127.0.0.1", port=_free_port(),
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


def test_email_is_multipart_text_and_html_with_a_stable_message_id(smtp) -> None:
    box, port = smtp
    channel = EmailChannel(EmailChannelSettings(host="127.0.0.1", port=port,
                                                sender="Forewarn <alerts@example.invalid>"),
                           SECRETS)
    try:
        receipt = channel.send(message("email"))
        channel.send(message("email", key="second"))  # same connection, reused
    finally:
        channel.close()

    assert box.logins == [(b"mailer", b"pw")]
    assert len(box.envelopes) == 2
    envelope = box.envelopes[0]
    assert envelope.mail_from == "alerts@example.invalid"
    assert envelope.rcpt_tos == [CONTACT.email]
    mail: Message = email.message_from_bytes(envelope.original_content)
    assert mail.get_content_type() == "multipart/alternative"
    assert receipt.provider_message_id == mail["Message-ID"] == f"<{'k' * 64}@forewarn.invalid>"
    assert str(email.header.make_header(email.header.decode_header(mail["Subject"]))) == \
        "停电风险 <提醒>"
    text, html = (part.get_payload(decode=True).decode() for part in mail.get_payload())
    assert text.replace("\r\n", "\n").strip() == "第一段。\n\n第二段 & 热线。"
    assert "<p>第二段 &amp; 热线。</p>" in html and "&lt;提醒&gt;" in html


def test_email_refusals_are_typed(smtp) -> None:
    _, port = smtp
    channel = EmailChannel(EmailChannelSettings(host="127.0.0.1", port=port), SECRETS)
    gone = OutboundMessage("k1", "email", Contact("C1", email="gone@example.invalid"),
                           {"subject": "s", "text": "t"})
    busy = OutboundMessage("k2", "email", Contact("C2", email="busy@example.invalid"),
                           {"subject": "s", "text": "t"})
    try:
        with pytest.raises(PermanentSendError, match="550") as perm:
            channel.send(gone)
        with pytest.raises(TransientSendError, match="451"):
            channel.send(busy)
        with pytest.raises(PermanentSendError, match="no e-mail address"):
            channel.send(OutboundMessage("k3", "email", Contact("C3"), {"text": "t"}))
    finally:
        channel.close()
    assert "gone@" not in str(perm.value)
    closed = EmailChannel(EmailChannelSettings(host="127.0.0.1", port=_free_port()), SECRETS)
    with pytest.raises(TransientSendError, match="ConnectionRefused"):
        closed.send(message("email"))


# --- Twilio-shaped SMS and voice -------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_sms_and_voice_follow_the_twilio_api_shape() -> None:
    def twilio(request):
        if request.headers.get("authorization") != _basic("AC42", "tok"):
            return json_reply(401, {"code": 20003, "message": "Authenticate"})
        sid = "SM1" if request.path.endswith("Messages.json") else "CA1"
        return json_reply(201, {"sid": sid, "status": "queued"})

    with http_server(twilio) as server:
        cfg = TwilioChannelSettings(base_url=server.url, from_number="+15005550006",
                                    status_callback_url=f"{server.url}/receipts?src=twilio")
        sms, voice = SmsChannel(cfg, SECRETS), VoiceChannel(cfg, SECRETS)
        assert sms.send(message("sms")).provider_message_id == "SM1"
        assert voice.send(message("voice")).provider_message_id == "CA1"
        wrong = SmsChannel(cfg, ChannelSecrets.model_validate(
            {"twilio_account_sid": "AC42", "twilio_auth_token": "bad"}))
        with pytest.raises(PermanentSendError, match="HTTP 401"):
            wrong.send(message("sms"))
        first, second = server.requests[:2]

    assert (first.method, first.path) == ("POST", "/2010-04-01/Accounts/AC42/Messages.json")
    assert first.headers["content-type"] == "application/x-www-form-urlencoded"
    form = first.form()
    assert form["To"] == CONTACT.phone and form["From"] == "+15005550006"
    assert form["Body"] == "Forewarn: 停电风险。"
    assert form["StatusCallback"] == f"{server.url}/receipts?src=twilio&key={'k' * 64}"
    assert second.path == "/2010-04-01/Accounts/AC42/Calls.json"
    twiml = second.form()["Twiml"]
    assert twiml.count('<Say language="cmn-CN">Forewarn: 停电风险。</Say>') == 2
    assert twiml.startswith("<?xml") and "<Response>" in twiml


def test_twilio_errors_are_classified_and_scrubbed() -> None:
    statuses = iter([429, 503, 400])

    def twilio(request):
        status = next(statuses)
        return json_reply(status, {"code": 21211, "message": "Invalid 'To' Phone Number: "
                                   "+1 202 555 0107"})

    with http_server(twilio) as server:
        sms = SmsChannel(TwilioChannelSettings(base_url=server.url), SECRETS)
        for kind in (TransientSendError, TransientSendError, PermanentSendError):
            with pytest.raises(kind) as err:
                sms.send(message("sms"))
            assert "202 555" not in str(err.value) and "<phone>" in str(err.value)


# --- FCM v1 -----------------------------------------------------------------------------------


def test_push_follows_the_fcm_v1_shape() -> None:
    with http_server(lambda r: json_reply(200, {"name": "projects/demo/messages/0:123"})) as srv:
        push = PushChannel(FcmChannelSettings(base_url=srv.url, project_id="demo"), SECRETS)
        receipt = push.send(message("app_push"))
        request = srv.requests[0]
    assert receipt.provider_message_id == "projects/demo/messages/0:123"
    assert (request.method, request.path) == ("POST", "/v1/projects/demo/messages:send")
    assert request.headers["authorization"] == "Bearer ya29.test"
    body = request.json()["message"]
    assert body["token"] == "synthetic-fcm-abc"
    assert body["notification"] == {"title": "停电风险 <提醒>", "body": "Forewarn: 停电风险。"}
    assert body["data"]["idempotency_key"] == "k" * 64 and body["data"]["kind"] == "risk_advisory"
    assert body["android"]["collapse_key"] == "k" * 64
    assert body["apns"]["headers"]["apns-collapse-id"] == "k" * 64


@pytest.mark.parametrize(("status", "kind"), [(404, PermanentSendError), (400, PermanentSendError),
                                              (401, TransientSendError), (503, TransientSendError)])
def test_push_errors_are_classified(status, kind) -> None:
    with http_server(lambda r: json_reply(status, {"error": {"status": "X"}})) as srv:
        push = PushChannel(FcmChannelSettings(base_url=srv.url), SECRETS)
        with pytest.raises(kind, match=f"HTTP {status}"):
            push.send(message("app_push"))


# --- WeChat template messages ----------------------------------------------------------------


def test_wechat_fetches_a_token_sends_a_template_and_reads_errcode() -> None:
    tokens = iter(["TOKEN-1", "TOKEN-2"])
    sends = iter([{"errcode": 0, "errmsg": "ok", "msgid": 200228332},
                  {"errcode": 42001, "errmsg": "access_token expired"},
                  {"errcode": 0, "errmsg": "ok", "msgid": 200228333},
                  {"errcode": 43004, "errmsg": "require subscribe hint: oSYN21067000007"}])

    def wechat(request):
        if request.path == "/cgi-bin/token":
            assert request.query == {"grant_type": ["client_credential"], "appid": ["wxapp"],
                                     "secret": ["wxsecret"]}
            return json_reply(200, {"access_token": next(tokens), "expires_in": 7200})
        return json_reply(200, next(sends))

    with http_server(wechat) as srv:
        channel = WechatChannel(WechatChannelSettings(base_url=srv.url, template_id="TPL-1",
                                                      url="https://example.invalid/a"), SECRETS)
        assert channel.send(message("wechat")).provider_message_id == "200228332"
        with pytest.raises(TransientSendError, match="42001"):
            channel.send(message("wechat"))
        channel.send(message("wechat", template_id="TPL-2",
                             data={"first": "a", "keyword1": {"value": "b", "color": "#FF0000"}}))
        with pytest.raises(PermanentSendError, match="43004") as gone:
            channel.send(message("wechat"))
        requests = srv.requests

    paths = [(r.path, r.query.get("access_token")) for r in requests]
    assert paths == [("/cgi-bin/token", None), ("/cgi-bin/message/template/send", ["TOKEN-1"]),
                     ("/cgi-bin/message/template/send", ["TOKEN-1"]), ("/cgi-bin/token", None),
                     ("/cgi-bin/message/template/send", ["TOKEN-2"]),
                     ("/cgi-bin/message/template/send", ["TOKEN-2"])]
    first = requests[1].json()
    assert first["touser"] == CONTACT.wechat_openid and first["template_id"] == "TPL-1"
    assert first["url"] == "https://example.invalid/a"
    assert first["data"] == {"first": {"value": "停电风险 <提醒>"},
                             "keyword1": {"value": "Forewarn: 停电风险。"}, "remark": {"value": ""}}
    third = requests[4].json()
    assert third["template_id"] == "TPL-2"
    assert third["data"]["keyword1"] == {"value": "b", "color": "#FF0000"}
    assert "oSYN" not in str(gone.value)


# --- webhook and wiring -------------------------------------------------------------------------


def test_webhook_signature_covers_timestamp_and_body() -> None:
    with http_server(lambda r: (204, {}, b"")) as srv:
        hook = WebhookChannel(WebhookChannelSettings(url=f"{srv.url}/in"), SECRETS,
                              clock=lambda: 1_700_000_000.7)
        receipt = hook.send(message("webhook"))
        request = srv.requests[0]
    assert request.headers["x-forewarn-timestamp"] == "1700000000"
    expected = hmac.new(b"s3cret", b"1700000000." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-forewarn-signature"] == f"sha256={expected}"
    assert signature(b"s3cret", "1700000001", request.body) != f"sha256={expected}"
    assert request.headers["idempotency-key"] == "k" * 64
    assert request.json()["language"] == "zh-CN"
    assert receipt.provider_message_id == "k" * 64  # no receipt id: the key stands for it


def test_only_channels_with_endpoint_and_credentials_are_built() -> None:
    from configs.settings import ChannelsSettings

    ready, missing = build_channels(ChannelsSettings(), ChannelSecrets())
    assert set(ready) == {"email"}
    assert "FOREWARN_WEBHOOK" not in missing["webhook"] and "url" in missing["webhook"]
    assert "FOREWARN_TWILIO_ACCOUNT_SID" in missing["sms"]
    assert "FOREWARN_FCM_ACCESS_TOKEN" in missing["app_push"]
    ready, _ = build_channels(ChannelsSettings(webhook={"url": "http://127.0.0.1:9/x"}), SECRETS)
    assert set(ready) == {"email", "webhook", "sms", "voice", "app_push", "wechat"}


def test_scrub_masks_contact_details() -> None:
    text = ("to +1 (202) 555-0107 and a.b@example.invalid, openid oSYN21067000007, code 21211 "
            "of the organisation")
    assert scrub(text) == ("to <phone> and <email>, openid <openid>, code 21211 of the "
                           "organisation")


def test_an_unreachable_provider_is_a_transient_failure() -> None:
    push = PushChannel(FcmChannelSettings(base_url=f"http://127.0.0.1:{_free_port()}"), SECRETS)
    with pytest.raises(TransientSendError, match="ConnectionRefused"):
        push.send(message("app_push"))


def test_a_connection_the_server_closed_is_replaced() -> None:
    def closing(request):
        return 200, {"Connection": "close", "Content-Type": "application/json"}, \
            b'{"name": "projects/p/messages/1"}'

    with http_server(closing) as srv:
        push = PushChannel(FcmChannelSettings(base_url=srv.url), SECRETS)
        for _ in range(3):
            assert push.send(message("app_push")).provider_message_id == "projects/p/messages/1"
        push.close()
        assert len(srv.requests) == 3
