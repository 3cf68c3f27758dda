"""Feedback and outcomes: did the advisories help, and whom did they reach?

:func:`read_feedback` reads customer replies (STOP, "was this useful", "did the outage
happen") from CSV or JSONL; :func:`advisory_report` joins the advisories of a run with the
outages that followed (from the outage history), the feedback, delivery states from the
outbox and the control group into a report per run and per event (area and event-day). All
pure except the reader. Times are UTC; lead times in hours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import columns as C

FEEDBACK_KINDS = ("opt_out", "useful", "not_useful", "outage_yes", "outage_no", "other")
# Replies as customers type them (upper-cased, trimmed); carrier keywords for SMS opt-out.
_REPLIES = {
    "opt_out": {"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "TD",
                "退订", "取消"},
    "useful": {"USEFUL", "YES USEFUL", "Y", "1", "有用"},
    "not_useful": {"NOT USEFUL", "NO USEFUL", "N", "2", "没用", "无用"},
    "outage_yes": {"OUTAGE YES", "OUTAGE", "POWER OUT", "3", "停电了"},
    "outage_no": {"OUTAGE NO", "NO OUTAGE", "4", "没停电"},
}
_RISK_KINDS = ("risk_advisory", "risk_update", "risk_reminder")
_ACK_COLUMNS = ("acknowledged_at", "acked_at", "acknowledged")


def classify_reply(text: str) -> str:
    """One of FEEDBACK_KINDS for a free-text reply ("stop" -> opt_out, "有用" -> useful)."""
    key = " ".join(str(text).upper().split())
    return next((kind for kind, words in _REPLIES.items() if key in words), "other")


def read_feedback(path: Path) -> pd.DataFrame:
    """Feedback from a CSV or JSONL file with ``customer_id``, ``received_utc`` (ISO-8601)
    and either ``type`` (one of FEEDBACK_KINDS) or ``text`` (a reply, classified); optional
    ``advisory_id``. Returns customer_id, advisory_id, received_utc (UTC), kind. Raises
    ValueError naming the file and the missing column."""
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        raw = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    return normalise_feedback(raw, str(path))


def normalise_feedback(raw: pd.DataFrame, source: str = "feedback") -> pd.DataFrame:
    """See :func:`read_feedback`; ``source`` names the input in errors."""
    for col in ("customer_id", "received_utc"):
        if col not in raw.columns:
            raise ValueError(f"{source}: column {col!r} missing; it has {list(raw.columns)}")
    if "type" in raw.columns:
        kind = raw["type"].astype(str).str.strip().str.lower()
        bad = sorted(set(kind) - set(FEEDBACK_KINDS))
        if bad:
            raise ValueError(f"{source}: unknown feedback types {bad[:5]}; use {FEEDBACK_KINDS}")
    elif "text" in raw.columns:
        kind = raw["text"].map(classify_reply)
    else:
        raise ValueError(f"{source}: needs a 'type' or a 'text' column")
    advisory = raw["advisory_id"] if "advisory_id" in raw.columns else None
    return pd.DataFrame({
        "customer_id": raw["customer_id"].astype(str).to_numpy(),
        "advisory_id": None if advisory is None else advisory.astype(object).to_numpy(),
        "received_utc": pd.to_datetime(raw["received_utc"], utc=True, format="ISO8601"),
        "kind": kind.to_numpy(),
    })


def apply_opt_outs(customers: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Customers (new frame) with ``opt_in_risk`` and ``opt_in_outage`` False for everyone
    who replied STOP (or TD, 退订...): a carrier-level STOP ends every message type. Missing
    opt-in columns are added (True for the others)."""
    stopped = set(feedback.loc[feedback["kind"] == "opt_out", "customer_id"].astype(str))
    out = customers.copy()
    gone = out["customer_id"].astype(str).isin(stopped).to_numpy()
    for col in ("opt_in_risk", "opt_in_outage"):
        current = out[col].fillna(False).astype(bool) if col in out.columns else True
        out[col] = pd.Series(current, index=out.index) & ~gone
    return out


def advisories_frame(payloads: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The columns of advisory payloads (advisories.jsonl or the outbox) the report needs,
    times as UTC timestamps."""
    cols = ["advisory_id", "kind", "customer_id", C.AREA, "event_day", "segment", "critical",
            "window_start_utc", "window_end_utc", "send_after_utc"]
    frame = pd.DataFrame([{c: p.get(c) for c in cols} for p in payloads], columns=cols)
    for col in ("window_start_utc", "window_end_utc", "send_after_utc"):
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    frame["critical"] = frame["critical"].fillna(False).astype(bool)
    return frame


def advisory_report(
    advisories: pd.DataFrame,
    outages: pd.DataFrame,
    *,
    feedback: pd.DataFrame | None = None,
    delivery: pd.DataFrame | None = None,
    control: pd.DataFrame | None = None,
    slack_h: float = 0.0,
) -> dict[str, Any]:
    """Report per run and per event (area_id, event_day).

    - ``advisories``: :func:`advisories_frame` of the run's messages.
    - ``outages``: outage events after the fact (AREA, EV_START; EV_PLANNED optional, planned
      ones are not counted).
    - ``feedback``: :func:`read_feedback`; ``delivery``: outbox rows (idempotency_key, state,
      and an acknowledgement column if the outbox has one); ``control``: the run's
      control-group record (customer_id, area_id, event_day).

    Precision: share of risk messages whose area had an unplanned outage starting within the
    window (± ``slack_h`` hours). Lead time: hours from send_after to the first such outage
    start. Opt-out rate: customers messaged who replied STOP (or TD) after the first message.
    """
    adv = advisories.loc[advisories["kind"].isin(_RISK_KINDS)]
    hit = _first_outage(adv, outages, slack_h)
    adv = adv.assign(outage_start=hit, followed=hit.notna())
    adv = adv.assign(lead_h=(adv["outage_start"] - adv["send_after_utc"]) / pd.Timedelta(hours=1))
    per_customer = advisories.groupby("customer_id").size()
    report: dict[str, Any] = {
        "messages": int(len(advisories)),
        "by_kind": {str(k): int(v) for k, v in advisories["kind"].value_counts().items()},
        "customers_messaged": int(per_customer.size),
        "messages_per_customer": {
            "mean": _round(per_customer.mean()), "max": int(per_customer.max() or 0)
            if len(per_customer) else 0},
        "risk_messages": int(len(adv)),
        "precision": _round(adv["followed"].mean()),
        "lead_time_h": _lead_summary(adv),
        "critical": _critical(advisories, delivery),
        "feedback": _feedback_summary(advisories, feedback),
        "control_group": _control_summary(control, outages, slack_h),
        "per_event": _per_event(adv, advisories, feedback),
    }
    return report


def _first_outage(adv: pd.DataFrame, outages: pd.DataFrame, slack_h: float) -> pd.Series:
    """Start (UTC) of the first unplanned outage in the advisory's area within its window
    (± slack), NaT when none."""
    result = pd.Series(pd.NaT, index=adv.index, dtype="datetime64[ns, UTC]")
    if adv.empty or outages.empty:
        return result
    events = outages
    if C.EV_PLANNED in events.columns:
        events = events.loc[~events[C.EV_PLANNED].fillna(False).astype(bool)]
    events = events[[C.AREA, C.EV_START]].assign(**{C.AREA: events[C.AREA].astype(str)})
    slack = pd.Timedelta(hours=slack_h)
    windows = adv[[C.AREA, "window_start_utc", "window_end_utc"]].drop_duplicates()
    both = windows.assign(**{C.AREA: windows[C.AREA].astype(str)}).merge(events, on=C.AREA)
    inside = both.loc[(both[C.EV_START] >= both["window_start_utc"] - slack)
                      & (both[C.EV_START] < both["window_end_utc"] + slack)]
    first = inside.groupby([C.AREA, "window_start_utc", "window_end_utc"])[C.EV_START].min()
    keys = pd.MultiIndex.from_frame(adv[[C.AREA, "window_start_utc", "window_end_utc"]].astype(
        {C.AREA: str}))
    values = first.reindex(keys).to_numpy()
    return pd.Series(values, index=adv.index).astype("datetime64[ns, UTC]")


def _lead_summary(adv: pd.DataFrame) -> dict[str, Any]:
    lead = adv.loc[adv["followed"], "lead_h"]
    if lead.empty:
        return {"followed": 0, "median": None, "min": None, "share_at_least_24h": None}
    return {"followed": int(len(lead)), "median": _round(lead.median()),
            "min": _round(lead.min()), "share_at_least_24h": _round((lead >= 24).mean())}


def _critical(advisories: pd.DataFrame, delivery: pd.DataFrame | None) -> dict[str, Any]:
    crit = advisories.loc[advisories["critical"]]
    out: dict[str, Any] = {"customers_advised": int(crit["customer_id"].nunique())}
    if delivery is None or delivery.empty:
        out.update(reached=None, acknowledged=None,
                   note="no delivery states: the outbox has not been dispatched")
        return out
    states = crit.merge(delivery, left_on="advisory_id", right_on="idempotency_key", how="left")
    out["reached"] = int(states.loc[states["state"] == "sent", "customer_id"].nunique())
    ack = next((c for c in _ACK_COLUMNS if c in delivery.columns), None)
    if ack is None:
        out["acknowledged"] = None
        out["note"] = "the outbox has no acknowledgement column"
    else:
        acked = states[ack].notna() & (states[ack].astype(str) != "0") & (
            states[ack].astype(str).str.lower() != "false")
        out["acknowledged"] = int(states.loc[acked, "customer_id"].nunique())
    return out


def _feedback_summary(advisories: pd.DataFrame, feedback: pd.DataFrame | None) -> dict[str, Any]:
    messaged = advisories.groupby("customer_id")["send_after_utc"].min()
    if feedback is None or feedback.empty or messaged.empty:
        return {"replies": 0, "opt_out_rate": None, "useful_rate": None,
                "outage_confirmed": 0, "outage_denied": 0}
    fb = feedback.loc[feedback["customer_id"].isin(messaged.index)]
    fb = fb.loc[fb["received_utc"] >= fb["customer_id"].map(messaged)]
    counts = fb["kind"].value_counts()
    useful, not_useful = int(counts.get("useful", 0)), int(counts.get("not_useful", 0))
    stopped = fb.loc[fb["kind"] == "opt_out", "customer_id"].nunique()
    return {
        "replies": int(len(fb)),
        "opt_out_rate": _round(stopped / len(messaged)),
        "useful_rate": _round(useful / (useful + not_useful)) if useful + not_useful else None,
        "outage_confirmed": int(counts.get("outage_yes", 0)),
        "outage_denied": int(counts.get("outage_no", 0)),
    }


def _control_summary(control: pd.DataFrame | None, outages: pd.DataFrame,
                     slack_h: float) -> dict[str, Any]:
    if control is None or control.empty:
        return {"customers_withheld": 0}
    return {
        "customers_withheld": int(control["customer_id"].nunique()),
        "messages_withheld": int(len(control)),
        "note": "compare complaints and calls of these customers with the advised ones "
                "of the same areas and days",
    }


def _per_event(adv: pd.DataFrame, advisories: pd.DataFrame,
               feedback: pd.DataFrame | None) -> list[dict[str, Any]]:
    rows = []
    keys = [C.AREA, "event_day"]
    for (area, day), group in advisories.groupby(keys, sort=True):
        risk = adv.loc[(adv[C.AREA] == area) & (adv["event_day"] == day)]
        lead = risk.loc[risk["followed"], "lead_h"]
        stops = 0
        if feedback is not None and not feedback.empty:
            first = group.groupby("customer_id")["send_after_utc"].min()
            fb = feedback.loc[(feedback["kind"] == "opt_out")
                              & feedback["customer_id"].isin(first.index)]
            after = fb["received_utc"] >= fb["customer_id"].map(first)
            stops = int(fb.loc[after, "customer_id"].nunique())
        rows.append({
            "area_id": str(area), "event_day": str(day),
            "messages": int(len(group)), "customers": int(group["customer_id"].nunique()),
            "critical_customers": int(group.loc[group["critical"], "customer_id"].nunique()),
            "outage_followed": bool(risk["followed"].any()) if len(risk) else None,
            "precision": _round(risk["followed"].mean()) if len(risk) else None,
            "lead_time_h_median": _round(lead.median()) if len(lead) else None,
            "opt_outs": stops,
        })
    return rows


def _round(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), 3)
