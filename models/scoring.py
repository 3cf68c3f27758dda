"""Scoring the coming hours and evaluating a model on a later period."""

from __future__ import annotations

import numpy as np
import pandas as pd

from configs.settings import FeatureSettings
from features import columns as C
from features.build import make_rows, scoring_rows
from features.labels import HourlyPanel
from models.explain import Explanations
from models.metrics import evaluate
from models.train import RiskModel


def score_horizon(
    model: RiskModel,
    panel: HourlyPanel,
    areas: pd.DataFrame,
    weather_hourly: pd.DataFrame,
    as_of: pd.Timestamp,
    cfg: FeatureSettings,
) -> tuple[pd.DataFrame, Explanations]:
    """Hourly risk for every area over [as_of, as_of + H) and what drove each hour.

    ``weather_hourly`` is the station's weather for every hour of the panel (replay), or
    per (AREA, TS) for the horizon (from a forecast, ``features.forecast_weather``).

    Columns: AREA, TS, ISSUE_TS, LEAD_H, PROB, CLIMATOLOGY, ``lift``, EXPECTED_CUSTOMERS
    (customers expected to lose power in the hour, capped by customers served), MODEL_KIND.
    """
    a, t, lead = scoring_rows(panel, as_of, model.horizon_h)
    rows = make_rows(panel, areas, weather_hourly, model.climatology, a, t, lead, cfg)
    prob = model.predict(rows)
    served = areas.set_index(C.AREA)[C.CUSTOMERS_SERVED].reindex(rows[C.AREA]).to_numpy(float)
    per_hour = model.customers_per_outage_hour.reindex(rows[C.AREA]).fillna(
        model.customers_per_outage_hour.median()).to_numpy(float)
    hourly = pd.DataFrame(
        {
            C.AREA: rows[C.AREA].to_numpy(),
            C.TS: rows[C.TS].to_numpy(),
            C.ISSUE_TS: rows[C.ISSUE_TS].to_numpy(),
            C.LEAD_H: lead.astype("int64"),
            C.PROB: prob,
            C.CLIMATOLOGY: rows["clim_rate"].to_numpy(float),
            C.EXPECTED_CUSTOMERS: np.minimum(prob * per_hour, served),
            C.MODEL_KIND: model.kinds(rows[C.AREA].to_numpy()),
        }
    )
    hourly["lift"] = hourly[C.PROB] / np.maximum(hourly[C.CLIMATOLOGY], 1e-9)
    return hourly, Explanations(rows, model.contributions)


def evaluate_model(model: RiskModel, test_rows: pd.DataFrame) -> dict:
    """Model against climatology on labelled rows of a period later than training: overall,
    per lead bucket, and split by which model (per-area or pooled) scored the area."""
    known = test_rows[test_rows[C.LABEL].notna()].copy()
    known[C.PROB] = model.predict(known)
    known[C.MODEL_KIND] = model.kinds(known[C.AREA].to_numpy())
    return evaluate_predictions(known)


def evaluate_predictions(known: pd.DataFrame) -> dict:
    """:func:`evaluate_model` on rows that already carry PROB and MODEL_KIND."""
    out = evaluate(known, C.LABEL, C.PROB, "clim_rate", C.LEAD_H)
    out["by_model_kind"] = {
        kind: evaluate(part, C.LABEL, C.PROB, "clim_rate", C.LEAD_H)["overall"]
        for kind, part in known.groupby(C.MODEL_KIND)
    }
    out["test_start"] = str(known[C.TS].min())
    out["test_end"] = str(known[C.TS].max())
    return out


def default_issue_time(history_end: pd.Timestamp, weather: pd.DataFrame, tz: str,
                       horizon_h: int) -> pd.Timestamp:
    """The latest issue time (UTC, on the hour) whose whole horizon has outage history and
    weather to replay. ``weather`` is daily, by the station's local day (zone ``tz``)."""
    days = weather.dropna(subset=list(C.WEATHER_COLUMNS), how="all")[C.WX_DATE]
    weather_end = (pd.Timestamp(days.max()) + pd.Timedelta(days=1)).tz_localize(tz)
    end = min(history_end, weather_end.tz_convert("UTC")).floor("h")
    return end - pd.Timedelta(hours=horizon_h)


def resolve_issue_time(as_of: str | None, panel: HourlyPanel, weather: pd.DataFrame,
                       horizon_h: int, tz: str, *, replay: bool = True) -> pd.Timestamp:
    """The issue time of a run (UTC, on the hour): ``as_of`` if given and inside the history
    (with at least 7 days of history before it), else :func:`default_issue_time`. With
    ``replay`` the whole horizon must have observed weather; a forecast does not need it."""
    if as_of is None:
        return default_issue_time(panel.history_end, weather, tz, horizon_h)
    ts = pd.Timestamp(as_of)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.floor("h"):
        raise ValueError(f"--as-of must be on the hour, got {as_of}")
    if not panel.hours[0] + pd.Timedelta(days=7) <= ts <= panel.history_end:
        raise ValueError(
            f"--as-of {ts.isoformat()} is outside the outage history "
            f"{panel.hours[0].isoformat()} .. {panel.history_end.isoformat()} "
            "(at least 7 days of history are needed before it)"
        )
    latest = default_issue_time(panel.history_end, weather, tz, horizon_h)
    if replay and ts > latest:
        raise ValueError(
            f"--as-of {ts.isoformat()} leaves no observed weather to replay for the whole "
            f"{horizon_h} h horizon; the latest possible is {latest.isoformat()}"
        )
    return ts
