"""Hourly risk to ranked risk windows."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from configs.settings import WindowSettings
from features import columns as C
from models.explain import Explanations

WINDOW_COLUMNS = [
    "window_id", C.AREA, C.AREA_NAME, "start", "end", "hours", "peak_prob", "mean_prob",
    "peak_ts", "peak_lift", C.EXPECTED_CUSTOMERS, C.CUSTOMERS_SERVED, "drivers", "rank",
    "model_version", "run_id", "weather_source", "forecast_issue_ts", "forecast_files",
    C.ISSUE_TS,
]


def empty_windows() -> pd.DataFrame:
    """A frame with no windows but the columns and dtypes of one that has some."""
    utc = "datetime64[ns, UTC]"
    dtypes = {"window_id": "object", C.AREA: "object", C.AREA_NAME: "object", "start": utc,
              "end": utc, "hours": "int64", "peak_prob": "float64", "mean_prob": "float64",
              "peak_ts": utc, "peak_lift": "float64", C.EXPECTED_CUSTOMERS: "float64",
              C.CUSTOMERS_SERVED: "int64", "drivers": "object", "rank": "int64",
              "model_version": "object", "run_id": "object", "weather_source": "object",
              "forecast_issue_ts": "object", "forecast_files": "object", C.ISSUE_TS: utc}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in WINDOW_COLUMNS})


def _window_id(area: str, start: pd.Timestamp, issue: pd.Timestamp) -> str:
    key = f"{area}|{start.isoformat()}|{issue.isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def hot_hours(hourly: pd.DataFrame, cfg: WindowSettings) -> pd.Series:
    """True where risk is above the absolute threshold and ``min_lift`` times the area's
    usual (climatological) rate for that hour."""
    return (hourly[C.PROB] >= cfg.min_probability) & (
        hourly[C.PROB] >= cfg.min_lift * hourly[C.CLIMATOLOGY]
    )


def build_windows(
    hourly: pd.DataFrame,
    areas: pd.DataFrame,
    explanations: Explanations,
    cfg: WindowSettings,
    meta: dict[str, str],
) -> pd.DataFrame:
    """Maximal runs of hot hours per area (runs split by at most ``max_gap_h`` cool hours are
    merged), ranked by expected customers affected. ``mean_prob`` and the expected customers
    cover every hour from start to end, the merged cooler hours included.

    ``hourly`` holds AREA, TS, ISSUE_TS, PROB, CLIMATOLOGY, EXPECTED_CUSTOMERS (per hour);
    ``explanations`` gives the drivers of each hourly row (the peak hour's are shown);
    ``meta`` carries model_version, run_id, weather_source and, when a forecast scored the
    horizon, forecast_issue_ts (UTC, ISO) and forecast_files (names joined by ";"). The window's expected
    customers are the sum over its hours, never more than the area's customers served.
    """
    hot = hourly[hot_hours(hourly, cfg)].sort_values([C.AREA, C.TS])
    if hot.empty:
        return empty_windows()
    gap = hot.groupby(C.AREA)[C.TS].diff() > pd.Timedelta(hours=cfg.max_gap_h + 1)
    new_area = hot[C.AREA] != hot[C.AREA].shift()
    run = (gap | new_area).cumsum()
    served = areas.set_index(C.AREA)[C.CUSTOMERS_SERVED]
    names = areas.set_index(C.AREA)[C.AREA_NAME]
    rows = []
    for _, g in hot.groupby(run, sort=False):
        area = g[C.AREA].iloc[0]
        start, last = g[C.TS].iloc[0], g[C.TS].iloc[-1]
        hours = int((last - start) / pd.Timedelta(hours=1)) + 1
        if hours < cfg.min_hours:
            continue
        span = hourly[(hourly[C.AREA] == area) & (hourly[C.TS] >= start) & (hourly[C.TS] <= last)]
        peak = g.loc[g[C.PROB].idxmax()]
        issue = g[C.ISSUE_TS].iloc[0]
        rows.append(
            {
                "window_id": _window_id(area, start, issue),
                C.AREA: area,
                C.AREA_NAME: names.get(area, area),
                "start": start,
                "end": last + pd.Timedelta(hours=1),
                "hours": hours,
                "peak_prob": float(span[C.PROB].max()),
                "mean_prob": float(span[C.PROB].mean()),
                "peak_ts": peak[C.TS],
                "peak_lift": float(peak[C.PROB] / max(peak[C.CLIMATOLOGY], 1e-9)),
                C.EXPECTED_CUSTOMERS: float(min(span[C.EXPECTED_CUSTOMERS].sum(),
                                                served.get(area, np.inf))),
                C.CUSTOMERS_SERVED: int(served.get(area, 0)),
                "drivers": explanations.drivers(peak.name, cfg.top_drivers),
                "model_version": meta["model_version"],
                "run_id": meta["run_id"],
                "weather_source": meta["weather_source"],
                "forecast_issue_ts": meta.get("forecast_issue_ts", ""),
                "forecast_files": meta.get("forecast_files", ""),
                C.ISSUE_TS: issue,
            }
        )
    if not rows:
        return empty_windows()
    out = pd.DataFrame(rows).sort_values(
        [C.EXPECTED_CUSTOMERS, "peak_prob", C.AREA], ascending=[False, False, True]
    )
    out["rank"] = np.arange(1, len(out) + 1)
    return out[WINDOW_COLUMNS].reset_index(drop=True)
