"""The outbox: a durable table of advisories waiting to be sent.

Advisories are written here in one transaction before anything is sent, keyed by their
idempotency key (``Advisory.advisory_id``), so that a rerun of the same run, or a crash
half-way, never enqueues (and so never sends) a message twice. SQLite by default; any
SQLAlchemy URL works. Times are stored as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
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
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
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
    Column("attempts", Integer, nullable=False, default=0, comment="send attempts, all channels"),
    Column("created_at", DateTime(timezone=True), nullable=False, comment="UTC"),
    Column("send_after", DateTime(timezone=True), nullable=False, comment="UTC"),
    # Added for the dispatcher (serving/dispatch.py); all nullable or defaulted, so that an
    # outbox written before them gains them with ALTER TABLE ... ADD COLUMN (ensure_schema).
    Column("next_attempt_at", DateTime(timezone=True),
           comment="UTC; when a pending or failed row is next due (send_after at first); "
           "NULL while the row is not waiting"),
    Column("channel_index", Integer, nullable=False, server_default="0",
           comment="position in the customer's fallback chain of the channel to try next"),
    Column("channel_attempts", Integer, nullable=False, server_default="0",
           comment="attempts on the current channel"),
    Column("claimed_by", String(64), comment="dispatcher that holds the row in 'sending'"),
    Column("lease_until", DateTime(timezone=True), comment="UTC; a later dispatcher may take "
           "a 'sending' row back after this"),
    Column("last_error", Text, comment="last failure, without contact details"),
    Column("sent_at", DateTime(timezone=True), comment="UTC; first acceptance by a provider"),
    Column("channel_used", String(32), comment="channel of the last accepted send"),
    Column("provider_message_id", String(128), comment="provider id of the last accepted send"),
    Column("escalate_at", DateTime(timezone=True), comment="UTC; critical and unacknowledged: "
           "try the next channel from then"),
    Column("acknowledged_at", DateTime(timezone=True), comment="UTC; customer acknowledged"),
    Column("delivery_status", String(32), comment="last provider delivery receipt status"),
    Column("delivered_at", DateTime(timezone=True), comment="UTC; provider reported delivered"),
)
Index("ix_outbox_state_send_after", outbox.c.state, outbox.c.send_after)
# The dispatcher's claims walk these in order and stop after a batch (see serving/dispatch.py)
Index("ix_outbox_next_attempt_at", outbox.c.next_attempt_at)
Index("ix_outbox_lease_until", outbox.c.lease_until)
Index("ix_outbox_escalate_at", outbox.c.escalate_at)
Index("ix_outbox_claimed_by", outbox.c.claimed_by)
Index("ix_outbox_provider_message_id", outbox.c.provider_message_id)

# One row per send attempt on one channel: the history behind the outbox row's state.
deliveries = Table(
    "outbox_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(64), nullable=False, index=True),
    Column("channel", String(32), nullable=False),
    Column("outcome", String(16), nullable=False, comment="sent | transient | permanent"),
    Column("provider_message_id", String(128), index=True),
    Column("error", Text, comment="without contact details"),
    Column("attempted_at", DateTime(timezone=True), nullable=False, comment="UTC"),
    Column("receipt_status", String(32), comment="provider delivery receipt, e.g. delivered"),
    Column("receipt_at", DateTime(timezone=True), comment="UTC"),
)


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
        ensure_schema(conn)
        inserted = _insert_ignore(conn, rows) if rows else 0
    return EnqueueResult(inserted=inserted, duplicates=len(rows) - inserted)


def enqueue_payloads(url: str, payloads: Sequence[Mapping[str, Any]]) -> EnqueueResult:
    """Like :func:`enqueue` for payload dicts that follow the dispatcher's contract (see
    serving/dispatch.py): each has ``advisory_id`` (the key), ``run_id``, ``kind``,
    ``customer_id``, ``send_after_utc`` (ISO-8601 with zone) and ``channel`` or a non-empty
    ``channels`` list. Insert-or-ignore on the key, in one transaction."""
    now = datetime.now(UTC)
    rows = [_payload_row(p, now) for p in payloads]
    with _engine(url) as engine, engine.begin() as conn:
        ensure_schema(conn)
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
        ensure_schema(conn)
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
        ensure_schema(conn)
        return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())


def ensure_schema(conn: Connection) -> None:
    """Create the outbox tables, and add the columns an older outbox lacks (additive only:
    no column is dropped, renamed or retyped)."""
    metadata.create_all(conn)
    have = {col["name"] for col in inspect(conn).get_columns(outbox.name)}
    for column in outbox.columns:
        if column.name in have:
            continue
        ddl = column.type.compile(dialect=conn.dialect)
        default = f" DEFAULT {column.server_default.arg}" if column.server_default is not None else ""  # type: ignore[attr-defined]
        not_null = " NOT NULL" if not column.nullable else ""
        conn.execute(text(f"ALTER TABLE {outbox.name} ADD COLUMN {column.name} {ddl}{default}{not_null}"))
    for index in outbox.indexes:
        index.create(conn, checkfirst=True)
    # rows written before next_attempt_at existed are due from their send_after
    conn.execute(
        update(outbox)
        .where(outbox.c.next_attempt_at.is_(None), outbox.c.state.in_(("pending", "failed")))
        .values(next_attempt_at=outbox.c.send_after)
    )


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
        "next_attempt_at": datetime.fromisoformat(adv.send_after_utc).astimezone(UTC),
    }


def _payload_row(payload: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    missing = [k for k in ("advisory_id", "run_id", "kind", "customer_id", "send_after_utc")
               if not payload.get(k)]
    channel = payload.get("channel") or (list(payload.get("channels") or []) or [None])[0]
    if missing or not channel:
        raise ValueError(f"outbox payload lacks {missing or ['channel or channels']} "
                         f"(advisory_id {payload.get('advisory_id')!r})")
    send_after = datetime.fromisoformat(str(payload["send_after_utc"]).replace("Z", "+00:00"))
    if send_after.tzinfo is None:
        raise ValueError(f"send_after_utc must carry a zone: {payload['send_after_utc']!r}")
    return {
        "idempotency_key": str(payload["advisory_id"]),
        "run_id": str(payload["run_id"]),
        "customer_id": str(payload["customer_id"]),
        "channel": str(channel),
        "kind": str(payload["kind"]),
        "payload": json.dumps(dict(payload), ensure_ascii=False, sort_keys=True),
        "state": "pending",
        "attempts": 0,
        "created_at": now,
        "send_after": send_after.astimezone(UTC),
        "next_attempt_at": send_after.astimezone(UTC),
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
    engine = open_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


SQLITE_BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another's transaction to end


class OutboxUnreadable(ValueError):
    """The outbox URL names a path that is not an SQLite database (a directory, a text
    file, another program's file); the message names it and says what to do. The file is
    left as it is."""


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(database: str) -> None:
    """Refuse, before SQLite opens (and WAL mode would touch) it, a path that exists but is
    not an SQLite database; a missing or empty file is fine (the outbox is created in it)."""
    path = Path(database)
    hint = ("paths.outbox_url (default <home>/outbox.db, under FOREWARN_HOME) must name the "
            "SQLite outbox Forewarn writes: point it at that file, or move this one aside and "
            "a new outbox is created; the file was not changed")
    if path.exists() and not path.is_file():
        raise OutboxUnreadable(f"outbox database {path}: not a file; {hint}")
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:
            raise OutboxUnreadable(f"outbox database {path}: not an SQLite database; {hint}")


def open_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created and every connection
    uses WAL (readers never block the writer), synchronous=NORMAL and a busy timeout, so that
    several dispatchers and the nightly job can share the file. The caller disposes it.
    OutboxUnreadable when the file exists but is not an SQLite database."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url)
    if database and database != ":memory:":
        if not database.startswith("file:"):  # a URI filename is SQLite's to parse
            check_sqlite_file(database)
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine
