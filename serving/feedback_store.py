"""Customer feedback received by the API, stored durably next to the outbox (same database).

Kinds are those of the advisory policy's feedback report (serving.feedback on main:
``opt_out``, ``useful``, ``not_useful``, ``outage_yes``, ``outage_no``, ``other``), and
:func:`feedback_frame` gives the stored rows in the shape its ``read_feedback`` returns, so
the report and the opt-outs can use what customers sent through the API.

One row per client-chosen ``feedback_id``: storing the same feedback again returns the stored
row (idempotent); the same id with a different content is a conflict. Free text has anything
that looks like a phone number, e-mail address or WeChat id masked before it is stored.
Times are UTC.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from serving.channels.base import mask_contacts

metadata = MetaData()
feedback = Table(
    "feedback",
    metadata,
    Column("feedback_id", String(128), primary_key=True, comment="client-chosen idempotency key"),
    Column("advisory_id", String(128), comment="outbox idempotency key of the advisory"),
    Column("customer_id", String(128)),
    Column("kind", String(32), nullable=False,
           comment="opt_out | useful | not_useful | outage_yes | outage_no | other"),
    Column("text", Text, comment="free text, contact details masked"),
    Column("received_at", DateTime(timezone=True), nullable=False, comment="UTC"),
    Column("source", String(64), nullable=False, comment="name of the API token that sent it"),
    Column("fingerprint", String(64), nullable=False, comment="sha256 of the content"),
)
Index("ix_feedback_advisory_id", feedback.c.advisory_id)
Index("ix_feedback_customer_id", feedback.c.customer_id)


class FeedbackConflict(ValueError):
    """The feedback id is already stored with a different content."""


@dataclass(frozen=True)
class FeedbackRecord:
    feedback_id: str
    advisory_id: str | None
    customer_id: str | None
    kind: str
    text: str | None
    received_at: datetime  # UTC
    created: bool  # False when the id was already stored


def ensure_schema(conn: Connection) -> None:
    """Create the feedback table (and its indexes) if missing."""
    metadata.create_all(conn)


def record_feedback(
    engine: Engine,
    *,
    feedback_id: str,
    kind: str,
    advisory_id: str | None = None,
    customer_id: str | None = None,
    text: str | None = None,
    source: str = "api",
    at: datetime | None = None,
) -> FeedbackRecord:
    """Store one feedback unless its id is already there; returns the stored row.
    Raises FeedbackConflict when the id exists with another content."""
    masked = mask_contacts(text) if text is not None else None
    fingerprint = hashlib.sha256(json.dumps(
        [advisory_id, customer_id, kind, masked], ensure_ascii=False).encode()).hexdigest()
    row = {"feedback_id": feedback_id, "advisory_id": advisory_id, "customer_id": customer_id,
           "kind": kind, "text": masked, "received_at": at or datetime.now(UTC),
           "source": source[:64], "fingerprint": fingerprint}
    created = False
    with engine.begin() as conn:
        ensure_schema(conn)
        stored = _get(conn, feedback_id)
        if stored is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(feedback), [row])
                created = True
            except IntegrityError:  # another request stored the same id just now
                pass
            stored = _get(conn, feedback_id)
    assert stored is not None
    if stored["fingerprint"] != fingerprint:
        raise FeedbackConflict(f"feedback_id {feedback_id!r} was already used for other feedback")
    received = stored["received_at"]
    if received.tzinfo is None:  # SQLite keeps no zone; the column is UTC
        received = received.replace(tzinfo=UTC)
    return FeedbackRecord(feedback_id=feedback_id, advisory_id=stored["advisory_id"],
                          customer_id=stored["customer_id"], kind=stored["kind"],
                          text=stored["text"], received_at=received, created=created)


def feedback_frame(engine: Engine) -> pd.DataFrame:
    """All stored feedback as customer_id, advisory_id, received_utc (UTC), kind, oldest
    first: the columns of the policy's feedback reader."""
    with engine.begin() as conn:
        ensure_schema(conn)
        rows = conn.execute(select(feedback.c.customer_id, feedback.c.advisory_id,
                                   feedback.c.received_at, feedback.c.kind)
                            .order_by(feedback.c.received_at, feedback.c.feedback_id)).all()
    frame = pd.DataFrame(rows, columns=["customer_id", "advisory_id", "received_utc", "kind"])
    frame["received_utc"] = pd.to_datetime(frame["received_utc"], utc=True)
    return frame


def _get(conn: Connection, feedback_id: str) -> dict | None:
    found = conn.execute(select(feedback).where(feedback.c.feedback_id == feedback_id)).first()
    return dict(found._mapping) if found is not None else None
