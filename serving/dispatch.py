"""The dispatcher: drains the outbox through the channel adapters, durably.

States of an outbox row::

    pending ──claim──► sending ──► sent ──(critical, no acknowledgement)──► sending ─► ...
                          │
                          ├──► failed ──(backoff due)──claim──► sending
                          └──► dead   (every channel of the chain failed for good)

* **Claiming** is one ``UPDATE ... WHERE key IN (due rows) AND <still due>`` that stamps
  the rows with this claim's token and a lease; only rows it stamped are sent. Two
  dispatchers (or a dispatcher and its restart) never hold the same row: SQLite runs one
  writer at a time, and PostgreSQL re-checks the ``WHERE`` on rows another transaction
  changed. Results are written back only while the claim token still matches.
* **At-least-once.** A dispatcher killed after the provider accepted a message but before
  its result was committed leaves the row in ``sending``; once the lease
  (``dispatch.lease_s``) runs out, the next run sends it again with the same dedupe key.
  At most ``dispatch.commit_every`` messages are exposed this way. The webhook receiver
  dedupes on the ``Idempotency-Key`` header, push collapses on the key, e-mail keeps the
  same Message-ID; SMS, voice and WeChat have no dedupe in their APIs, so a crash in that
  window can reach a phone twice. A duplicate warning is the lesser harm: at-most-once would
  silently drop messages, including to customers on medical equipment.
* **Retries**: a transient failure is retried on the same channel after
  ``backoff_base_s * 2**(n-1)`` seconds (capped at ``backoff_max_s``, drawn in
  ``[d*(1-jitter), d]``); after ``max_attempts`` tries, or at once on a permanent failure,
  the next channel of the customer's chain is tried; when none is left the row is ``dead``.
* **Chain**: the payload's ``channels``, else the contact book's channels for the customer,
  else the row's channel; critical customers get ``dispatch.fallback`` appended.
* **Escalation**: after a critical customer's message is sent on one channel, the row waits
  ``escalate_after_s`` for :func:`acknowledge`, then goes out on the next channel, until
  the chain ends or the customer acknowledges.
* **Rate limits**: one token bucket per channel (``rate_per_s``, ``burst``); the dispatcher
  waits for a token.
* ``send_after`` is honoured: nothing is sent before it.

Payload contract (the outbox ``payload`` JSON): ``advisory_id``, ``kind``, ``customer_id``,
``segment``, ``language``; optionally ``channels`` (ordered fallback list), ``critical``
(bool) and ``content`` = {channel: fields} with ``email`` {subject, text, html}, ``sms``
{text}, ``voice`` {script}, ``app_push`` (or ``push``) {title, body, data?}, ``wechat``
{template_id?, data{first, keyword1.., remark}}, ``webhook`` {...}. Without ``content``
the fields are built from the Advisory's ``subject``, ``body`` and ``sms_text``. Contacts
are never in the payload: they come from a :class:`serving.contacts.ContactBook` at send time.
"""

from __future__ import annotations

import html
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, and_, bindparam, func, insert, or_, select, update

from configs.settings import ChannelsSettings, DispatchSettings
from serving.channels.base import (
    Channel,
    Contact,
    OutboundMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
    scrub,
)
from serving.contacts import ContactBook
from serving.outbox import deliveries, ensure_schema, open_engine, outbox

log = logging.getLogger(__name__)
progress = logging.getLogger("forewarn.progress.dispatch")  # see flows/progress.py

CONTENT_ALIASES = {"push": "app_push"}  # payload content names -> dispatch channel names
META_FIELDS = ("advisory_id", "kind", "customer_id", "segment", "run_id", "area_id",
               "window_id", "window_start_utc", "window_end_utc")


# --- time and rate ---------------------------------------------------------------------------


class Clock(Protocol):
    """Wall time (UTC) for the outbox, monotonic seconds for rate limits, and waiting."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_TOKEN_EPS = 1e-9


class TokenBucket:
    """Rate limit of one channel: ``rate_per_s`` messages per second on average, up to
    ``burst`` at once. ``granted`` counts the tokens handed out."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.granted = 0
        self._clock = clock
        self._last = clock.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token and return 0.0, or return the seconds until one is available."""
        with self._lock:
            return self._take()

    def _take(self) -> float:
        now = self._clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0 - _TOKEN_EPS:  # float sums of waits fall a hair short of 1
            self.tokens = max(0.0, self.tokens - 1.0)
            self.granted += 1
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def acquire(self) -> float:
        """Wait (on the clock) until a token is taken; returns the seconds waited."""
        waited = 0.0
        while (wait := self.take()) > 0:
            self._clock.sleep(wait)
            waited += wait
        return waited


def backoff_s(attempt: int, cfg: DispatchSettings, rng: random.Random) -> float:
    """Delay in seconds before retry number ``attempt`` (1 = after the first failure):
    exponential, capped at ``backoff_max_s``, with jitter drawn in [d*(1-jitter), d]."""
    delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2.0 ** (attempt - 1))
    return delay * (1.0 - cfg.jitter * rng.random())


# --- payload -> messages ---------------------------------------------------------------------


def is_critical(payload: Mapping[str, Any]) -> bool:
    """The payload's ``critical`` flag, else whether the segment is ``critical``."""
    flag = payload.get("critical")
    return bool(flag) if flag is not None else payload.get("segment") == "critical"


def channel_chain(
    payload: Mapping[str, Any], contact: Contact, row_channel: str, cfg: DispatchSettings
) -> tuple[str, ...]:
    """Channels to try in order (see the module doc), without repeats."""
    own = payload.get("channels") or contact.channels or (row_channel,)
    chain = [CONTENT_ALIASES.get(str(c), str(c)) for c in own]
    if is_critical(payload):
        chain.extend(cfg.fallback)
    return tuple(dict.fromkeys(chain))


def content_for(payload: Mapping[str, Any], channel: str) -> dict[str, Any]:
    """The fields of ``channel`` from the payload's ``content``, else built from the
    Advisory's subject, body and sms_text. Raises PermanentSendError when neither exists."""
    content = payload.get("content") or {}
    for name, fields in content.items():
        if CONTENT_ALIASES.get(name, name) == channel:
            return dict(fields)
    subject = payload.get("subject")
    body = payload.get("body")
    short = payload.get("sms_text") or body
    if not (subject or body or short):
        raise PermanentSendError(f"payload has no content for channel {channel}")
    subject, body, short = str(subject or ""), str(body or ""), str(short or "")
    if channel == "email":
        return {"subject": subject, "text": body, "html": text_to_html(subject, body)}
    if channel == "sms":
        return {"text": short}
    if channel == "voice":
        return {"script": short}
    if channel == "app_push":
        return {"title": subject, "body": short}
    if channel == "wechat":
        return {"data": {"first": subject, "keyword1": short, "remark": ""}}
    return {"subject": subject, "body": body, "sms_text": short}


def text_to_html(subject: str, body: str) -> str:
    """A minimal HTML e-mail of the plain text: one paragraph per blank-line block."""
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    inner = "".join(
        "<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs
    )
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(subject)}'
            f"</title></head><body>{inner}</body></html>")


# --- the dispatcher --------------------------------------------------------------------------


@dataclass
class DispatchReport:
    """What one run did. ``outcomes`` counts (channel, outcome) over every send attempt;
    outcome is sent, transient or permanent."""

    claimed: int = 0
    sent: int = 0  # rows that ended this run in 'sent' after a send
    retrying: int = 0  # rows left 'failed' (or escalation rescheduled) for a later retry
    dead: int = 0
    escalations: int = 0  # sends to a critical customer beyond their first channel
    lost_claims: int = 0  # results not written because another dispatcher took the row
    waited_s: float = 0.0  # seconds spent waiting for rate-limit tokens
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: DispatchReport) -> None:
        """Add the counts of ``other`` (a part of this run) to these."""
        for name in ("claimed", "sent", "retrying", "dead", "escalations", "lost_claims",
                     "waited_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.outcomes.update(other.outcomes)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "outcomes"}
        out["outcomes"] = {f"{c}:{o}": n for (c, o), n in sorted(self.outcomes.items())}
        return out


@dataclass
class _Claimed:
    """A row this dispatcher holds in 'sending' under ``token``."""

    key: str
    token: str
    customer_id: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    channel_index: int
    channel_attempts: int
    sent_at: datetime | None


class Dispatcher:
    """Sends what is due in the outbox at ``url`` through ``channels`` (by name)."""

    def __init__(
        self,
        url: str,
        cfg: DispatchSettings,
        channels: Mapping[str, Channel],
        contacts: ContactBook,
        limits: ChannelsSettings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.cfg = cfg
        self.channels = dict(channels)
        self.contacts = contacts
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._own_engine = engine is None
        self.engine = engine if engine is not None else open_engine(url)
        self.buckets = {
            name: TokenBucket(limits.limits(name).rate_per_s, limits.limits(name).burst,
                              self.clock)
            for name in self.channels
        }
        self._pool = (ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="dispatch")
                      if cfg.concurrency > 1 else None)
        with self.engine.begin() as conn:
            ensure_schema(conn)

    def close(self) -> None:
        """Stop the sending threads; dispose the engine if this dispatcher opened it
        (channels are the caller's to close)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._own_engine:
            self.engine.dispose()

    # -- public --

    def run(self, limit: int | None = None) -> DispatchReport:
        """Claim and send due rows, batch after batch, until none is due or ``limit`` rows
        were claimed. Safe to run again at any time, also beside another dispatcher."""
        report = DispatchReport()
        due = self.due_count()
        due = due if limit is None else min(due, limit)
        progress.info("%d messages due", due, extra={"step": 0, "steps": due})
        while limit is None or report.claimed < limit:
            size = self.cfg.batch_size if limit is None else min(
                self.cfg.batch_size, limit - report.claimed)
            batch = self.claim(size)
            if not batch:
                break
            report.claimed += len(batch)
            self.process(batch, report)
            due = max(due, report.claimed)  # rows that fell due while sending
            progress.info("%d sent, %d handled of %d due", report.sent, report.claimed, due,
                          extra={"step": report.claimed, "steps": due})
        return report

    def due_count(self) -> int:
        """Rows due now (see :func:`due_clause`)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox).where(
                due_clause(self.clock.now()))).scalar_one())

    def claim(self, size: int) -> list[_Claimed]:
        """Atomically take up to ``size`` due rows into 'sending' under a new claim token:
        first rows a dead dispatcher left behind, then escalations, then waiting rows, each
        oldest first along its own index. UPDATE statements only, so the write lock is
        taken before anything is read."""
        now = self.clock.now()
        token = f"{self.worker_id}:{uuid.uuid4().hex[:12]}"
        lease = now + timedelta(seconds=self.cfg.lease_s)
        taken = 0
        with self.engine.begin() as conn:
            for condition, order in _claim_parts(now):
                if taken >= size:
                    break
                oldest = (select(outbox.c.idempotency_key).where(condition)
                          .order_by(order).limit(size - taken))
                taken += conn.execute(
                    update(outbox)
                    .where(outbox.c.idempotency_key.in_(oldest), condition)
                    .values(claimed_by=token, state="sending", lease_until=lease,
                            next_attempt_at=None)
                ).rowcount
            if not taken:
                return []
            rows = conn.execute(
                select(outbox.c.idempotency_key, outbox.c.customer_id, outbox.c.channel,
                       outbox.c.payload, outbox.c.attempts, outbox.c.channel_index,
                       outbox.c.channel_attempts, outbox.c.sent_at)
                .where(outbox.c.claimed_by == token)
                .order_by(outbox.c.send_after, outbox.c.idempotency_key)
            ).all()
        return [
            _Claimed(key=r[0], token=token, customer_id=r[1], channel=r[2],
                     payload=json.loads(r[3]), attempts=r[4], channel_index=r[5],
                     channel_attempts=r[6], sent_at=r[7])
            for r in rows
        ]

    def process(self, batch: Sequence[_Claimed], report: DispatchReport) -> None:
        """Send the claimed rows, ``commit_every`` at a time (``concurrency`` of them in
        parallel), writing each group's results before the next group starts; so a crash
        leaves at most one group sent but unrecorded."""
        size = self.cfg.commit_every
        for start in range(0, len(batch), size):
            group = batch[start:start + size]
            if self._pool is None:
                done = [self._deliver_alone(item) for item in group]
            else:
                done = list(self._pool.map(self._deliver_alone, group))
            attempts: list[dict[str, Any]] = []
            for _, tried, part in done:
                attempts.extend(tried)
                report.add(part)
            self._write([row for row, _, _ in done], attempts, report)

    def _deliver_alone(
        self, item: _Claimed
    ) -> tuple[dict[str, Any], list[dict[str, Any]], DispatchReport]:
        """_deliver with a report of its own (merged by the caller: no shared counters
        between threads)."""
        part = DispatchReport()
        row, tried = self._deliver(item, part)
        return row, tried, part

    # -- one row --

    def _deliver(
        self, item: _Claimed, report: DispatchReport
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Try the row's current channel, falling back along the chain on permanent
        failures. Returns the row's new values and the attempts made."""
        escalating = item.sent_at is not None  # delivered before: this is an escalation
        row: dict[str, Any] = {
            "k": item.key, "token": item.token, "state": "sent" if escalating else "dead", "attempts": item.attempts,
            "channel_index": item.channel_index, "channel_attempts": item.channel_attempts,
            "next_attempt_at": None, "last_error": None, "sent_at": item.sent_at,
            "channel_used": None, "provider_message_id": None, "escalate_at": None,
            "_keep_receipt": True,
        }
        tried: list[dict[str, Any]] = []
        contact = self.contacts.lookup(item.customer_id)
        if contact is None:
            row["last_error"] = f"customer {item.customer_id} is not in the contact book"
            return self._finish(row, escalating, report), tried
        chain = channel_chain(item.payload, contact, item.channel, self.cfg)
        critical = is_critical(item.payload)
        while row["channel_index"] < len(chain):
            index = row["channel_index"]
            name = chain[index]
            now = self.clock.now()
            try:
                receipt = self._send_one(item, contact, name, index, report)
            except TransientSendError as exc:
                row["attempts"] += 1
                row["channel_attempts"] += 1
                row["last_error"] = f"{name}: {exc}"
                tried.append(_attempt(item.key, name, "transient", None, str(exc), now))
                report.outcomes[(name, "transient")] += 1
                if row["channel_attempts"] < self.cfg.max_attempts:
                    retry_at = now + timedelta(
                        seconds=backoff_s(row["channel_attempts"], self.cfg, self.rng))
                    if escalating:
                        row["escalate_at"] = retry_at
                    else:
                        row["state"] = "failed"
                        row["next_attempt_at"] = retry_at
                    report.retrying += 1
                    return row, tried
            except PermanentSendError as exc:
                row["attempts"] += 1
                row["last_error"] = f"{name}: {exc}"
                tried.append(_attempt(item.key, name, "permanent", None, str(exc), now))
                report.outcomes[(name, "permanent")] += 1
            else:
                row["attempts"] += 1
                tried.append(_attempt(item.key, name, "sent", receipt.provider_message_id,
                                      None, now))
                report.outcomes[(name, "sent")] += 1
                if escalating:
                    report.escalations += 1
                row.update(state="sent", sent_at=item.sent_at or now, channel_used=name,
                           provider_message_id=receipt.provider_message_id,
                           last_error=None, _keep_receipt=False, channel_attempts=0)
                if critical and index + 1 < len(chain):
                    row["channel_index"] = index + 1
                    row["escalate_at"] = now + timedelta(seconds=self.cfg.escalate_after_s)
                report.sent += 1
                return row, tried
            row["channel_index"] = index + 1  # permanent failure or retries used up
            row["channel_attempts"] = 0
        return self._finish(row, escalating, report), tried

    def _finish(self, row: dict[str, Any], escalating: bool, report: DispatchReport
                ) -> dict[str, Any]:
        """The chain is used up: dead, unless an earlier channel already delivered."""
        if escalating or row["sent_at"] is not None:
            row["state"] = "sent"
        else:
            row["state"] = "dead"
            report.dead += 1
            log.warning("outbox %s dead: %s", row["k"], row["last_error"])
        return row

    def _send_one(self, item: _Claimed, contact: Contact, name: str, index: int,
                  report: DispatchReport | None = None) -> Any:
        channel = self.channels.get(name)
        if channel is None:
            raise PermanentSendError(f"channel {name} is not available")
        message = OutboundMessage(
            dedupe_key=item.key if index == 0 else f"{item.key}.{index}",
            channel=name,
            contact=contact,
            content=content_for(item.payload, name),
            language=str(item.payload.get("language") or "en"),
            meta={k: item.payload[k] for k in META_FIELDS if k in item.payload},
        )
        waited = self.buckets[name].acquire()
        if report is not None:
            report.waited_s += waited
        try:
            return channel.send(message)
        except SendError:
            raise
        except (OSError, ValueError) as exc:  # an adapter bug or a socket error: retry later
            raise TransientSendError(f"{type(exc).__name__}: {scrub(str(exc))}") from exc

    # -- results --

    def _write(self, results: list[dict[str, Any]], attempts: list[dict[str, Any]],
               report: DispatchReport) -> None:
        """Write the rows' new values, only where this dispatcher still holds the claim.
        Rows without a new acceptance keep the receipt fields of an earlier one."""
        accepted = [r for r in results if not r["_keep_receipt"]]
        unchanged = [r for r in results if r["_keep_receipt"]]
        with self.engine.begin() as conn:
            for rows, stmt in ((accepted, _WRITE_ACCEPTED), (unchanged, _WRITE_OTHER)):
                if rows:
                    params = [{f"v_{k}": v for k, v in r.items()} for r in rows]
                    report.lost_claims += len(rows) - conn.execute(stmt, params).rowcount
            if attempts:
                conn.execute(insert(deliveries), attempts)


_COMMON: dict[str, Any] = {
    "state": bindparam("v_state"), "attempts": bindparam("v_attempts"),
    "channel_index": bindparam("v_channel_index"),
    "channel_attempts": bindparam("v_channel_attempts"),
    "next_attempt_at": bindparam("v_next_attempt_at"), "last_error": bindparam("v_last_error"),
    "sent_at": bindparam("v_sent_at"), "escalate_at": bindparam("v_escalate_at"),
    "claimed_by": None, "lease_until": None,
}
_MINE = and_(outbox.c.idempotency_key == bindparam("v_k"),
             outbox.c.claimed_by == bindparam("v_token"))
_WRITE_OTHER = update(outbox).where(_MINE).values(**_COMMON)
_WRITE_ACCEPTED = update(outbox).where(_MINE).values(
    **_COMMON, channel_used=bindparam("v_channel_used"),
    provider_message_id=bindparam("v_provider_message_id"), delivery_status=None,
    delivered_at=None)


def _claim_parts(now: datetime) -> list[tuple[Any, Any]]:
    """The three kinds of due rows (see :func:`due_clause`), each with the indexed column
    it is taken in order of."""
    abandoned = and_(outbox.c.lease_until <= now, outbox.c.state == "sending")
    escalation = and_(outbox.c.escalate_at <= now, outbox.c.state == "sent",
                      outbox.c.acknowledged_at.is_(None))
    waiting = and_(outbox.c.next_attempt_at <= now, outbox.c.state.in_(("pending", "failed")),
                   outbox.c.send_after <= now)
    return [(abandoned, outbox.c.lease_until), (escalation, outbox.c.escalate_at),
            (waiting, outbox.c.next_attempt_at)]


def due_clause(now: datetime) -> Any:
    """Rows to send at ``now``: pending or failed and due, left in 'sending' past their lease
    (a dispatcher that died), or sent to a critical customer who has not acknowledged and
    whose escalation time has come."""
    return or_(*(condition for condition, _ in _claim_parts(now)))


def _attempt(key: str, channel: str, outcome: str, provider_id: str | None, error: str | None,
             at: datetime) -> dict[str, Any]:
    return {"idempotency_key": key, "channel": channel, "outcome": outcome,
            "provider_message_id": provider_id, "error": error, "attempted_at": at,
            "receipt_status": None, "receipt_at": None}


# --- callbacks and inspection ----------------------------------------------------------------


def acknowledge(url: str, key: str, at: datetime | None = None) -> bool:
    """Record that the customer acknowledged the message ``key`` (from the app, a reply, a
    keypress on the call): no further escalation. Returns whether the key exists; a repeated
    acknowledgement keeps the first time. ``at`` is UTC (default now)."""
    at = at or datetime.now(UTC)
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            ensure_schema(conn)
            conn.execute(
                update(outbox)
                .where(outbox.c.idempotency_key == key, outbox.c.acknowledged_at.is_(None))
                .values(acknowledged_at=at, escalate_at=None)
            )
            found = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.idempotency_key == key)
            ).scalar_one()
    finally:
        engine.dispose()
    return bool(found)


def record_receipt(
    url: str,
    status: str,
    *,
    provider_message_id: str | None = None,
    key: str | None = None,
    at: datetime | None = None,
) -> int:
    """Record a provider's delivery receipt (e.g. Twilio ``MessageStatus``: delivered,
    undelivered, failed) for the send with ``provider_message_id``, or for the last
    accepted send of outbox row ``key``. Returns the outbox rows updated (0 when unknown).
    ``delivered_at`` (UTC, default now) is set when ``status`` is "delivered"."""
    if not (provider_message_id or key):
        raise ValueError("record_receipt needs provider_message_id or key")
    at = at or datetime.now(UTC)
    status = str(status)[:32]
    delivered = at if status.lower() == "delivered" else None
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            ensure_schema(conn)
            if provider_message_id is None:
                provider_message_id = conn.execute(
                    select(outbox.c.provider_message_id)
                    .where(outbox.c.idempotency_key == key)).scalar_one_or_none()
                if provider_message_id is None:
                    return 0
            conn.execute(
                update(deliveries)
                .where(deliveries.c.provider_message_id == provider_message_id)
                .values(receipt_status=status, receipt_at=at))
            values: dict[str, Any] = {"delivery_status": status}
            if delivered is not None:
                values["delivered_at"] = delivered
            return int(conn.execute(
                update(outbox)
                .where(outbox.c.provider_message_id == provider_message_id)
                .values(**values)).rowcount)
    finally:
        engine.dispose()


def due_summary(
    url: str,
    contacts: ContactBook,
    cfg: DispatchSettings,
    now: datetime | None = None,
    limit: int | None = None,
) -> Counter[tuple[str, str]]:
    """What a run at ``now`` (UTC) would send, without sending or changing any row: counts
    of (channel it would try, state the row is in). The channel is "-" for rows whose
    customer is unknown or whose chain is used up. Tables, columns and indexes the outbox
    lacks are created first, and rows from before the dispatcher get their next_attempt_at
    (= send_after); no message changes state."""
    now = now or datetime.now(UTC)
    engine = open_engine(url)
    counts: Counter[tuple[str, str]] = Counter()
    try:
        with engine.begin() as conn:
            ensure_schema(conn)
        query = (select(outbox.c.customer_id, outbox.c.channel, outbox.c.payload,
                        outbox.c.state, outbox.c.channel_index)
                 .where(due_clause(now)).order_by(outbox.c.send_after, outbox.c.idempotency_key))
        if limit is not None:
            query = query.limit(limit)
        with engine.connect() as conn:
            for row in conn.execute(query):
                contact = contacts.lookup(str(row.customer_id))
                name = "-"
                if contact is not None:
                    chain = channel_chain(json.loads(row.payload), contact, row.channel, cfg)
                    index = int(row.channel_index)
                    name = chain[index] if index < len(chain) else "-"
                counts[(name, str(row.state))] += 1
    finally:
        engine.dispose()
    return counts


def state_counts(url: str) -> Counter[str]:
    """Rows per state in the outbox."""
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            ensure_schema(conn)
            return Counter(dict(conn.execute(
                select(outbox.c.state, func.count()).group_by(outbox.c.state)).all()))
    finally:
        engine.dispose()
