"""Customers' contact details stay out of logs.

Contacts live in the customer registry (the contact book) and are looked up at send time;
no Forewarn code logs them. :class:`ContactMaskFilter` is defence in depth on top of that: a
log handler filter that masks anything in a record (message, arguments, traceback, stack)
that looks like an e-mail address, a phone number or a WeChat OpenID.

The phone pattern here is narrower than :func:`serving.channels.base.mask_contacts` (which
cleans short provider error texts): a log line is full of dates, times and counts, so a
phone number must either start with ``+`` and a country code, or have the North American
shape ``202-555-0107`` / ``(202) 555-0107``; ``2023-03-02 12:00`` stays readable.
"""

from __future__ import annotations

import logging
import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d[\d\s().-]{7,}\d"  # +1-202-555-0107, +12025550107, +86 138 0013 8000
    r"|(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4})\b"  # (202) 555-0107, 202.555.0107
)
# WeChat OpenIDs: "o" then 10+ id characters with a digit and a capital ("oSYN21067000007",
# "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"); plain words and task names like "open_outages-8a7" stay
OPENID = re.compile(r"\bo(?=[\w-]*\d)(?=[\w-]*[A-Z])[A-Za-z0-9_-]{10,}\b")


def mask_log_text(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers and WeChat OpenIDs replaced by
    ``<email>``, ``<phone>`` and ``<openid>``."""
    text = EMAIL.sub("<email>", text)
    text = OPENID.sub("<openid>", text)
    return PHONE.sub("<phone>", text)


class ContactMaskFilter(logging.Filter):
    """A handler filter that masks contact details in every record it sees (never drops one).

    The record is rewritten in place (message with its arguments merged, traceback text,
    stack), so attach it to handlers, first in line: every handler after it sees the masked
    record. Masking is idempotent."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep what logging would show
            message = f"{record.msg} {record.args}"
        masked = mask_log_text(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_log_text(record.stack_info)
        return True


def mask_handlers(*handlers: logging.Handler) -> None:
    """Put a :class:`ContactMaskFilter` first on each handler that has none yet."""
    for handler in handlers:
        if not any(isinstance(f, ContactMaskFilter) for f in handler.filters):
            handler.filters.insert(0, ContactMaskFilter())
