"""The outbox: a durable table of advisories waiting to be sent.

Advisories are written here in one transaction before anything is sent, keyed by their
idempotency key (``Advisory.advisory_id``), so that a rerun of the same run, or a crash
half-way, never enqueues (and so never sends) a message twice. SQLite by default; any
SQLAlchemy URL works. Times are stored as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Enum,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url

from serving.advisories import Advisory, empty_history, history_from_payloads

STATES = ("pending", "sending", "sent", "failed", "dead")
_KEY_CHUNK = 500  # keys per IN (...) query in the generic fallback

metadata = MetaData()
outbox = Table(
    "outbox",
    metadata,
    Column("idempotency_key", String(64), primary_key=True, comment="Advisory.advisory_id"),
    Column("run_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False, comment="Advisory.to_dict() as JSON"),
    Column(
        "state",
        Enum(
            *STATES,
            name="outbox_state",
            native_enum=False,
            create_constraint=True,
            validate_strings=True,
        ),
        nullable=False,
        default="pending",
    ),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False, comment="UTC"),
    Column("send_after", DateTime(timezone=True), nullable=False, comment="UTC"),
)
Index("ix_outbox_state_send_after", outbox.c.state, outbox.c.send_after)


@dataclass(frozen=True)
class EnqueueResult:
    """Rows written by one enqueue and rows skipped because their key was already there
    (or repeated within the same call)."""

    inserted: int
    duplicates: int


def enqueue(url: str, advisories: Sequence[Advisory]) -> EnqueueResult:
    """Insert the advisories as ``pending`` rows in one transaction; an advisory whose key is
    already in the outbox is left as it is (insert-or-ignore), so reruns add nothing."""
    now = datetime.now(UTC)
    rows = [_row(adv, now) for adv in advisories]
    with _engine(url) as engine, engine.begin() as conn:
        metadata.create_all(conn)
        inserted = _insert_ignore(conn, rows) if rows else 0
    return EnqueueResult(inserted=inserted, duplicates=len(rows) - inserted)


def pending(url: str) -> pd.DataFrame:
    """Rows in state ``pending``, oldest ``send_after`` first, with UTC timestamps."""
    query = (
        select(outbox)
        .where(outbox.c.state == "pending")
        .order_by(outbox.c.send_after, outbox.c.idempotency_key)
    )
    with _engine(url) as engine, engine.begin() as conn:
        metadata.create_all(conn)
        result = conn.execute(query)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for col in ("created_at", "send_after"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def read_history(url: str) -> pd.DataFrame:
    """What was already enqueued (any state), as the history ``decide_advisories`` needs
    (``serving.advisories.HISTORY_COLUMNS``, from each row's payload). Read-only: a missing
    database or table is an empty history, and nothing is created."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and (
        not database or database == ":memory:" or not Path(database).is_file()
    ):
        return empty_history()
    with _engine(url) as engine, engine.connect() as conn:
        if not inspect(conn).has_table(outbox.name):
            return empty_history()
        payloads: list[str] = list(conn.execute(select(outbox.c.payload)).scalars())
        return history_from_payloads(json.loads(p) for p in payloads)


def read_delivery(url: str) -> pd.DataFrame:
    """Delivery state per message: idempotency_key, customer_id, kind, state, attempts and,
    when the outbox has one (the dispatcher adds it), an acknowledgement column. Read-only;
    a missing database or table gives an empty frame."""
    parsed = make_url(url)
    database = parsed.database
    empty = pd.DataFrame(columns=["idempotency_key", "customer_id", "kind", "state", "attempts"])
    if parsed.get_backend_name() == "sqlite" and (
        not database or database == ":memory:" or not Path(database).is_file()
    ):
        return empty
    with _engine(url) as engine, engine.connect() as conn:
        if not inspect(conn).has_table(outbox.name):
            return empty
        table = Table(outbox.name, MetaData(), autoload_with=conn)
        wanted = ["idempotency_key", "customer_id", "kind", "state", "attempts",
                  "acknowledged_at", "acked_at", "acknowledged"]
        cols = [table.c[name] for name in wanted if name in table.c]
        result = conn.execute(select(*cols))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def count(url: str) -> int:
    """Rows in the outbox, whatever their state."""
    with _engine(url) as engine, engine.begin() as conn:
        metadata.create_all(conn)
        return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())


def _row(adv: Advisory, now: datetime) -> dict[str, Any]:
    return {
        "idempotency_key": adv.advisory_id,
        "run_id": adv.run_id,
        "customer_id": adv.customer_id,
        "channel": adv.channel,
        "kind": adv.kind,
        "payload": json.dumps(adv.to_dict(), ensure_ascii=False, sort_keys=True),
        "state": "pending",
        "attempts": 0,
        "created_at": now,
        "send_after": datetime.fromisoformat(adv.send_after_utc).astimezone(UTC),
    }


def _insert_ignore(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose key is new; returns how many were inserted."""
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        dialect_insert = sqlite.insert if name == "sqlite" else postgresql.insert
        stmt = (
            dialect_insert(outbox)
            .on_conflict_do_nothing(index_elements=[outbox.c.idempotency_key])
            .returning(outbox.c.idempotency_key)
        )
        # executemany with RETURNING is batched into multi-row INSERTs ("insertmanyvalues");
        # conflicting rows return nothing, so the result counts exactly the new rows.
        return len(conn.execute(stmt, rows).all())
    return _insert_missing(conn, rows)


def _insert_missing(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Fallback for other databases: look up which keys exist, then insert the rest.
    Safe against reruns; two writers racing on the same keys would hit the primary key."""
    unique = list({row["idempotency_key"]: row for row in rows}.values())
    keys = [row["idempotency_key"] for row in unique]
    existing: set[str] = set()
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i : i + _KEY_CHUNK]
        found = conn.execute(
            select(outbox.c.idempotency_key).where(outbox.c.idempotency_key.in_(chunk))
        )
        existing.update(found.scalars())
    new = [row for row in unique if row["idempotency_key"] not in existing]
    if new:
        conn.execute(insert(outbox), new)
    return len(new)


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """An engine for ``url`` (the folder of a SQLite file is created), disposed after use."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
