"""Restoration time: which outages have a trustworthy end, and what was known when each was
first reported (or k hours later).

The target is the time from a moment ``t`` (the first report plus ``elapsed_h`` hours) to
restoration (``EV_END``, the first scrape without the record), in hours. Every feature is
computed from what the map showed at or before ``t``: the record's first cause and customer
count, the utility's first comment, outages then open and recently reported, customers then
out (counted with their customers at first report, never the later maximum), and the
previous local day's weather. A test rewrites everything after ``t`` and checks that no
feature moves.

Censoring: the end of an outage that disappeared across a scraper outage is only known to
lie between the last sighting and the next scrape (``EV_END_UNCERTAINTY_MIN`` large); such
outages are *interval-censored* and are kept out of fitting and scoring, and counted. An
outage still open at a cut-off (the end of training) is *right-censored* there: it is left
out of the fit, because its duration was not known yet.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from configs.settings import FeatureSettings
from features import columns as C
from features.build import weather_by_hour
from features.contracts import ContractError, ContractResult, Rule, Suite, check

log = logging.getLogger(__name__)

# Columns of duration rows
T = "t_utc"  # the moment of the estimate: first report + ELAPSED_H, UTC
ELAPSED_H = "elapsed_h"  # hours since the first report
REMAINING_H = "remaining_h"  # target: hours from T to restoration
STATUS = "end_status"  # CLEAN, INTERVAL (end uncertain), OPEN (right-censored at the cut-off)
CLEAN, INTERVAL, OPEN = "clean", "interval_censored", "right_censored"
UTILITY_ETR_H = "utility_etr_h"  # hours from T to the utility's estimate in effect at T

COMMENT_KINDS = ("estimate", "assessing", "storm", "none")
_STORM = "Due to the number of outages"
_ASSESSING = ("We are aware of outages", "The previous estimated time of restoration has expired")

CATEGORICAL = ("cause", "area", "comment")
NUMERIC = (
    ELAPSED_H,
    "log_customers",
    "customers_is_floor",
    "since_start_h",
    "utility_gave_etr",
    "lat",
    "lon",
    "local_hour",
    "weekday",
    "month",
    "terr_open",
    "terr_customers_out_log",
    "area_open",
    "terr_new_3h",
    "terr_new_24h",
    "area_new_24h",
    "storm_comments_6h",
    "wx_prev_prcp_mm",
    "wx_prev_prcp_3d_mm",
    "wx_prev_tmax_c",
    "wx_prev_tmin_c",
    "wx_prev_snow_mm",
)
FEATURES = (*CATEGORICAL, *NUMERIC)

CHANGELOG_SUITE = Suite(
    name="lgeku_changelog",
    required_columns=("scrape_time_utc", "change", "key", "etr", "comments"),
    rules=(
        Rule("_scrape_time", "not_null", hint="scrape_time_utc must be ISO-8601 UTC"),
        Rule("change", "in_set", values=("NEW", "CHANGED", "REMOVED"),
             hint="change is NEW, CHANGED or REMOVED"),
        Rule("key", "not_null", hint="every change names its record_key"),
    ),
)


@dataclass(frozen=True)
class UtilityUpdates:
    """What the utility published over time, from the change log."""

    first_comment: pd.Series  # source id -> COMMENT_KINDS value at first report
    etr: pd.DataFrame  # source id, ts (UTC), etr (UTC or NaT): each published estimate, by ts
    storm_times: np.ndarray  # datetime64[ns] UTC of new records posted in storm mode, sorted


def comment_kind(text: pd.Series) -> pd.Series:
    """Map the utility's boilerplate comment to a COMMENT_KINDS value."""
    text = text.fillna("").astype(str)
    kind = np.where(text.str.startswith(_STORM), "storm",
                    np.where(text.str.startswith(_ASSESSING), "assessing",
                             np.where(text.str.len() > 0, "estimate", "none")))
    return pd.Series(kind, index=text.index)


def read_lgeku_changelog(
    path: Path, quarantine_dir: Path | None = None, max_quarantine_share: float = 0.05
) -> tuple[UtilityUpdates, ContractResult]:
    """Read the LG&E/KU change log (one row per NEW/CHANGED/REMOVED record per scrape)."""
    if not path.is_file():
        raise ContractError(f"input file not found: {path} (check FOREWARN_DATA_DIR / the profile)")
    try:
        raw = pd.read_csv(path, low_memory=False, usecols=lambda c: c in {
            "scrape_time_utc", "change", "key", "etr", "comments"}, dtype="string")
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError) as exc:
        raise ContractError(f"cannot read {path}: {exc}") from exc
    if "scrape_time_utc" in raw.columns:
        raw = raw.assign(_scrape_time=pd.to_datetime(raw["scrape_time_utc"], format="ISO8601",
                                                     utc=True, errors="coerce"))
    suite = replace(CHANGELOG_SUITE, max_quarantine_share=max_quarantine_share)
    good, result = check(raw, suite, source=path, quarantine_dir=quarantine_dir)
    good = good.sort_values("_scrape_time", kind="stable")
    posted = good[good["change"] != "REMOVED"]
    new = posted[posted["change"] == "NEW"].drop_duplicates("key")
    kinds = comment_kind(new["comments"])
    first_comment = pd.Series(kinds.to_numpy(), index=new["key"].astype(str).to_numpy())
    etr_text = posted["etr"].where(posted["etr"] != "ETR-NULL")
    etr = pd.DataFrame({
        C.EV_SOURCE_ID: posted["key"].astype(str).to_numpy(),
        "ts": posted["_scrape_time"].to_numpy(),
        "etr": pd.to_datetime(etr_text, format="ISO8601", utc=True, errors="coerce").to_numpy(),
    })
    storm = new.loc[kinds.to_numpy() == "storm", "_scrape_time"]
    return UtilityUpdates(first_comment, etr, _ns(storm)), result


def _ns(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    return np.sort(pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8)


def duration_sample(events: pd.DataFrame, max_end_uncertainty_min: float,
                    cutoff: pd.Timestamp | None = None) -> pd.DataFrame:
    """Unplanned, single (not cluster), first-issued outage records with their end status.

    Duration is measured from the first report (``EV_FIRST_SEEN``). STATUS is CLEAN when the
    end is known to within ``max_end_uncertainty_min``, INTERVAL when it fell in a scraper
    outage, OPEN when there is no end or it lies after ``cutoff`` (UTC)."""
    keep = (~events[C.EV_PLANNED] & ~events[C.EV_CLUSTER] & events[C.EV_DUPLICATE_OF].isna()
            & events[C.EV_FIRST_SEEN].notna())
    sample = events[keep]
    status = np.where(sample[C.EV_END].isna(), OPEN,
                      np.where(sample[C.EV_END_UNCERTAINTY_MIN] > max_end_uncertainty_min,
                               INTERVAL, CLEAN))
    if cutoff is not None:
        status = np.where(sample[C.EV_END] > cutoff, OPEN, status)
    return sample.assign(**{STATUS: status}).reset_index(drop=True)


class GridState:
    """The state of the map at any moment, from the events: outages open (reported and not
    yet gone) and customers out (counted at first report), territory-wide and per area, and
    outages reported recently. Everything at time t uses reports and restorations at or
    before t only."""

    def __init__(self, events: pd.DataFrame, updates: UtilityUpdates | None = None) -> None:
        counted = events[~events[C.EV_PLANNED] & events[C.EV_DUPLICATE_OF].isna()
                         & events[C.EV_FIRST_SEEN].notna()]
        seen = _ns(counted[C.EV_FIRST_SEEN])
        order = np.argsort(pd.DatetimeIndex(counted[C.EV_FIRST_SEEN]).as_unit("ns").asi8,
                           kind="stable")
        self._seen = seen
        self._seen_customers = np.concatenate(
            [[0], np.cumsum(counted[C.EV_CUSTOMERS_FIRST].to_numpy("float64")[order])])
        end = pd.DatetimeIndex(counted[C.EV_END]).tz_convert("UTC").as_unit("ns")
        known_end = ~end.isna()
        end_order = np.argsort(end[known_end].asi8, kind="stable")
        self._end = end[known_end].asi8[end_order]
        self._end_customers = np.concatenate([[0], np.cumsum(
            counted.loc[known_end, C.EV_CUSTOMERS_FIRST].to_numpy("float64")[end_order])])
        self._by_area: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for area, grp in counted.groupby(C.AREA, observed=True, sort=False):
            ends = pd.DatetimeIndex(grp[C.EV_END]).tz_convert("UTC").as_unit("ns")
            self._by_area[str(area)] = (_ns(grp[C.EV_FIRST_SEEN]),
                                        np.sort(ends[~ends.isna()].asi8))
        self._storm = updates.storm_times if updates is not None else np.array([], "int64")

    def at(self, times: pd.Series, areas: pd.Series) -> pd.DataFrame:
        """Grid-state features at each time (UTC) for the area beside it."""
        t = pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8
        hour = 3_600_000_000_000
        started = np.searchsorted(self._seen, t, side="right")
        ended = np.searchsorted(self._end, t, side="right")
        customers_out = self._seen_customers[started] - self._end_customers[ended]
        area_open = np.zeros(len(t))
        area_new = np.zeros(len(t))
        codes = areas.astype(str).to_numpy()
        for area in np.unique(codes):
            idx = np.flatnonzero(codes == area)
            seen, end = self._by_area.get(area, (np.array([], "int64"), np.array([], "int64")))
            n_seen = np.searchsorted(seen, t[idx], side="right")
            area_open[idx] = n_seen - np.searchsorted(end, t[idx], side="right")
            area_new[idx] = n_seen - np.searchsorted(seen, t[idx] - 24 * hour, side="right")
        return pd.DataFrame({
            "terr_open": started - ended,
            "terr_customers_out_log": np.log1p(np.clip(customers_out, 0, None)),
            "area_open": area_open,
            "terr_new_3h": started - np.searchsorted(self._seen, t - 3 * hour, side="right"),
            "terr_new_24h": started - np.searchsorted(self._seen, t - 24 * hour, side="right"),
            "area_new_24h": area_new,
            "storm_comments_6h": np.searchsorted(self._storm, t, side="right")
            - np.searchsorted(self._storm, t - 6 * hour, side="right"),
        }, index=times.index)

    def customers_out(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Customers out territory-wide (counted at first report) at each time."""
        t = times.tz_convert("UTC").as_unit("ns").asi8
        started = np.searchsorted(self._seen, t, side="right")
        ended = np.searchsorted(self._end, t, side="right")
        return np.clip(self._seen_customers[started] - self._end_customers[ended], 0, None)


def rows_at_elapsed(sample: pd.DataFrame, elapsed_h: float, state: GridState,
                    weather_daily: pd.DataFrame, station_tz: str, features: FeatureSettings,
                    updates: UtilityUpdates | None = None,
                    area_timezones: pd.Series | None = None) -> pd.DataFrame:
    """Rows at ``first report + elapsed_h`` for the outages of ``sample`` still open then
    (all of them at 0)."""
    t = sample[C.EV_FIRST_SEEN] + pd.Timedelta(hours=elapsed_h)
    still_open = ~(sample[C.EV_END] <= t).to_numpy() if elapsed_h > 0 else np.ones(
        len(sample), bool)
    return duration_rows(sample[still_open], t[still_open], state, weather_daily, station_tz,
                         features, updates, area_timezones)


def duration_rows(
    sample: pd.DataFrame,
    t: pd.Series,
    state: GridState,
    weather_daily: pd.DataFrame,
    station_tz: str,
    features: FeatureSettings,
    updates: UtilityUpdates | None = None,
    area_timezones: pd.Series | None = None,
    state_t: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Feature rows of the outages in ``sample`` at the times ``t`` (UTC, aligned with
    sample), with REMAINING_H (hours from t to restoration; NaN where the end is not CLEAN)
    and the utility's estimate in effect at t (UTILITY_ETR_H, hours from t; NaN without one).

    The map is read at t, or at ``state_t`` when given (scoring a future moment from what is
    known at the as-of time)."""
    ev = sample.reset_index(drop=True)
    t = pd.Series(pd.DatetimeIndex(t).tz_convert("UTC"))
    remaining = (ev[C.EV_END] - t).dt.total_seconds() / 3600
    comment = (updates.first_comment.reindex(ev[C.EV_SOURCE_ID].to_numpy()).fillna("none")
               .to_numpy() if updates is not None else np.full(len(ev), "none"))
    local = t.dt.tz_convert(station_tz)
    local_hour = local.dt.hour.to_numpy().astype("float64")
    if area_timezones is not None:  # each area's own clock where known
        zones = ev[C.AREA].astype(str).map(area_timezones).fillna(station_tz)
        for zone in zones.unique():
            m = (zones == zone).to_numpy()
            local_hour[m] = t[m].dt.tz_convert(zone).dt.hour.to_numpy()
    rows = pd.DataFrame({
        C.EV_ID: ev[C.EV_ID].to_numpy(),
        C.EV_SOURCE_ID: ev[C.EV_SOURCE_ID].to_numpy(),
        C.AREA: ev[C.AREA].astype(str).to_numpy(),
        T: t.to_numpy(),
        STATUS: ev[STATUS].to_numpy(),
        REMAINING_H: np.where(ev[STATUS] == CLEAN, remaining, np.nan),
        "cause": ev[C.EV_CAUSE_FIRST].to_numpy(),
        "area": ev[C.AREA].astype(str).to_numpy(),
        "comment": comment,
        ELAPSED_H: ((t - ev[C.EV_FIRST_SEEN]).dt.total_seconds() / 3600).to_numpy(),
        "log_customers": np.log1p(ev[C.EV_CUSTOMERS_FIRST].to_numpy("float64")),
        "customers_is_floor": (ev[C.EV_CUSTOMERS_FIRST] <= 4).to_numpy("float64"),
        "since_start_h": ((t - ev[C.EV_START]).dt.total_seconds() / 3600).to_numpy(),
        "utility_gave_etr": ev[C.EV_ETR_FIRST].notna().to_numpy("float64"),
        "lat": ev[C.EV_LAT].to_numpy(),
        "lon": ev[C.EV_LON].to_numpy(),
        "local_hour": local_hour,
        "weekday": local.dt.weekday.to_numpy(),
        "month": local.dt.month.to_numpy(),
    })
    read_at = rows[T] if state_t is None else pd.Series(state_t, index=rows.index)
    rows = pd.concat([rows, state.at(read_at, rows[C.AREA])], axis=1)
    rows = pd.concat([rows, previous_day_weather(weather_daily, rows[T], station_tz, features)],
                     axis=1)
    if updates is not None:
        rows[UTILITY_ETR_H] = _utility_etr_h(rows, updates)
    else:
        rows[UTILITY_ETR_H] = np.where(
            rows[ELAPSED_H] == 0, (ev[C.EV_ETR_FIRST] - t).dt.total_seconds() / 3600, np.nan)
    return rows


def previous_day_weather(weather_daily: pd.DataFrame, times: pd.Series, station_tz: str,
                         features: FeatureSettings) -> pd.DataFrame:
    """The station's weather of the local day before each time (complete, so known then):
    rain (mm), rain of the three days before that (mm), max/min temperature (°C), snow (mm)."""
    hours = pd.DatetimeIndex(times).tz_convert("UTC") - pd.Timedelta(days=1)
    wx = weather_by_hour(weather_daily, hours, station_tz, features)
    return pd.DataFrame({
        "wx_prev_prcp_mm": wx["wx_prcp_mm"].to_numpy(),
        "wx_prev_prcp_3d_mm": wx["wx_prcp_prev3d_mm"].to_numpy(),
        "wx_prev_tmax_c": wx["wx_tmax_c"].to_numpy(),
        "wx_prev_tmin_c": wx["wx_tmin_c"].to_numpy(),
        "wx_prev_snow_mm": wx["wx_snow_mm"].to_numpy(),
    }, index=times.index)


def _utility_etr_h(rows: pd.DataFrame, updates: UtilityUpdates) -> np.ndarray:
    """Hours from T to the utility's latest estimate published at or before T (NaN where it
    had none). At the first report this is the first ETR."""
    query = pd.DataFrame({C.EV_SOURCE_ID: rows[C.EV_SOURCE_ID].to_numpy(), "ts": rows[T],
                          "_i": np.arange(len(rows))}).sort_values("ts", kind="stable")
    hist = updates.etr.sort_values("ts", kind="stable")
    joined = pd.merge_asof(query, hist, on="ts", by=C.EV_SOURCE_ID, direction="backward")
    hours = (joined["etr"] - joined["ts"]).dt.total_seconds() / 3600
    out = np.full(len(rows), np.nan)
    out[joined["_i"].to_numpy()] = hours.to_numpy()
    return out


def storm_days(state: GridState, start: pd.Timestamp, end: pd.Timestamp, tz: str,
               min_customers_out: float) -> pd.Index:
    """Local dates (in ``tz``) on which customers out territory-wide reached
    ``min_customers_out`` at some hour: the "big days" of the evaluation breakdown."""
    hours = pd.date_range(start.tz_convert("UTC").floor("h"), end.tz_convert("UTC"), freq="h")
    out = pd.Series(state.customers_out(hours), index=hours.tz_convert(tz).date)
    peak = out.groupby(level=0).max()
    return pd.Index(peak.index[peak.to_numpy() >= min_customers_out])


def build_duration_rows(
    events: pd.DataFrame,
    updates: UtilityUpdates | None,
    weather_daily: pd.DataFrame,
    areas: pd.DataFrame,
    elapsed_h: tuple[float, ...],
    max_end_uncertainty_min: float,
    station_tz: str,
    features: FeatureSettings,
) -> tuple[pd.DataFrame, GridState, dict[str, int]]:
    """Rows for every elapsed time of every sampled outage (see :func:`duration_sample`),
    the grid state they were read from, and counts by end status (first reports only)."""
    sample = duration_sample(events, max_end_uncertainty_min)
    state = GridState(events, updates)
    zones = areas.set_index(C.AREA)[C.TIMEZONE].astype(str) if C.TIMEZONE in areas else None
    rows = pd.concat([rows_at_elapsed(sample, k, state, weather_daily, station_tz, features,
                                      updates, zones) for k in elapsed_h], ignore_index=True)
    counts = {str(k): int(v) for k, v in sample[STATUS].value_counts().items()}
    return rows, state, counts
