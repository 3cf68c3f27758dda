"""The weather that scores the horizon: the newest forecast issued at or before the as-of
time, checked and turned into the model's weather features.

The risk model learned its weather features (``features.build.WEATHER``) from DAILY station
values: the target hour's local day (the station's time zone) and the three days before.
``forecast_features`` is the one function that turns a forecast into those features: it
aggregates the canonical forecast frame (``features.forecast_grids.sample_forecast``) into one
daily row per area and local day in the station's daily shape (``date``, ``tmax_c``,
``tmin_c``, ``prcp_mm``, ``snow_mm``), puts the station's observed days before the as-of day
in front of it (the antecedent days are in the past at the as-of time), and passes each area's
daily frame through ``features.build.weather_by_hour``, the same function that builds the
training features. Names, units and aggregation therefore match by construction.

Daily aggregation, per area and local day of the station's time zone:

- ``tmax_c``: maximum of ``fc_tmax_c`` (periods ending in the day), else of ``fc_t2m_c``;
- ``tmin_c``: minimum of ``fc_tmin_c``, else of ``fc_t2m_c``;
- ``prcp_mm``: sum of ``fc_prcp_mm`` (amounts of steps ending in the day);
- ``snow_mm``: sum of ``fc_snow_mm`` (new snow depth) where the forecast has it, else NaN
  (the model then treats snowfall as unknown).

A period that ends at local midnight belongs to the day before. The as-of day is aggregated
from the forecast's issue time on: its hours before the issue time are in the past, and the
station has no hourly observation of them.

Contracts (``ForecastRefused``, a ``ContractError``, with ``kind`` saying which): no forecast
issued at or before the as-of time ("missing"), one issued more than ``max_age_h`` before it
("stale"), files the reader refuses or values outside plausible ranges ("implausible"), and
steps that do not cover every local day the horizon touches ("incomplete"). ``scoring_weather``
applies them and, when ``fallback: replay`` says so, flags the refusal and scores with the
observed weather instead.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from configs.settings import FeatureSettings, ForecastSettings
from features import columns as C
from features.build import WEATHER, weather_by_hour
from features.contracts import ContractError
from features.forecast_grids import (
    ISSUE,
    forecast_for_areas,
    read_forecast_file,
    variables_from_settings,
)

RefusalKind = Literal["missing", "stale", "implausible", "incomplete"]
DAILY_COLUMNS = (C.WX_TMAX, C.WX_TMIN, C.WX_PRCP, C.WX_SNOW)
# where each daily column comes from, first choice first (see the module docstring)
DAILY_SOURCES: dict[str, tuple[str, ...]] = {
    C.WX_TMAX: (C.FC_TMAX, C.FC_T2M),
    C.WX_TMIN: (C.FC_TMIN, C.FC_T2M),
    C.WX_PRCP: (C.FC_PRCP,),
    C.WX_SNOW: (C.FC_SNOW,),
}
REQUIRED_DAILY = (C.WX_TMAX, C.WX_TMIN, C.WX_PRCP)
_TMIN_ABOVE_TMAX_TOLERANCE_C = 0.5


class ForecastRefused(ContractError):
    """A forecast that cannot score the horizon; ``kind`` is missing, stale, implausible or
    incomplete, the message says why in one line, ``files`` names the refused files when
    known."""

    def __init__(self, kind: RefusalKind, message: str, files: tuple[Path, ...] = ()) -> None:
        super().__init__(re.sub(r"\s*\n\s*", "; ", message).strip())
        self.kind = kind
        self.files = files


@dataclass(frozen=True)
class ChosenForecast:
    """The newest forecast issued at or before the as-of time: its grid (one issue time),
    the files it came from, its issue time (UTC) and age at the as-of time (hours)."""

    grid: xr.Dataset
    files: tuple[Path, ...]
    issue_ts: pd.Timestamp
    age_h: float
    issues_found: int


@dataclass(frozen=True)
class ForecastWeather:
    """Weather features of the horizon from a forecast: ``hourly`` has the WEATHER columns
    indexed by (AREA, TS); ``daily`` the per-area daily rows they came from (forecast days
    and the observed days before them, ``origin`` says which); ``coverage`` how far the
    forecast reaches."""

    hourly: pd.DataFrame
    daily: pd.DataFrame
    coverage: dict[str, Any]
    variables: dict[str, str | None]


@dataclass(frozen=True)
class ScoringWeather:
    """What scores the horizon: ``source`` "forecast" (with ``hourly`` per (AREA, TS)) or
    "replay" (``hourly`` is None: the dataset's observed weather); ``record`` describes it
    for run.json; ``timings_s`` the seconds spent reading, sampling and converting."""

    source: Literal["forecast", "replay"]
    hourly: pd.DataFrame | None
    record: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    files: tuple[Path, ...] = ()


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _iso(ts: pd.Timestamp) -> str:
    return _utc(ts).isoformat()


def forecast_directory(cfg: ForecastSettings, data_dir: Path) -> Path:
    """The forecast folder of ``cfg`` (relative to ``data_dir`` unless absolute)."""
    directory = Path(cfg.directory)
    return directory if directory.is_absolute() else data_dir / directory


def choose_forecast(cfg: ForecastSettings, data_dir: Path, as_of: pd.Timestamp
                    ) -> ChosenForecast:
    """Read every file of ``cfg.file_glob`` in the forecast folder and keep the newest issue
    time at or before ``as_of`` (UTC); files issued later are never used (they did not exist
    at the as-of time). Raises ForecastRefused: no such forecast ("missing"), older than
    ``cfg.max_age_h`` ("stale"), or a file the reader refuses ("implausible")."""
    as_of = _utc(as_of)
    directory = forecast_directory(cfg, data_dir)
    files = sorted(directory.glob(cfg.file_glob))
    if not files:
        raise ForecastRefused("missing", f"forecast: no files match {cfg.file_glob!r} in "
                              f"{directory}; hint: set forecast.directory and file_glob, or "
                              "forecast.use: replay")
    grids = _read_all(cfg, files)
    issues = {p: pd.DatetimeIndex(g[ISSUE].values).tz_localize("UTC") for p, g in grids.items()}
    every = pd.DatetimeIndex(sorted({t for idx in issues.values() for t in idx}))
    usable = every[every <= as_of]
    if usable.empty:
        raise ForecastRefused(
            "missing", f"forecast: no forecast in {directory} was issued at or before the "
            f"as-of {_iso(as_of)} (issue times found: {every.min():%Y-%m-%dT%H:%MZ} .. "
            f"{every.max():%Y-%m-%dT%H:%MZ}); hint: forecasts issued after the as-of time "
            "are never used")
    newest = usable.max()
    age_h = (as_of - newest) / pd.Timedelta(hours=1)
    chosen = tuple(p for p in files if newest in issues[p])
    if age_h > cfg.max_age_h:
        raise ForecastRefused(
            "stale", f"forecast is stale: the newest forecast issued at or before the as-of "
            f"{_iso(as_of)} was issued {_iso(newest)}, {age_h:g} h before, more than "
            f"forecast.max_age_h {cfg.max_age_h:g} h (files: "
            f"{', '.join(p.name for p in chosen)}); hint: fetch a newer forecast or raise "
            "max_age_h", chosen)
    one_issue = np.datetime64(newest.tz_localize(None).to_datetime64(), "ns")
    parts = [grids[p].sel({ISSUE: [one_issue]}) for p in chosen]
    try:
        grid = xr.merge(parts, join="outer", compat="no_conflicts", combine_attrs="drop")
    except (ValueError, xr.MergeError) as exc:
        raise ForecastRefused("implausible", f"forecast files {', '.join(map(str, chosen))} "
                              f"issued {_iso(newest)} cannot be combined: {exc}") from exc
    grid = grid.assign_attrs(sources=";".join(str(p) for p in chosen))
    return ChosenForecast(grid, chosen, newest, float(age_h), len(every))


def _read_all(cfg: ForecastSettings, files: list[Path]) -> dict[Path, xr.Dataset]:
    specs = variables_from_settings(cfg)
    grids: dict[Path, xr.Dataset] = {}
    for path in files:
        try:
            grids[path] = read_forecast_file(path, specs)
        except ContractError as exc:
            raise ForecastRefused("implausible", f"forecast refused: {exc}") from exc
    return grids


def forecast_issue_times(cfg: ForecastSettings, data_dir: Path) -> pd.DatetimeIndex:
    """Every issue time (UTC, sorted) of the files of ``cfg.file_glob`` in the forecast
    folder; empty when no file matches. A file the reader refuses raises ForecastRefused."""
    files = sorted(forecast_directory(cfg, data_dir).glob(cfg.file_glob))
    found = {t for g in _read_all(cfg, files).values()
             for t in pd.DatetimeIndex(g[ISSUE].values).tz_localize("UTC")}
    return pd.DatetimeIndex(sorted(found), tz="UTC")


@dataclass(frozen=True)
class RefreshDecision:
    """Whether the hourly refresh rescores, and why (one line, for the log and the flow's
    return value); issue times are ISO-8601 UTC."""

    rescore: bool
    reason: str
    newest_issue_ts: str | None = None
    last_issue_ts: str | None = None
    last_run_id: str | None = None


def decide_refresh(use: Literal["replay", "forecast"], issue_times: pd.DatetimeIndex,
                   now: pd.Timestamp, last_manifest: dict[str, Any] | None) -> RefreshDecision:
    """Rescore only when a forecast issued at or before ``now`` (UTC) is newer than the one
    the latest finished run used (``last_manifest``, its run.json; None: no run yet). A run
    that used no forecast (replay, or a refused forecast) counts as older than any forecast.
    With ``use: replay`` nothing is ever rescored: replayed weather changes only with new
    observations, which the nightly run reads."""
    if use == "replay":
        return RefreshDecision(False, "forecast.use is replay: no forecast scores the horizon, "
                               "so a new one changes nothing; the nightly run rescores")
    usable = issue_times[issue_times <= _utc(now)]
    last_run = last_manifest.get("run_id") if last_manifest else None
    last = (last_manifest or {}).get("forecast", {}).get("issue_ts")
    if usable.empty:
        return RefreshDecision(False, f"no forecast issued at or before {_iso(now)} in the "
                               "forecast folder", None, last, last_run)
    newest = _iso(usable.max())
    if last is not None and usable.max() <= pd.Timestamp(last):
        return RefreshDecision(False, f"no newer forecast: the newest, issued {newest}, is "
                               f"the one run {last_run} used", newest, last, last_run)
    used = f"issued {last}" if last else "no forecast"
    since = f"run {last_run} used {used}" if last_run else "no run yet"
    return RefreshDecision(True, f"forecast issued {newest} is newer ({since})", newest, last,
                           last_run)


def sample_chosen(chosen: ChosenForecast, areas: pd.DataFrame, cfg: ForecastSettings
                  ) -> pd.DataFrame:
    """The canonical forecast frame of the chosen forecast at the areas (see
    ``features.forecast_grids.sample_forecast``); areas off the grid refuse the forecast."""
    try:
        return forecast_for_areas(chosen.grid, areas, cfg)
    except ContractError as exc:
        raise ForecastRefused("incomplete", f"forecast refused: {exc}") from exc


def horizon_days(as_of: pd.Timestamp, horizon_h: int, station_tz: str) -> pd.DatetimeIndex:
    """Local calendar days (naive midnights, station time zone) that the hours
    [as_of, as_of + horizon_h) fall in."""
    hours = pd.date_range(_utc(as_of), periods=horizon_h, freq="h")
    local = hours.tz_convert(station_tz).tz_localize(None).normalize()
    return pd.DatetimeIndex(local.unique())


def _local_midnight(day: pd.Timestamp, tz: str) -> pd.Timestamp:
    return pd.Timestamp(day).tz_localize(tz).tz_convert("UTC")


def _first_present(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in frame.columns and frame[n].notna().any()), None)


def forecast_daily(frame: pd.DataFrame, as_of: pd.Timestamp, horizon_h: int,
                   station_tz: str) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str | None]]:
    """Daily rows per area from a canonical forecast frame of one issue time: AREA, ``date``
    (naive local midnight of the station's zone) and the daily columns (°C, mm) for every local
    day the horizon touches; the coverage of those days; and which forecast column each daily
    column came from. Raises ForecastRefused when the steps do not cover every such day
    (incomplete), a needed variable is absent, or daily minima exceed maxima (implausible)."""
    as_of = _utc(as_of)
    issue = pd.Timestamp(frame[C.ISSUE_TS].max())
    if frame[C.ISSUE_TS].nunique() != 1:
        raise ValueError("forecast_daily takes the frame of one issue time")
    variables = {col: _first_present(frame, DAILY_SOURCES[col]) for col in DAILY_COLUMNS}
    absent = [c for c in REQUIRED_DAILY if variables[c] is None]
    if absent:
        raise ForecastRefused(
            "incomplete", f"forecast issued {_iso(issue)} lacks what the model's weather "
            f"features need: {', '.join(f'{c} (from one of {DAILY_SOURCES[c]})' for c in absent)}"
            "; hint: add the variables to forecast.variables or map the file's names with "
            "forecast.overrides")
    days = horizon_days(as_of, horizon_h, station_tz)
    need_from = max(issue, _local_midnight(days[0], station_tz))
    need_until = _local_midnight(days[-1] + pd.Timedelta(days=1), station_tz)
    steps = frame[frame[C.LEAD_H] > 0]
    ts = pd.DatetimeIndex(steps[C.TS])
    # a value over a period belongs to the day the period ends in (midnight: the day before)
    period_day = (ts - pd.Timedelta(microseconds=1)).tz_convert(station_tz).tz_localize(
        None).normalize()
    instant_day = pd.DatetimeIndex(frame[C.TS]).tz_convert(station_tz).tz_localize(
        None).normalize()
    rows = []
    for col in DAILY_COLUMNS:
        src = variables[col]
        if src is None:
            continue
        instant = src == C.FC_T2M
        part = frame if instant else steps
        keys = [part[C.AREA].to_numpy(), instant_day if instant else period_day]
        how = {C.WX_TMAX: "max", C.WX_TMIN: "min", C.WX_PRCP: "sum", C.WX_SNOW: "sum"}[col]
        grouped = part[src].groupby(keys)
        agg = grouped.agg(how) if how != "sum" else grouped.sum(min_count=1)
        rows.append(agg.rename(col))
    daily = pd.concat(rows, axis=1)
    daily.index = daily.index.set_names([C.AREA, C.WX_DATE])
    areas = pd.Index(sorted(frame[C.AREA].unique()), name=C.AREA)
    full = pd.MultiIndex.from_product([areas, days], names=[C.AREA, C.WX_DATE])
    daily = daily.reindex(full).reindex(columns=list(DAILY_COLUMNS)).astype("float64")

    # coverage: how far precipitation steps reach without a gap, the worst area counts
    prcp_ok = steps.assign(_ok=steps[C.FC_PRCP].notna())
    last_step = pd.Timestamp(steps[C.TS].max()) if len(steps) else issue
    reach = []
    for _, g in prcp_ok.groupby(C.AREA):
        g = g[g[C.TS] > need_from].sort_values(C.TS)
        gaps = g.loc[~g["_ok"], C.TS]
        first_gap = pd.Timestamp(gaps.min()) if len(gaps) else None
        before = g[C.TS] < first_gap if first_gap is not None else g[C.TS].notna()
        reach.append(pd.Timestamp(g.loc[before, C.TS].max()) if before.any() else need_from)
    covered_until = min(reach) if reach else issue
    temps_missing = daily[[C.WX_TMAX, C.WX_TMIN]].isna().any(axis=1)
    days_missing = sorted({d.strftime("%Y-%m-%d") for _, d in daily.index[temps_missing]})
    span_h = (need_until - need_from) / pd.Timedelta(hours=1)
    covered_h = max(0.0, min((covered_until - need_from) / pd.Timedelta(hours=1), span_h))
    local_days = [d.strftime("%Y-%m-%d") for d in days]
    coverage: dict[str, Any] = {
        "local_days": local_days,
        "station_timezone": station_tz,
        "needed_from": _iso(need_from),
        "needed_until": _iso(need_until),
        "last_step": _iso(last_step),
        "covered_until": _iso(covered_until),
        "share": round(covered_h / span_h, 4) if span_h > 0 else 1.0,
        "days_without_temperature": days_missing,
    }
    if covered_until < need_until or days_missing:
        why = (f"its precipitation steps reach only {_iso(covered_until)}"
               if covered_until < need_until else
               f"it has no temperature for {', '.join(days_missing)}")
        raise ForecastRefused(
            "incomplete", f"forecast issued {_iso(issue)} is incomplete for the {horizon_h} h "
            f"horizon from {_iso(as_of)}: the horizon's local days {local_days[0]}"
            f" .. {local_days[-1]} ({station_tz}) need steps until "
            f"{_iso(need_until)}, but {why} ({coverage['share']:.0%} covered); hint: use a "
            "forecast with longer lead times")
    inverted = daily[C.WX_TMIN] > daily[C.WX_TMAX] + _TMIN_ABOVE_TMAX_TOLERANCE_C
    if inverted.any():
        area, day = daily.index[inverted.to_numpy()][0]
        raise ForecastRefused(
            "implausible", f"forecast issued {_iso(issue)}: daily minimum temperature above "
            f"the maximum in {int(inverted.sum())} area-days, e.g. area {area} on "
            f"{day:%Y-%m-%d}: min {daily.loc[(area, day), C.WX_TMIN]:.1f} °C, max "
            f"{daily.loc[(area, day), C.WX_TMAX]:.1f} °C; hint: check which file variables "
            "map to fc_tmax_c and fc_tmin_c")
    return daily.reset_index(), coverage, variables


def forecast_features(frame: pd.DataFrame, observed_daily: pd.DataFrame, as_of: pd.Timestamp,
                      horizon_h: int, station_tz: str, cfg: FeatureSettings) -> ForecastWeather:
    """The model's weather features (``features.build.WEATHER``) for every area and hour of
    [as_of, as_of + horizon_h) from a canonical forecast frame of one issue time: the one
    conversion from forecasts to features (see the module docstring). ``observed_daily`` is
    the station's daily weather (``features.weather.to_weather_frame`` shape); its days
    before the as-of local day are the antecedent days."""
    as_of = _utc(as_of)
    fc_daily, coverage, variables = forecast_daily(frame, as_of, horizon_h, station_tz)
    first_day = horizon_days(as_of, horizon_h, station_tz)[0]
    observed = observed_daily[observed_daily[C.WX_DATE] < first_day]
    observed = observed[[C.WX_DATE, *DAILY_COLUMNS]].assign(origin="observed")
    hours = pd.date_range(as_of, periods=horizon_h, freq="h", name=C.TS)
    dailies, hourly = [], []
    for area, part in fc_daily.groupby(C.AREA, sort=True):
        days = pd.concat([observed, part.drop(columns=C.AREA).assign(origin="forecast")],
                         ignore_index=True)
        days[C.WX_DATE] = pd.DatetimeIndex(days[C.WX_DATE]).as_unit("us")
        dailies.append(days.assign(**{C.AREA: area}))
        feats = weather_by_hour(days.drop(columns="origin"), hours, station_tz, cfg)
        hourly.append(feats.assign(**{C.AREA: area}).rename_axis(C.TS).reset_index())
    out = pd.concat(hourly, ignore_index=True).set_index([C.AREA, C.TS])[list(WEATHER)]
    return ForecastWeather(out, pd.concat(dailies, ignore_index=True), coverage, variables)


def replay_covers(observed_daily: pd.DataFrame, as_of: pd.Timestamp, horizon_h: int,
                  station_tz: str) -> list[str]:
    """Local days of the horizon that have no observed weather to replay (empty: all have)."""
    days = horizon_days(as_of, horizon_h, station_tz)
    known = observed_daily.dropna(subset=list(DAILY_COLUMNS), how="all")[C.WX_DATE]
    have = set(pd.DatetimeIndex(known).normalize())
    return [d.strftime("%Y-%m-%d") for d in days if d not in have]


def scoring_weather(cfg: ForecastSettings, data_dir: Path, areas: pd.DataFrame,
                    observed_daily: pd.DataFrame, as_of: pd.Timestamp, horizon_h: int,
                    station_tz: str, features: FeatureSettings) -> ScoringWeather:
    """The weather that scores the horizon, as ``cfg.use`` says: observed weather replayed,
    or the newest forecast issued at or before ``as_of`` (chosen, sampled at the areas and
    converted by ``forecast_features``). A refused forecast stops the run (raises
    ForecastRefused) unless ``cfg.fallback`` is "replay": then the record says why and the
    horizon is scored with observed weather."""
    if cfg.use == "replay":
        return ScoringWeather("replay", None, {"use": "replay"})
    timings: dict[str, float] = {}
    files: tuple[Path, ...] = ()
    t0 = time.perf_counter()
    try:
        chosen = choose_forecast(cfg, data_dir, as_of)
        files = chosen.files
        timings["forecast_read"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        frame = sample_chosen(chosen, areas, cfg)
        timings["forecast_sample"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        weather = forecast_features(frame, observed_daily, as_of, horizon_h, station_tz,
                                    features)
        timings["forecast_convert"] = round(time.perf_counter() - t0, 3)
    except ForecastRefused as exc:
        if cfg.fallback != "replay":
            raise
        missing = replay_covers(observed_daily, as_of, horizon_h, station_tz)
        if missing:
            raise ForecastRefused(exc.kind, f"{exc}; and no observed weather to fall back on "
                                  f"for {', '.join(missing)}") from exc
        refused = {"use": "forecast", "status": "refused", "refused": exc.kind,
                   "reason": str(exc), "fallback": "replay",
                   "files": [str(p) for p in files or exc.files]}
        return ScoringWeather("replay", None, refused, timings, files)
    record: dict[str, Any] = {
        "use": "forecast", "status": "used",
        "files": [str(p) for p in chosen.files],
        "issue_ts": _iso(chosen.issue_ts),
        "age_h": chosen.age_h,
        "max_age_h": cfg.max_age_h,
        "issue_times_found": chosen.issues_found,
        "variables_read": sorted(str(v) for v in chosen.grid.data_vars),
        "daily_from": weather.variables,
        "lead_h": [float(frame[C.LEAD_H].min()), float(frame[C.LEAD_H].max())],
        "coverage": weather.coverage,
        "method": cfg.method, "points_per_area": cfg.points_per_area,
        "antecedent_days": "observed (station)",
    }
    return ScoringWeather("forecast", weather.hourly, record, timings, chosen.files)


__all__ = [
    "ChosenForecast", "ForecastRefused", "ForecastWeather", "RefreshDecision", "ScoringWeather",
    "choose_forecast", "decide_refresh", "forecast_daily", "forecast_features",
    "forecast_issue_times", "horizon_days", "replay_covers", "sample_chosen", "scoring_weather",
]
