"""Advisories: the pure decision of who is told what about which risk window, and when.

``decide_advisories(windows, customers, history, policy, as_of)`` applies the advisory policy
(``configs/policy.yaml``) to ranked risk windows, the customer registry and the history of
what was already enqueued (read from the outbox by :func:`serving.outbox.read_history`). It
reads nothing but the message templates and sends nothing. All times are UTC except quiet
hours and the message text, which are in each customer's own IANA time zone.

Kinds of message (``Advisory.kind``), with their message type for opt-in and opt-out:

=================  ========  ==========================================================
risk_advisory      risk      first notice of a risk window for a customer's event-day
risk_reminder      risk      a later advance step, for segments with ``reminders``
risk_update        risk      material change: level rose, window moved >= min_shift_h,
                             or risk came back after a cancellation
risk_cancelled     risk      "risk has passed": the window told about is gone
restoration        outage    power restored after an outage near an advised window
outage_update      outage    an outage near an advised window is on: when power is likely
                             back (the restoration-time model's P50, between P10 and P90);
                             again when that estimate moves by min_shift_h or more
=================  ========  ==========================================================

An event-day is the local calendar date (customer's zone) of a window's start; a customer
gets at most one ``risk_advisory`` per event-day (the best-ranked window of that day).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from configs.settings import AdvisorySettings, QuietHours
from features import columns as C
from serving.messages import (
    LEVEL_NAMES,
    MessageFacts,
    driver_texts,
    iso_utc,
    render_content,
    template_language,
)

RISK_ADVISORY = "risk_advisory"
RISK_REMINDER = "risk_reminder"
RISK_UPDATE = "risk_update"
RISK_CANCELLED = "risk_cancelled"
RESTORATION = "restoration"
OUTAGE_UPDATE = "outage_update"
KIND = RISK_ADVISORY  # the first-cut name, kept for callers
MESSAGE_TYPE = {
    RISK_ADVISORY: "risk",
    RISK_REMINDER: "risk",
    RISK_UPDATE: "risk",
    RISK_CANCELLED: "risk",
    RESTORATION: "outage",
    OUTAGE_UPDATE: "outage",
}
_STATE_KINDS = (RISK_ADVISORY, RISK_UPDATE, RISK_CANCELLED)  # kinds that set an event's state
# Channel names in payloads are the content keys; the registry calls app push "app_push".
PAYLOAD_CHANNEL = {"app_push": "push"}

WINDOW_COLUMNS = (
    "window_id",
    C.AREA,
    C.AREA_NAME,
    "start",
    "end",
    "hours",
    "peak_prob",
    C.EXPECTED_CUSTOMERS,
    "drivers",
    "rank",
    "run_id",
)
DURATION_COLUMNS = ("duration_p50_h", "duration_p10_h", "duration_p90_h")  # optional, hours
CUSTOMER_COLUMNS = (
    "customer_id",
    C.AREA,
    "segment",
    "channels",
    "language",
    C.TIMEZONE,
    "synthetic",
)
OPT_IN_COLUMNS = {"risk": "opt_in_risk", "outage": "opt_in_outage"}  # optional, default True
HISTORY_COLUMNS = (
    "advisory_id",
    "customer_id",
    "kind",
    C.AREA,
    C.AREA_NAME,
    "window_id",
    "event_day",
    "window_start_utc",
    "window_end_utc",
    "level",
    "peak_prob",
    "send_after_utc",
    "decided_at_utc",
)
RESTORATION_COLUMNS = (C.AREA, "start_utc", "end_utc")  # outage start and restoration, UTC
# outages on the map at as-of with the restoration-time model's estimates, UTC
OUTAGE_COLUMNS = (C.AREA, "first_seen_utc", "restored_p10_utc", "restored_p50_utc",
                  "restored_p90_utc")


class Advisory(NamedTuple):
    """One message to one customer; ``to_dict()`` is the outbox payload (no contact details).
    Times are ISO-8601 UTC strings. A NamedTuple (immutable) rather than a frozen dataclass:
    a million of them are built in a few seconds instead of tens."""

    advisory_id: str  # idempotency key, see advisory_key()
    run_id: str
    kind: str  # see the module docstring
    message_type: str  # "risk" | "outage": what opt-in and opt-out apply to
    reason: str  # risk_update: escalated | moved | renewed; else ""
    customer_id: str
    area_id: str
    area_name: str
    window_id: str
    event_day: str  # YYYY-MM-DD, window start in the customer's zone
    segment: str
    critical: bool  # critical/medical customer: escalate until acknowledged
    language: str  # language the content is written in
    timezone: str  # IANA zone of the customer (local times in the content)
    channels: tuple[str, ...]  # ordered fallback chain; keys of ``content``
    window_start_utc: str
    window_end_utc: str  # exclusive
    send_after_utc: str  # not before this (advance step, quiet hours)
    held_for_quiet_hours: bool  # send_after moved to the end of the customer's quiet hours
    step_h: int | None  # hours before the window start this notice is for
    level: str  # elevated | moderate | high | very_high
    peak_prob: float  # 0-1
    expected_customers: float  # customers of the area expected to lose power in the window
    duration_p50_h: float | None  # likely outage duration (hours) when the window has one
    duration_p10_h: float | None
    duration_p90_h: float | None
    restored_utc: str | None  # restoration: when power came back
    decided_at_utc: str  # the as-of time of the run that decided it
    synthetic: bool  # True when the customer is made up (demo registry)
    content: Mapping[str, Any]  # {channel: {field: text}}, see serving.messages

    @property
    def channel(self) -> str:
        """The first channel of the fallback chain."""
        return self.channels[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe outbox payload."""
        data = self._asdict()
        data["channels"] = list(self.channels)
        data["content"] = dict(self.content)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Advisory:
        """Inverse of :meth:`to_dict` (e.g. a payload read back from the outbox)."""
        return cls(**{**data, "channels": tuple(data["channels"])})


def advisory_key(customer_id: str, area_id: str, local_day: str, kind: str = KIND,
                 *parts: object) -> str:
    """Idempotency key: sha256 hex of ``customer_id|area_id|local_day|kind[|parts...]``.
    local_day is the event-day (YYYY-MM-DD in the customer's zone); ``parts`` tell apart
    several messages of one kind for the same event (reminder step, update content, the
    message a cancellation cancels). Reruns give the same keys."""
    text = "|".join(str(p) for p in (customer_id, area_id, local_day, kind, *parts))
    return hashlib.sha256(text.encode()).hexdigest()


def in_control_group(customer_ids: pd.Series, share: float, salt: str) -> np.ndarray:
    """Whether each customer is in the randomised control group: the first 8 bytes of
    sha256(salt|customer_id), as a fraction of 2^64, below ``share``. Stable across runs,
    machines and Python versions; independent of any other customer."""
    if share <= 0 or len(customer_ids) == 0:
        return np.zeros(len(customer_ids), dtype=bool)
    limit = int(share * 2**64)
    return np.fromiter(
        (
            int.from_bytes(hashlib.sha256(f"{salt}|{cid}".encode()).digest()[:8], "big") < limit
            for cid in customer_ids.astype(str)
        ),
        dtype=bool,
        count=len(customer_ids),
    )


def level_index(peak_prob: np.ndarray | pd.Series, floors: Sequence[float]) -> np.ndarray:
    """Escalation level of each peak probability (0-1): how many level floors it reaches
    (0 elevated, 1 moderate, 2 high, 3 very high with the default floors)."""
    return np.searchsorted(np.asarray(sorted(floors)), np.asarray(peak_prob, float), "right")


def likelihood_level(peak_prob: float, floors: Sequence[float] = (0.3, 0.5, 0.7)) -> str:
    """Likelihood word key for a peak probability (0-1): elevated … very_high."""
    return LEVEL_NAMES[int(level_index(np.array([peak_prob]), floors)[0])]


def empty_history() -> pd.DataFrame:
    """A history with no messages (first run, or no outbox yet)."""
    return history_from_payloads([])


def history_from_payloads(payloads: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The HISTORY_COLUMNS of already enqueued advisories, from their payloads
    (``Advisory.to_dict()``); times as UTC timestamps, level as its index."""
    rows = [{col: p.get(col) for col in HISTORY_COLUMNS} for p in payloads]
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    for col in ("window_start_utc", "window_end_utc", "send_after_utc", "decided_at_utc"):
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    frame["level"] = (
        frame["level"].map({name: i for i, name in enumerate(LEVEL_NAMES)}).fillna(0).astype(int)
    )
    frame["peak_prob"] = pd.to_numeric(frame["peak_prob"]).astype("float64")
    for col in ("advisory_id", "customer_id", "kind", C.AREA, C.AREA_NAME, "window_id",
                "event_day"):
        frame[col] = frame[col].astype(object)
    return frame


def history_from_advisories(advisories: Iterable[Advisory]) -> pd.DataFrame:
    """History as if ``advisories`` had been enqueued."""
    return history_from_payloads(a.to_dict() for a in advisories)


def restorations_from_events(
    events: pd.DataFrame, as_of: pd.Timestamp, lookback_h: int
) -> pd.DataFrame:
    """Unplanned outages (outage-history events with AREA, EV_START, EV_END, EV_PLANNED)
    restored in the ``lookback_h`` hours up to ``as_of`` (UTC), as RESTORATION_COLUMNS.
    Only what was known at as_of: an outage still open then is not restored."""
    as_of = _utc_timestamp(as_of, "as_of")
    end = events[C.EV_END]
    keep = end.notna() & (end <= as_of) & (end > as_of - pd.Timedelta(hours=lookback_h))
    if C.EV_PLANNED in events.columns:
        keep &= ~events[C.EV_PLANNED].fillna(False).astype(bool)
    out = events.loc[keep, [C.AREA, C.EV_START, C.EV_END]]
    out = out.rename(columns={C.EV_START: "start_utc", C.EV_END: "end_utc"})
    return out.assign(**{C.AREA: out[C.AREA].astype(str)}).reset_index(drop=True)


# --- the decision ----------------------------------------------------------------------------


def decide_advisories(
    windows: pd.DataFrame,
    customers: pd.DataFrame,
    history: pd.DataFrame | None,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
    *,
    restorations: pd.DataFrame | None = None,
    outages: pd.DataFrame | None = None,
    run_id: str | None = None,
) -> list[Advisory]:
    """The messages to enqueue at ``as_of`` (UTC): new advisories, reminders, updates on
    material change, cancellations and restoration notices, without any already in
    ``history`` (HISTORY_COLUMNS; None for none), for customers opted in to the message type
    and not in the control group. ``restorations`` lists outages (RESTORATION_COLUMNS) whose
    end is a restoration; ``outages`` those still on the map with their estimated
    restoration (OUTAGE_COLUMNS, e.g. a run's outage_estimates.parquet). Sorted by window
    rank, start, area, customer and kind."""
    plan = plan_messages(windows, customers, history, policy, as_of, restorations=restorations,
                         outages=outages)
    plan = plan.loc[~plan["control"]]
    return _materialise(plan, windows, policy, as_of, run_id)


def control_records(
    windows: pd.DataFrame,
    customers: pd.DataFrame,
    history: pd.DataFrame | None,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """The risk messages withheld from control-group customers at ``as_of``: customer_id,
    area_id, segment, window_id, event_day, kind, advisory_id (what it would have been)."""
    plan = plan_messages(windows, customers, history, policy, as_of)
    cols = ["customer_id", C.AREA, "segment", "window_id", "event_day", "kind", "advisory_id"]
    return plan.loc[plan["control"], cols].reset_index(drop=True)


def plan_messages(
    windows: pd.DataFrame,
    customers: pd.DataFrame,
    history: pd.DataFrame | None,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
    *,
    restorations: pd.DataFrame | None = None,
    outages: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per message the policy calls for at ``as_of`` (before content), with
    ``control`` True for those withheld from the control group. Pure; vectorised."""
    as_of = _utc_timestamp(as_of, "as_of")
    _require(windows, WINDOW_COLUMNS, "windows")
    _require(customers, CUSTOMER_COLUMNS, "customers")
    repeated = windows["window_id"][windows["window_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"window_id must be unique; repeated: {sorted(map(str, repeated))[:5]}")
    hist = empty_history() if history is None else history
    _require(hist, HISTORY_COLUMNS, "history")
    people = _people(customers, policy)
    live = _live(windows, as_of)
    top = _top_areas(live, policy.max_areas)
    pairs_all = _pairs(live, people, policy)
    pairs = pairs_all.loc[pairs_all[C.AREA].isin(top)]
    best = _one_per_event_day(pairs)
    latest = _latest_state(hist)
    interval = pd.Timedelta(hours=policy.caps.run_interval_h)

    risk = _risk_messages(best, latest, policy, as_of, interval)
    reminders = _reminders(best, latest, people, policy, as_of, interval)
    cancels = _cancellations(latest, pairs_all, people, policy, as_of)
    restored = _restorations(hist, people, restorations, policy, as_of, interval)
    ongoing = _outage_updates(hist, people, outages, policy, as_of)
    plan = pd.concat(
        [f for f in (risk, reminders, cancels, restored, ongoing) if len(f)] or [risk],
        ignore_index=True,
    )
    if plan.empty:
        return _empty_plan()
    plan = plan.assign(message_type=plan["kind"].map(MESSAGE_TYPE))
    opted = np.where(plan["message_type"] == "risk", plan["opt_in_risk"], plan["opt_in_outage"])
    plan = plan.loc[opted.astype(bool)]
    ids = plan["customer_id"].drop_duplicates()
    member = set(ids[in_control_group(ids, policy.control_group.share,
                                      policy.control_group.salt)])
    plan = plan.assign(
        control=plan["customer_id"].isin(member) & (plan["message_type"] == "risk")
    )
    plan = _apply_quiet_hours(plan, policy.quiet_hours)
    plan = plan.assign(advisory_id=_keys(plan, policy.caps.min_shift_h))
    plan = plan.loc[~plan["advisory_id"].isin(set(hist["advisory_id"]))]
    plan = plan.drop_duplicates("advisory_id")
    order = ["rank", "start", C.AREA, "customer_id", "kind", "step_sort"]
    plan = plan.assign(step_sort=-plan["step_h"].fillna(-1))
    return plan.sort_values(order, kind="stable").drop(columns="step_sort").reset_index(drop=True)


def select_windows(windows: pd.DataFrame, max_areas: int, as_of: pd.Timestamp) -> pd.DataFrame:
    """Windows not yet over at ``as_of`` in the ``max_areas`` areas with the best (lowest)
    window rank (new frame, start/end as UTC timestamps)."""
    live = _live(windows, _utc_timestamp(as_of, "as_of"))
    return live.loc[live[C.AREA].isin(_top_areas(live, max_areas))]


def _live(windows: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    start = _utc_column(windows["start"], "windows.start")
    end = _utc_column(windows["end"], "windows.end")
    return windows.assign(start=start, end=end).loc[end > as_of]


def _top_areas(live: pd.DataFrame, max_areas: int) -> list[str]:
    best = live.groupby(C.AREA)["rank"].min().reset_index()
    return list(best.sort_values(["rank", C.AREA], kind="stable").head(max_areas)[C.AREA])


def _people(customers: pd.DataFrame, policy: AdvisorySettings) -> pd.DataFrame:
    """Customers with a fallback chain (payload channel names; customers whose channels the
    segment does not allow are dropped), opt-in flags, control flag and segment settings."""
    unknown = sorted(set(customers["segment"].astype(str)) - set(policy.segments))
    if unknown:
        raise ValueError(
            f"customers have segments {unknown} that the advisory policy lacks; "
            f"known: {sorted(policy.segments)}"
        )
    no_zone = customers.loc[customers[C.TIMEZONE].isna(), "customer_id"]
    if len(no_zone):
        raise ValueError(f"customers without a timezone: {list(no_zone.astype(str))[:5]}")
    chains: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}

    def chain(segment: str, channels: Any) -> tuple[str, ...]:
        key = (segment, tuple(channels) if channels is not None else ())
        if key not in chains:
            chains[key] = fallback_chain(policy.segments[segment].channels, key[1])
        return chains[key]

    people = customers[list(CUSTOMER_COLUMNS)].copy()
    segments = people["segment"].to_numpy(dtype=object)
    channels = people["channels"].to_numpy(dtype=object)
    people["chain"] = pd.Series(
        [chain(s, c) for s, c in zip(segments, channels, strict=True)],
        index=people.index, dtype=object,
    )
    people = people.loc[people["chain"].map(len) > 0]
    for mtype, col in OPT_IN_COLUMNS.items():
        flag = customers.loc[people.index, col] if col in customers.columns else True
        people[f"opt_in_{mtype}"] = pd.Series(flag, index=people.index).fillna(False).astype(bool)
    seg = policy.segments
    people["threshold"] = people["segment"].map({k: v.threshold for k, v in seg.items()})
    people["first_step_h"] = people["segment"].map({k: v.first_step_h for k, v in seg.items()})
    people["critical"] = people["segment"] == "critical"
    people["override"] = people["segment"].map(
        {k: v.quiet_hours_override for k, v in seg.items()}
    ).astype(bool)
    people["control"] = False  # set for planned customers only, see plan_messages
    return people.drop(columns="channels")


def fallback_chain(allowed: Sequence[str], preferred: Sequence[str]) -> tuple[str, ...]:
    """The channels to try, in order: the customer's first choice when the segment allows it,
    then the segment's order over the customer's other channels. Payload names ("push")."""
    have = [c for c in preferred if c in allowed]
    if not have:
        return ()
    rest = [c for c in allowed if c in have[1:]]
    return tuple(PAYLOAD_CHANNEL.get(c, c) for c in [have[0], *rest])


def _pairs(live: pd.DataFrame, people: pd.DataFrame, policy: AdvisorySettings) -> pd.DataFrame:
    """(window, customer) pairs of the same area where the window's peak probability reaches
    the customer's segment threshold, with the event-day in the customer's zone and the
    window's escalation level."""
    cols = ["window_id", C.AREA, C.AREA_NAME, "start", "end", "rank", "peak_prob",
            C.EXPECTED_CUSTOMERS]
    wins = live[cols].assign(
        level=level_index(live["peak_prob"], policy.caps.escalation_levels)
    )
    pairs = wins.merge(people, on=C.AREA, how="inner")
    pairs = pairs.loc[pairs["threshold"] <= pairs["peak_prob"]]
    days = _local_days(pairs[["window_id", "start", C.TIMEZONE]])
    return pairs.merge(days, on=["window_id", C.TIMEZONE], how="left")


def _local_days(frame: pd.DataFrame) -> pd.DataFrame:
    """event_day (YYYY-MM-DD) of each distinct (window_id, timezone): the window start's date
    in that zone."""
    uniq = frame.drop_duplicates(["window_id", C.TIMEZONE])
    days = pd.Series("", index=uniq.index, dtype=object)
    for zone, index in uniq.groupby(C.TIMEZONE, sort=True).groups.items():
        days.loc[index] = uniq.loc[index, "start"].dt.tz_convert(str(zone)).dt.strftime("%Y-%m-%d")
    return uniq[["window_id", C.TIMEZONE]].assign(event_day=days)


def _one_per_event_day(pairs: pd.DataFrame) -> pd.DataFrame:
    keys = ["customer_id", C.AREA, "event_day"]
    best_first = pairs.sort_values(["rank", "start", "window_id"], kind="stable")
    return best_first.drop_duplicates(keys, keep="first")


def _latest_state(hist: pd.DataFrame) -> pd.DataFrame:
    """The last state-setting message (advisory, update, cancellation) per customer, area and
    event-day: h_kind, h_level, h_start, h_end, h_id, h_area_name, h_window_id, h_peak."""
    state = hist.loc[hist["kind"].isin(_STATE_KINDS)]
    state = state.sort_values(["decided_at_utc"], kind="stable")
    last = state.drop_duplicates(["customer_id", C.AREA, "event_day"], keep="last")
    return last.rename(
        columns={
            "kind": "h_kind",
            "level": "h_level",
            "window_start_utc": "h_start",
            "window_end_utc": "h_end",
            "advisory_id": "h_id",
            C.AREA_NAME: "h_area_name",
            "window_id": "h_window_id",
            "peak_prob": "h_peak",
        }
    )[["customer_id", C.AREA, "event_day", "h_kind", "h_level", "h_start", "h_end", "h_id",
       "h_area_name", "h_window_id", "h_peak"]]


def _risk_messages(
    best: pd.DataFrame,
    latest: pd.DataFrame,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
    interval: pd.Timedelta,
) -> pd.DataFrame:
    """New advisories (due before the next run) and updates on material change."""
    merged = best.merge(latest, on=["customer_id", C.AREA, "event_day"], how="left")
    first_step = pd.to_timedelta(merged["first_step_h"], unit="h")
    send_at = (merged["start"] - first_step).clip(lower=as_of)
    new = merged["h_kind"].isna()
    due = merged["start"] - first_step < as_of + interval
    renewed = merged["h_kind"] == RISK_CANCELLED
    shift = pd.Timedelta(hours=policy.caps.min_shift_h)
    told = ~new & ~renewed
    escalated = told & (merged["level"] > merged["h_level"])
    moved = told & ~escalated & (
        ((merged["start"] - merged["h_start"]).abs() >= shift)
        | ((merged["end"] - merged["h_end"]).abs() >= shift)
    )
    kind = np.select([new, renewed | escalated | moved], [RISK_ADVISORY, RISK_UPDATE], "")
    reason = np.select([renewed, escalated, moved], ["renewed", "escalated", "moved"], "")
    out = merged.assign(kind=kind, reason=reason, send_at=send_at, step_h=np.nan,
                        restored=pd.NaT)
    out["step_h"] = np.where(new, merged["first_step_h"], np.nan)
    keep = (new & due) | (out["kind"] == RISK_UPDATE)
    return _plan_columns(out.loc[keep])


def _reminders(
    best: pd.DataFrame,
    latest: pd.DataFrame,
    people: pd.DataFrame,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
    interval: pd.Timedelta,
) -> pd.DataFrame:
    """Reminders at the later advance steps of segments with ``reminders``, due between
    as_of and the next run, at least an hour after the advisory itself; only where an
    advisory was or is being sent for the event (not after a cancellation)."""
    segs = [name for name, seg in policy.segments.items() if seg.reminders and len(seg.steps_h) > 1]
    rows = []
    merged = best.loc[best["segment"].isin(segs)].merge(
        latest, on=["customer_id", C.AREA, "event_day"], how="left"
    )
    merged = merged.loc[merged["h_kind"] != RISK_CANCELLED]
    first_send = (merged["start"] - pd.to_timedelta(merged["first_step_h"], unit="h")).clip(
        lower=as_of
    )
    for name in segs:
        for step in policy.segments[name].steps_h[1:]:
            at = merged["start"] - pd.Timedelta(hours=step)
            ok = (
                (merged["segment"] == name)
                & (at >= as_of)
                & (at < as_of + interval)
                & (at - first_send >= pd.Timedelta(hours=1))
                # told already, or told in this run (a new advisory that is due now)
                & (merged["h_kind"].notna() | (first_send < as_of + interval))
            )
            if ok.any():
                rows.append(
                    merged.loc[ok].assign(
                        kind=RISK_REMINDER, reason="", send_at=at.loc[ok], step_h=float(step),
                        restored=pd.NaT,
                    )
                )
    return _plan_columns(pd.concat(rows, ignore_index=True)) if rows else _empty_plan()


def _cancellations(
    latest: pd.DataFrame,
    pairs_all: pd.DataFrame,
    people: pd.DataFrame,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """"Risk has passed": events told about (last state advisory or update), not over yet,
    for which no live window of the area reaches the customer's threshold that day."""
    active = latest.loc[latest["h_kind"].isin((RISK_ADVISORY, RISK_UPDATE))
                        & (latest["h_end"] > as_of)]
    if active.empty:
        return _empty_plan()
    still = pairs_all[["customer_id", C.AREA, "event_day"]].drop_duplicates()
    gone = active.merge(still, on=["customer_id", C.AREA, "event_day"], how="left",
                        indicator=True)
    gone = gone.loc[gone["_merge"] == "left_only"].drop(columns="_merge")
    gone = gone.merge(people.drop(columns=[C.AREA]), on="customer_id", how="inner")
    out = gone.assign(
        kind=RISK_CANCELLED,
        reason="",
        window_id=gone["h_window_id"],
        area_name=gone["h_area_name"],
        start=gone["h_start"],
        end=gone["h_end"],
        level=gone["h_level"],
        peak_prob=gone["h_peak"],
        expected_customers=0.0,
        rank=np.inf,
        send_at=as_of,
        step_h=np.nan,
        restored=pd.NaT,
    )
    return _plan_columns(out)


def _restorations(
    hist: pd.DataFrame,
    people: pd.DataFrame,
    restorations: pd.DataFrame | None,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
    interval: pd.Timedelta,
) -> pd.DataFrame:
    """Restoration notices: an outage in the area that started within ``caps.min_shift_h`` of
    a window the customer was told about, was restored after they were told (send_after) and
    since the previous run (within one run interval before as_of). One per customer and
    event-day (the latest restoration)."""
    if restorations is None or restorations.empty:
        return _empty_plan()
    _require(restorations, RESTORATION_COLUMNS, "restorations")
    out = restorations.assign(
        start_utc=_utc_column(restorations["start_utc"], "restorations.start_utc"),
        end_utc=_utc_column(restorations["end_utc"], "restorations.end_utc"),
    )
    out = out.loc[(out["end_utc"] <= as_of) & (out["end_utc"] > as_of - interval)]
    told = hist.loc[hist["kind"].isin((RISK_ADVISORY, RISK_UPDATE))]
    told = told.sort_values("decided_at_utc").drop_duplicates(
        ["customer_id", C.AREA, "event_day"], keep="last"
    )
    if out.empty or told.empty:
        return _empty_plan()
    slack = pd.Timedelta(hours=policy.caps.min_shift_h)
    both = told.merge(out[[C.AREA, "start_utc", "end_utc"]], on=C.AREA, how="inner")
    near = (
        (both["start_utc"] >= both["window_start_utc"] - slack)
        & (both["start_utc"] < both["window_end_utc"] + slack)
        & (both["end_utc"] > both["send_after_utc"])
    )
    both = both.loc[near].sort_values("end_utc").drop_duplicates(
        ["customer_id", C.AREA, "event_day"], keep="last"
    )
    both = both.merge(people.drop(columns=[C.AREA]), on="customer_id", how="inner")
    plan = both.assign(
        kind=RESTORATION,
        reason="",
        start=both["window_start_utc"],
        end=both["window_end_utc"],
        expected_customers=0.0,
        rank=np.inf,
        send_at=as_of,
        step_h=np.nan,
        restored=both["end_utc"],
    )
    return _plan_columns(plan)


def _outage_updates(
    hist: pd.DataFrame,
    people: pd.DataFrame,
    outages: pd.DataFrame | None,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """Outage updates: for a customer told about a window, an outage in the area first seen
    within ``caps.min_shift_h`` of it is on the map at as_of; the message gives the estimated
    restoration (P50) and its P10-P90 range, carried as the plan's ``restored``, ``start``
    and ``end``. One per customer and event-day (the outage expected to last longest)."""
    if outages is None or outages.empty:
        return _empty_plan()
    _require(outages, OUTAGE_COLUMNS, "outages")
    out = outages.assign(**{c: _utc_column(outages[c], f"outages.{c}")
                            for c in OUTAGE_COLUMNS[1:]})
    out = out.loc[(out["first_seen_utc"] <= as_of) & (out["restored_p50_utc"] > as_of)]
    told = hist.loc[hist["kind"].isin((RISK_ADVISORY, RISK_UPDATE))]
    told = told.sort_values("decided_at_utc").drop_duplicates(
        ["customer_id", C.AREA, "event_day"], keep="last"
    )
    if out.empty or told.empty:
        return _empty_plan()
    slack = pd.Timedelta(hours=policy.caps.min_shift_h)
    both = told.merge(out[list(OUTAGE_COLUMNS)], on=C.AREA, how="inner")
    near = ((both["first_seen_utc"] >= both["window_start_utc"] - slack)
            & (both["first_seen_utc"] < both["window_end_utc"] + slack))
    both = both.loc[near].sort_values("restored_p50_utc").drop_duplicates(
        ["customer_id", C.AREA, "event_day"], keep="last"
    )
    both = both.merge(people.drop(columns=[C.AREA]), on="customer_id", how="inner")
    plan = both.assign(
        kind=OUTAGE_UPDATE,
        reason="",
        start=both["restored_p10_utc"].clip(lower=as_of),
        end=both["restored_p90_utc"].clip(lower=as_of + pd.Timedelta(minutes=15)),
        expected_customers=0.0,
        rank=np.inf,
        send_at=as_of,
        step_h=np.nan,
        restored=both["restored_p50_utc"],
    )
    return _plan_columns(plan)


_PLAN_COLUMNS = (
    "customer_id", C.AREA, C.AREA_NAME, "window_id", "event_day", "kind", "reason", "step_h",
    "start", "end", "rank", "peak_prob", "level", C.EXPECTED_CUSTOMERS, "send_at", "restored",
    "segment", "language", C.TIMEZONE, "chain", "critical", "override", "synthetic",
    "control", "opt_in_risk", "opt_in_outage",
)


def _plan_columns(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[list(_PLAN_COLUMNS)].copy()
    out["level"] = out["level"].astype(int)
    out["step_h"] = out["step_h"].astype("float64")
    out["rank"] = out["rank"].astype("float64")
    return out


def _empty_plan() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in _PLAN_COLUMNS})
    for col in ("start", "end", "send_at", "restored"):
        frame[col] = pd.Series(dtype="datetime64[ns, UTC]")
    for col in ("step_h", "rank", "peak_prob", C.EXPECTED_CUSTOMERS):
        frame[col] = pd.Series(dtype="float64")
    frame["level"] = pd.Series(dtype="int64")
    for col in ("critical", "override", "control", "opt_in_risk", "opt_in_outage", "synthetic"):
        frame[col] = pd.Series(dtype=bool)
    return frame.assign(held=pd.Series(dtype=bool), message_type=pd.Series(dtype=object),
                        advisory_id=pd.Series(dtype=object))


def quiet_release(send_at: pd.Series, timezone: pd.Series, quiet: QuietHours) -> pd.Series:
    """When each message may go out: ``send_at`` (UTC) itself, or, when it falls in the quiet
    hours of its IANA ``timezone``, the next local ``quiet.end`` o'clock (UTC). Wall-clock
    arithmetic in local time, so a daylight-saving change in the night moves the UTC time of
    the release, not its local hour. Each distinct (time, zone) is computed once."""
    if quiet.start == quiet.end or send_at.empty:
        return send_at.copy()
    times = pd.DatetimeIndex(send_at).tz_convert("UTC")
    out = times.tz_localize(None).to_numpy().copy()  # naive UTC datetime64
    zones = timezone.to_numpy(dtype=object)
    for zone in pd.unique(zones):
        rows = np.flatnonzero(zones == zone)
        these = times[rows]
        uniq = these.unique()
        local = uniq.tz_convert(str(zone))
        hour = local.hour
        if quiet.start > quiet.end:  # over midnight, e.g. 21-8
            in_quiet = (hour >= quiet.start) | (hour < quiet.end)
            next_day = hour >= quiet.start
        else:
            in_quiet = (hour >= quiet.start) & (hour < quiet.end)
            next_day = np.zeros(len(uniq), dtype=bool)
        wall = (local.tz_localize(None).normalize() + pd.to_timedelta(next_day.astype(int), "D")
                + pd.Timedelta(hours=quiet.end))
        release = wall.tz_localize(
            str(zone), nonexistent="shift_forward", ambiguous=np.zeros(len(wall), dtype=bool)
        ).tz_convert("UTC")
        released = np.where(in_quiet, release.tz_localize(None).to_numpy(),
                            uniq.tz_localize(None).to_numpy())
        out[rows] = released[uniq.get_indexer(these)]
    return pd.Series(pd.DatetimeIndex(out).tz_localize("UTC"), index=send_at.index).astype(
        send_at.dtype
    )


def _apply_quiet_hours(plan: pd.DataFrame, quiet: QuietHours) -> pd.DataFrame:
    """Hold messages due in quiet hours until the morning. Critical segments (override) are
    not held for risk messages when the release would come after the window has started.
    Risk messages that could only go out after their window ended are dropped."""
    release = quiet_release(plan["send_at"], plan[C.TIMEZONE], quiet)
    is_risk = plan["kind"] != RESTORATION
    override = is_risk & plan["override"].astype(bool) & (release > plan["start"])
    send = plan["send_at"].where(override, release)
    held = send > plan["send_at"]
    stale = is_risk & (send >= plan["end"])
    return plan.assign(send_at=send, held=held).loc[~stale]


def _keys(plan: pd.DataFrame, shift_h: float) -> list[str]:
    """advisory_key of each planned message, built as text column-wise, hashed row by row.
    Parts after the kind: reminder step; update reason, level and window; the cancelled
    window's id and times."""
    text = lambda col: plan[col].astype(str)  # noqa: E731
    start, end = _iso_strings(plan["start"]), _iso_strings(plan["end"])
    kind = plan["kind"]
    step = plan["step_h"].fillna(0).astype(int).astype(str) + "h"
    update = text("reason") + "|" + plan["level"].astype(str) + "|" + start + "|" + end
    cancel = text("window_id") + "|" + start + "|" + end
    # a new outage update only when the estimate moves by min_shift_h or more
    bucket_h = max(shift_h, 1.0)
    restored = plan["restored"]
    estimate = (restored.dt.floor(f"{int(bucket_h * 60)}min").astype(str)
                if len(plan) and isinstance(restored.dtype, pd.DatetimeTZDtype)
                else pd.Series("", index=plan.index))
    parts = np.select(
        [kind == RISK_REMINDER, kind == RISK_UPDATE, kind == RISK_CANCELLED,
         kind == OUTAGE_UPDATE],
        ["|" + step, "|" + update, "|" + cancel, "|" + estimate.astype(str)],
        "",
    )
    base = (text("customer_id") + "|" + text(C.AREA) + "|" + text("event_day") + "|"
            + kind.astype(str))
    full = (base + pd.Series(parts, index=plan.index, dtype=object)).to_numpy(dtype=object)
    return [hashlib.sha256(t.encode()).hexdigest() for t in full]


def _iso_strings(times: pd.Series) -> pd.Series:
    """ISO-8601 UTC text ("...Z") of each timestamp, "" for NaT; formatted once per value."""
    uniq = times.dropna().unique()
    text = {t: iso_utc(pd.Timestamp(t)) for t in uniq}
    return times.map(text).fillna("").astype(object)


# --- from plan to advisories -----------------------------------------------------------------


def _materialise(
    plan: pd.DataFrame,
    windows: pd.DataFrame,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
    run_id: str | None,
) -> list[Advisory]:
    """Advisories with content; each distinct text is rendered once (per window, kind,
    segment, language, zone, ...), each distinct channel subset of it built once."""
    if plan.empty:
        return []
    as_of = _utc_timestamp(as_of, "as_of")
    runs = windows["run_id"].dropna().astype(str).unique()
    run = run_id or (str(runs[0]) if len(runs) else "")
    drivers_of = dict(zip(windows["window_id"].astype(str), windows["drivers"], strict=True))
    durations = _durations(windows)
    plan = plan.assign(
        language=plan["language"].map(
            {lang: template_language(str(lang), policy) for lang in plan["language"].unique()}
        ),
        window_id=plan["window_id"].astype(str),
    )
    render_cols = ["kind", "reason", "window_id", "start", "end", C.AREA_NAME, "segment",
                   "language", C.TIMEZONE, "step_h", "restored", "level", "peak_prob"]
    group = plan.groupby(render_cols, dropna=False, sort=False).ngroup().to_numpy()
    firsts = plan.assign(group_id=group).drop_duplicates("group_id")
    contents: dict[int, dict[str, Any]] = {}
    for row in firsts.itertuples(index=False):
        cancelled = row.kind in (RISK_CANCELLED, OUTAGE_UPDATE)
        duration = None if cancelled else durations.get(row.window_id)
        contents[int(row.group_id)] = render_content(
            MessageFacts(
                kind=row.kind, reason=row.reason, area_name=str(row.area_name),
                start=row.start, end=row.end, peak_prob=float(row.peak_prob),
                level=int(row.level),
                drivers=tuple(driver_texts(None if cancelled else drivers_of.get(row.window_id),
                                           row.language)),
                segment=row.segment, language=row.language, timezone=row.timezone,
                duration_h=duration,
                step_h=None if pd.isna(row.step_h) else int(row.step_h),
                restored=None if pd.isna(row.restored) else row.restored,
            ),
            policy,
        )
    def col(name: str) -> list[Any]:
        return plan[name].to_numpy(dtype=object).tolist()

    # one content dict per distinct (text, channel chain), shared by the rows that have it
    chain_codes, chains = pd.factorize(plan["chain"].to_numpy(dtype=object))
    combo = group.astype("int64") * max(len(chains), 1) + chain_codes
    combos, inverse = np.unique(combo, return_inverse=True)
    shared = []
    for c in combos.tolist():
        full, chain = contents[c // max(len(chains), 1)], chains[c % max(len(chains), 1)]
        shared.append({ch: full[ch] for ch in (*chain, "webhook") if ch in full})
    row_content = [shared[i] for i in inverse.ravel().tolist()]

    n = len(plan)
    cancelled = plan["kind"].isin((RISK_CANCELLED, OUTAGE_UPDATE)).to_numpy()
    dur = [durations.get(w) if not c else None
           for w, c in zip(col("window_id"), cancelled, strict=True)]
    fields = {
        "advisory_id": col("advisory_id"),
        "run_id": [run] * n,
        "kind": col("kind"),
        "message_type": col("message_type"),
        "reason": col("reason"),
        "customer_id": [str(v) for v in col("customer_id")],
        "area_id": [str(v) for v in col(C.AREA)],
        "area_name": [str(v) for v in col(C.AREA_NAME)],
        "window_id": col("window_id"),
        "event_day": col("event_day"),
        "segment": col("segment"),
        "critical": [bool(v) for v in col("critical")],
        "language": col("language"),
        "timezone": col(C.TIMEZONE),
        "channels": col("chain"),
        "window_start_utc": _iso_strings(plan["start"]).tolist(),
        "window_end_utc": _iso_strings(plan["end"]).tolist(),
        "send_after_utc": _iso_strings(plan["send_at"]).tolist(),
        "held_for_quiet_hours": [bool(v) for v in col("held")],
        "step_h": [None if pd.isna(v) else int(v) for v in col("step_h")],
        "level": [LEVEL_NAMES[int(v)] for v in col("level")],
        "peak_prob": [float(v) for v in col("peak_prob")],
        "expected_customers": [float(v) for v in col(C.EXPECTED_CUSTOMERS)],
        "duration_p50_h": [None if d is None else d[0] for d in dur],
        "duration_p10_h": [None if d is None else d[1] for d in dur],
        "duration_p90_h": [None if d is None else d[2] for d in dur],
        "restored_utc": [r or None for r in _iso_strings(plan["restored"]).tolist()],
        "decided_at_utc": [iso_utc(as_of)] * n,
        "synthetic": [bool(v) for v in col("synthetic")],
        "content": row_content,
    }
    # positional construction (Advisory._make) is several times faster than keywords
    return list(map(Advisory._make, zip(*(fields[f] for f in Advisory._fields), strict=True)))


def _durations(windows: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """window_id -> (p50, p10, p90) hours, for windows with all three (else absent)."""
    if not all(c in windows.columns for c in DURATION_COLUMNS):
        return {}
    vals = windows[["window_id", *DURATION_COLUMNS]].dropna()
    return {
        str(r[0]): (float(r[1]), float(r[2]), float(r[3]))
        for r in vals.itertuples(index=False)
    }


# --- small helpers -----------------------------------------------------------------------------


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}; it has {list(frame.columns)}")


def _utc_timestamp(value: Any, what: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {ts}")
    return ts.tz_convert("UTC")


def _utc_column(values: pd.Series, what: str) -> pd.Series:
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"{what} must hold timezone-aware UTC timestamps, got dtype {values.dtype}"
        )
    return values.dt.tz_convert("UTC")
