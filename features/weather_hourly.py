"""Hourly station weather through meteostat, and features for the known outage drivers.

``load_hourly_weather`` reads ``meteostat.hourly`` for the configured station, from a local
mirror in meteostat's own layout (``<mirror>/hourly/<year>/<station>.csv.gz``: gzip CSV with
``year,month,day,hour`` in UTC, then each parameter followed by ``<param>_source``) with no
network, or from data.meteostat.net (``weather.mode: online``), exactly like the daily reader
in ``features/weather.py``. Units in the product frame: ``temp_c`` °C, ``prcp_mm`` mm per hour,
``snow_mm`` mm of snowfall per hour (meteostat: cm), ``wind_ms`` and ``gust_ms`` m/s
(meteostat: km/h), ``coco`` meteostat's condition code 1..27.

``driver_features`` turns hourly weather into outage-driver features per hour t, each from
the hours up to and including t: gust and sustained-wind exceedances and the duration of strong
wind, rain over 24 and 72 h, freezing rain or ice, heavy wet snow, heat (with high equipment
loading where telemetry gives it) and leaf-on season. Given only daily weather (the Kentucky
demo), it returns the same columns where a daily value supports them (the hour's local day,
as the replayed daily weather of ``features/build.py`` does) and NaN otherwise, plus a record
of where each feature came from, for the model card and run.json.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import meteostat as ms
import numpy as np
import pandas as pd
from meteostat.api.config import Config
from meteostat.enumerations import Parameter, Provider

from configs.settings import DriverSettings, WeatherSettings
from features import columns as C
from features.weather import meteostat_station

log = logging.getLogger(__name__)

ONLINE_HOURLY_ENDPOINT = Config.hourly_endpoint
KMH_PER_MS = 3.6
MM_PER_CM = 10.0
MIRROR_TIME_COLUMNS = ("year", "month", "day", "hour")

# meteostat parameter -> (product column, factor from meteostat's unit to the product's)
HOURLY_PARAMETERS: dict[Parameter, tuple[str, float]] = {
    Parameter.TEMP: (C.WXH_TEMP, 1.0),
    Parameter.PRCP: (C.WXH_PRCP, 1.0),
    Parameter.SNOW: (C.WXH_SNOW, MM_PER_CM),
    Parameter.WSPD: (C.WXH_WIND, 1.0 / KMH_PER_MS),
    Parameter.WPGT: (C.WXH_GUST, 1.0 / KMH_PER_MS),
    Parameter.COCO: (C.WXH_COCO, 1.0),
}

# meteostat condition codes (https://dev.meteostat.net/formats)
COCO_FREEZING = (6, 10, 11, 12, 13, 19, 20)  # freezing fog, freezing rain, sleet (ice pellets)
COCO_SNOW = (14, 15, 16, 21, 22)

HOURLY = "hourly"
DAILY = "daily"
DAILY_APPROX = "daily (approximate)"
CALENDAR = "calendar"
UNAVAILABLE = "unavailable"


# ---------------------------------------------------------------- meteostat hourly


def hourly_mirror_path(mirror_dir: Path, year: int, station_id: str) -> Path:
    """Where meteostat's hourly layout keeps one station-year."""
    return mirror_dir / "hourly" / str(year) / f"{station_id}.csv.gz"


def hourly_endpoint(mode: str, mirror_dir: Path) -> str:
    """The hourly-file URL template meteostat formats with ``year`` and ``station``."""
    if mode == "online":
        return ONLINE_HOURLY_ENDPOINT
    return str(mirror_dir.resolve() / "hourly" / "{year}" / "{station}.csv.gz")


def write_hourly_mirror(frame: pd.DataFrame, mirror_dir: Path, station_id: str,
                        source_id: str = "isd_lite") -> list[Path]:
    """Write product-unit hourly weather (``ts`` UTC plus any of the hourly columns) into
    meteostat's hourly layout, one gzip file per year, each parameter in meteostat's unit at
    its resolution of 0.1 and followed by its ``_source`` column (empty where the value is
    missing). Returns the files, by year."""
    ts = pd.DatetimeIndex(frame[C.TS]).tz_convert("UTC")
    out = pd.DataFrame({"year": ts.year, "month": ts.month, "day": ts.day, "hour": ts.hour})
    for parameter, (column, factor) in HOURLY_PARAMETERS.items():
        if column not in frame.columns:
            continue
        values = np.round(frame[column].to_numpy(dtype="float64") / factor, 1)
        out[str(parameter)] = values
        out[f"{parameter}_source"] = pd.Series(source_id, index=out.index).where(
            ~np.isnan(values))
    written = []
    for year, rows in out.groupby("year", sort=True):
        path = hourly_mirror_path(mirror_dir, int(year), station_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        rows.to_csv(partial, index=False, compression={"method": "gzip", "mtime": 0})
        os.replace(partial, path)
        written.append(path)
    return written


@contextmanager
def meteostat_hourly_source(endpoint: str, *, local: bool) -> Iterator[None]:
    """Point meteostat's hourly provider at ``endpoint`` with its cache off, and restore the
    previous settings afterwards (the provider copies the endpoint when first imported, so both
    the config and the module constant are set)."""
    from meteostat.providers.meteostat import hourly as provider

    config = ms.config
    saved = (config.hourly_endpoint, provider.ENDPOINT, config.cache_enable,
             config.block_large_requests)
    config.hourly_endpoint = provider.ENDPOINT = endpoint
    config.cache_enable = False
    config.block_large_requests = config.block_large_requests and not local
    try:
        yield
    finally:
        (config.hourly_endpoint, provider.ENDPOINT, config.cache_enable,
         config.block_large_requests) = saved


def fetch_meteostat_hourly(cfg: WeatherSettings, mirror_dir: Path, start: datetime,
                           end: datetime) -> pd.DataFrame | None:
    """``meteostat.hourly(...).fetch()`` of the station's hourly parameters between the naive
    UTC datetimes ``start`` and ``end``; None when there is no data."""
    local = cfg.mode == "local"
    with meteostat_hourly_source(hourly_endpoint(cfg.mode, mirror_dir), local=local):
        series = ms.hourly(meteostat_station(cfg.station), start, end,
                           parameters=list(HOURLY_PARAMETERS), providers=[Provider.HOURLY])
        return series.fetch()


def to_hourly_frame(fetched: pd.DataFrame | None, hours: pd.DatetimeIndex) -> pd.DataFrame:
    """Meteostat's hourly frame (index ``time``, naive UTC, meteostat units) as one row per UTC
    hour of ``hours``: ``ts`` then the product columns in product units, NaN where missing."""
    frame = pd.DataFrame(index=hours)
    if fetched is not None and len(fetched):
        got = fetched.copy()
        got.index = pd.DatetimeIndex(got.index).tz_localize("UTC").as_unit(hours.unit)
        for parameter, (column, factor) in HOURLY_PARAMETERS.items():
            if str(parameter) in got.columns:
                values = pd.to_numeric(got[str(parameter)], errors="coerce").astype("float64")
                frame[column] = values.reindex(hours) * factor
    frame = frame.reindex(columns=list(C.HOURLY_WEATHER_COLUMNS)).astype("float64")
    return frame.rename_axis(C.TS).reset_index()


def load_hourly_weather(cfg: WeatherSettings, mirror_dir: Path, start: pd.Timestamp,
                        end: pd.Timestamp) -> pd.DataFrame:
    """Hourly weather of ``cfg.station`` for every UTC hour from ``start`` to ``end``
    (inclusive) through ``meteostat.hourly``: from the mirror in local mode (no network; years
    without a file are logged and load as NaN), from data.meteostat.net in online mode."""
    start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    hours = pd.date_range(start.floor("h"), end.floor("h"), freq="h", name=C.TS)
    first, last = hours[0], hours[-1]
    if cfg.mode == "local":
        years = range(first.year, last.year + 1)
        present = [y for y in years
                   if hourly_mirror_path(mirror_dir, y, cfg.station.id).is_file()]
        missing = sorted(set(years) - set(present))
        if missing:
            log.warning("meteostat mirror %s has no hourly file for station %s in %s; those "
                        "hours load as NaN", mirror_dir, cfg.station.id, missing)
        if not present:
            return to_hourly_frame(None, hours)
        first = max(first, pd.Timestamp(present[0], 1, 1, tz="UTC"))
        last = min(last, pd.Timestamp(present[-1], 12, 31, 23, tz="UTC"))
    fetched = fetch_meteostat_hourly(cfg, mirror_dir, first.tz_localize(None).to_pydatetime(),
                                     last.tz_localize(None).to_pydatetime())
    return to_hourly_frame(fetched, hours)


# ---------------------------------------------------------------- outage-driver features


def _from_hourly(wx: pd.DataFrame, cfg: DriverSettings) -> dict[str, pd.Series]:
    """Driver features from hourly weather indexed by consecutive UTC hours (trailing
    windows: the hour and the ones before it)."""
    out: dict[str, pd.Series] = {}
    gust, wind = wx[C.WXH_GUST], wx[C.WXH_WIND]
    prcp, temp, snow, coco = wx[C.WXH_PRCP], wx[C.WXH_TEMP], wx[C.WXH_SNOW], wx[C.WXH_COCO]

    def hours_where(flag: pd.Series, source: pd.Series, window: int) -> pd.Series:
        counted = flag.astype("float64").where(source.notna())
        return counted.rolling(window, min_periods=1).sum().where(
            source.notna().rolling(window, min_periods=1).sum() > 0)

    if gust.notna().any():
        out[C.DRV_GUST_MAX] = gust.rolling(24, min_periods=1).max()
        out[C.DRV_GUST_HOURS] = hours_where(gust >= cfg.gust_ms, gust, 24)
    if wind.notna().any():
        out[C.DRV_WIND_HOURS] = hours_where(wind >= cfg.wind_ms, wind, 24)
    if wind.notna().any() or gust.notna().any():
        strong = ((wind >= cfg.wind_ms) | (gust >= cfg.gust_ms)).to_numpy()
        run = np.zeros(len(strong))
        count = 0.0
        for i, hit in enumerate(strong):
            count = count + 1 if hit else 0.0
            run[i] = count
        known = (wind.notna() | gust.notna()).to_numpy()
        out[C.DRV_WIND_RUN] = pd.Series(np.where(known, run, np.nan), index=wx.index)
    if prcp.notna().any():
        out[C.DRV_RAIN_24] = prcp.rolling(24, min_periods=1).sum().where(
            prcp.notna().rolling(24, min_periods=1).sum() > 0)
        out[C.DRV_RAIN_72] = prcp.rolling(72, min_periods=1).sum().where(
            prcp.notna().rolling(72, min_periods=1).sum() > 0)
    if prcp.notna().any() and temp.notna().any():
        freezing = ((prcp > 0) & (temp <= cfg.freezing_c)) | coco.isin(COCO_FREEZING)
        known = (prcp.notna() & temp.notna()) | coco.notna()
        out[C.DRV_FREEZING] = (freezing.astype("float64").where(known)
                               .rolling(24, min_periods=1).max())
    if snow.notna().any() and temp.notna().any():
        wet = temp.between(cfg.wet_snow_min_c, cfg.wet_snow_max_c)
        wet_snow = snow.where(wet, 0.0).where(snow.notna() & temp.notna())
        out[C.DRV_WET_SNOW] = wet_snow.rolling(24, min_periods=1).sum().where(
            wet_snow.notna().rolling(24, min_periods=1).sum() > 0)
    if temp.notna().any():
        out[C.DRV_HEAT] = (temp >= cfg.hot_c).astype("float64").where(temp.notna())
    return out


def _from_daily(daily: pd.DataFrame, hours: pd.DatetimeIndex, station_tz: str,
                cfg: DriverSettings) -> dict[str, pd.Series]:
    """Driver features from daily weather (``features/weather.py`` frame): each hour gets the
    values of its local day, rain over 72 h is that day and the two before."""
    d = daily.set_index(C.WX_DATE).sort_index()
    d = d.reindex(pd.date_range(d.index.min(), d.index.max(), freq="D", unit="us"))
    local_day = hours.tz_convert(station_tz).tz_localize(None).normalize().as_unit("us")

    def per_hour(values: pd.Series) -> pd.Series:
        return pd.Series(values.reindex(local_day).to_numpy(dtype="float64"), index=hours)

    prcp, tmax, tmin, snow = d[C.WX_PRCP], d[C.WX_TMAX], d[C.WX_TMIN], d[C.WX_SNOW]
    mean_t = (tmax + tmin) / 2
    out: dict[str, pd.Series] = {
        C.DRV_RAIN_24: per_hour(prcp),
        C.DRV_RAIN_72: per_hour(prcp.rolling(3, min_periods=3).sum()),
        C.DRV_FREEZING: per_hour(((prcp > 0) & (tmin <= cfg.freezing_c)).astype("float64")
                                 .where(prcp.notna() & tmin.notna())),
        C.DRV_WET_SNOW: per_hour(snow.where(mean_t.between(cfg.wet_snow_min_c,
                                                           cfg.wet_snow_max_c), 0.0)
                                 .where(snow.notna() & mean_t.notna())),
        C.DRV_HEAT: per_hour((tmax >= cfg.hot_c).astype("float64").where(tmax.notna())),
    }
    return out


DAILY_SOURCES = {C.DRV_RAIN_24: DAILY, C.DRV_RAIN_72: DAILY, C.DRV_FREEZING: DAILY_APPROX,
                 C.DRV_WET_SNOW: DAILY_APPROX, C.DRV_HEAT: DAILY}


def driver_features(
    hours: pd.DatetimeIndex,
    cfg: DriverSettings,
    station_tz: str,
    *,
    hourly: pd.DataFrame | None = None,
    daily: pd.DataFrame | None = None,
    load_rel: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Outage-driver features (``columns.DRIVER_FEATURES``) for the UTC ``hours``, and where
    each came from: ``hourly``, ``daily``, ``daily (approximate)``, ``calendar`` or
    ``unavailable`` (all NaN).

    ``hourly`` is a ``load_hourly_weather`` frame; features from it use the hour and the ones
    before it only. ``daily`` (a ``features/weather.py`` frame) fills what hourly data do not
    give, from the hour's local day: rain over 24 h (the day's total) and 72 h (three days),
    freezing rain (precipitation on a day with a minimum at or below ``freezing_c``), wet snow
    (snowfall on a day whose mean temperature is between ``wet_snow_min_c`` and
    ``wet_snow_max_c``) and heat (daily maximum); gusts, sustained wind and their duration need
    hourly data. ``load_rel`` (equipment loading relative to normal, by UTC hour, e.g. the area's
    ``tel_load_rel``) enables heat with high load. Leaf-on season comes from the calendar."""
    hours = pd.DatetimeIndex(hours, name=C.TS)
    found: dict[str, pd.Series] = {}
    source: dict[str, str] = {}
    if hourly is not None and len(hourly):
        wx = hourly.set_index(C.TS).reindex(
            pd.date_range(hours.min() - pd.Timedelta(hours=72), hours.max(), freq="h"))
        wx = wx.reindex(columns=list(C.HOURLY_WEATHER_COLUMNS))
        for name, values in _from_hourly(wx, cfg).items():
            if values.reindex(hours).notna().any():  # an empty mirror leaves daily to fill in
                found[name] = values.reindex(hours)
                source[name] = HOURLY
    if daily is not None and len(daily):
        for name, values in _from_daily(daily, hours, station_tz, cfg).items():
            if name not in found and values.notna().any():
                found[name] = values
                source[name] = DAILY_SOURCES[name]
    if C.DRV_HEAT in found and load_rel is not None:
        load = load_rel.reindex(hours)
        heat_load = (found[C.DRV_HEAT] * (load >= cfg.high_load_rel)).where(load.notna())
        found[C.DRV_HEAT_LOAD] = heat_load.where(found[C.DRV_HEAT].notna())
        source[C.DRV_HEAT_LOAD] = f"{source[C.DRV_HEAT]} + telemetry"
    months = hours.tz_convert(station_tz).month
    found[C.DRV_LEAF_ON] = pd.Series(np.isin(months, cfg.leaf_on_months).astype("float64"),
                                     index=hours)
    source[C.DRV_LEAF_ON] = CALENDAR
    frame = pd.DataFrame(index=hours)
    for name in C.DRIVER_FEATURES:
        frame[name] = found[name].astype("float64") if name in found else np.nan
        source.setdefault(name, UNAVAILABLE)
    return frame.rename_axis(C.TS).reset_index(), {n: source[n] for n in C.DRIVER_FEATURES}
