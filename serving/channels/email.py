"""E-mail through an SMTP relay (smtplib): multipart text + HTML, one connection kept open."""

from __future__ import annotations

import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate

from configs.settings import ChannelSecrets, EmailChannelSettings
from serving.channels.base import (
    OutboundMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
    require,
)


class EmailChannel:
    """SMTP adapter. The Message-ID is derived from the dedupe key, so a resend after a crash
    carries the same id (receiving systems that dedupe on Message-ID drop the copy)."""

    name = "email"

    def __init__(self, cfg: EmailChannelSettings, secrets: ChannelSecrets) -> None:
        self.cfg = cfg
        self._user = secrets.smtp_user.get_secret_value() if secrets.smtp_user else None
        self._password = (
            secrets.smtp_password.get_secret_value() if secrets.smtp_password else None
        )
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()  # one SMTP conversation at a time on the connection

    def send(self, message: OutboundMessage) -> Receipt:
        with self._lock:
            return self._send(message)

    def _send(self, message: OutboundMessage) -> Receipt:
        to = require(message.contact.email, "e-mail address", message.contact.customer_id)
        content = message.content
        mail = EmailMessage()
        mail["From"] = self.cfg.sender
        mail["To"] = to
        mail["Subject"] = str(content.get("subject", ""))
        mail["Date"] = formatdate(usegmt=True)
        message_id = f"<{message.dedupe_key}@{self.cfg.message_id_domain}>"
        mail["Message-ID"] = message_id
        mail["Content-Language"] = message.language
        mail.set_content(str(content.get("text", "")))
        if content.get("html"):
            mail.add_alternative(str(content["html"]), subtype="html")
        try:
            self._connection().send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._raise(codes[0] if codes else 550, "recipient refused")
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            self._raise(exc.smtp_code, text)
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise TransientSendError(f"smtp: {type(exc).__name__}: {exc}") from exc
        return Receipt(channel=self.name, provider_message_id=message_id)

    def _raise(self, code: int, text: str) -> None:
        if 400 <= code < 500:
            raise TransientSendError(f"smtp {code}: {text}", status=code)
        raise PermanentSendError(f"smtp {code}: {text}", status=code)

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            try:
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            except (smtplib.SMTPException, OSError):
                pass
            self.close()
        smtp = smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout_s)
        if self.cfg.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if self._user and self._password:
            smtp.login(self._user, self._password)
        self._smtp = smtp
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._smtp = None
