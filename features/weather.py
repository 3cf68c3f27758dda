"""Daily station weather: NOAA GHCN-Daily in meteostat's own file layout, read back through
meteostat.

``convert_noaa_daily`` checks the NOAA file against its contract (``NOAA_SUITE``) and writes
``<mirror>/daily/<year>/<station>.csv.gz`` exactly as ``data.meteostat.net`` lays out its daily
files: gzip CSV, ``year,month,day`` then each parameter followed by ``<param>_source`` (a file
without the source columns silently yields no data). ``load_daily_weather`` reads that mirror,
or the real meteostat endpoint, through ``meteostat.daily``.

Parameters and units in the mirror (meteostat's daily names): ``tmin``/``tmax`` °C,
``prcp`` mm, ``snow`` mm. Source id ``ghcnd`` (meteostat's id for NOAA GHCN-Daily).

Snowfall: meteostat 2.1.5 has no daily snowfall parameter. ``snow`` ("Snowfall") is defined
for hourly data only, and the daily files carry snow *depth* (``snwd``, cm), which is a
different quantity. GHCN ``SNOW`` is snowfall, so it is written to meteostat's snowfall
column ``snow`` (in mm) and ``load_daily_weather`` registers a daily ``snow`` parameter (mm)
with meteostat so the column passes through. Meteostat's online daily files carry no
snowfall, so in online mode ``snow_mm`` is all NaN.

Meteostat rounds every float parameter to 0.1 when it reads (``schema_service.format``), so
loaded values have a resolution of 0.1 °C and 0.1 mm (0.04 in = 1.016 mm loads as 1.0 mm).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path

import meteostat as ms
import numpy as np
import pandas as pd
from meteostat.api.config import Config
from meteostat.core.parameters import parameter_service
from meteostat.enumerations import Granularity, Parameter, Provider, Unit
from meteostat.typing import ParameterSpec
from meteostat.utils.validators import maximum, minimum

from configs.settings import StationSettings, WeatherSettings
from features.columns import WEATHER_COLUMNS, WX_DATE, WX_PRCP, WX_SNOW, WX_TMAX, WX_TMIN
from features.contracts import ContractResult, Rule, Suite, check

log = logging.getLogger(__name__)
progress = logging.getLogger("forewarn.progress.weather")  # see flows/progress.py

# Raw NOAA file (dataset 8 of the shared data): M/D/YYYY local standard day, inches, °F.
RAW_DATE = "date"
RAW_RAIN = "rain"  # precipitation, inches
RAW_SNOW = "snow"  # snowfall, inches
RAW_TMAX = "T_air_max"  # °F
RAW_TMIN = "T_air_min"  # °F
RAW_NUMERIC = (RAW_RAIN, RAW_SNOW, RAW_TMAX, RAW_TMIN)
RAW_MISSING = ("M", "")
RAW_DATE_FORMAT = "%m/%d/%Y"

# Helper columns the contract checks next to the raw ones.
CHECK_DATE = "date_parsed"
CHECK_TMAX_GE_TMIN = "tmax_ge_tmin"
CHECK_SUMMER_TMAX = "summer_tmax_f"  # T_air_max on June-August days, else null

NOAA_SUITE = Suite(
    name="noaa_daily",
    required_columns=(RAW_DATE, *RAW_NUMERIC),
    rules=(
        Rule(CHECK_DATE, "not_null", hint="write dates as M/D/YYYY"),
        Rule(CHECK_DATE, "unique", hint="one row per day; remove the repeated day"),
        # "between" also fails text that is not a number ("M" and "" are missing, not text).
        Rule(RAW_TMAX, "between", min=-40, max=120, hint="daily maximum in °F, M if missing"),
        Rule(RAW_TMIN, "between", min=-50, max=100, hint="daily minimum in °F, M if missing"),
        Rule(
            RAW_RAIN, "between", min=0, max=20, hint="daily precipitation in inches, M if missing"
        ),
        Rule(RAW_SNOW, "between", min=0, max=40, hint="daily snowfall in inches, M if missing"),
        Rule(CHECK_TMAX_GE_TMIN, "in_set", values=(True,), hint="T_air_max is below T_air_min"),
        # a whole file in °C passes the ranges above; Kentucky summer maxima below 50 °F are not
        Rule(CHECK_SUMMER_TMAX, "between", min=50, max=130, quarantine=False, mostly=0.9,
             hint="summer daily maxima mostly below 50 °F: are the temperatures in °C?"),
    ),
)

# Meteostat side.
SOURCE_ID = "ghcnd"  # meteostat's provider id for NOAA GHCN-Daily
MM_PER_INCH = 25.4
ONLINE_DAILY_ENDPOINT = Config.daily_endpoint  # the class default, whatever MS_* says
MIRROR_COLUMNS = ("year", "month", "day")
_TO_WEATHER = {
    Parameter.TMAX: WX_TMAX,
    Parameter.TMIN: WX_TMIN,
    Parameter.PRCP: WX_PRCP,
    Parameter.SNOW: WX_SNOW,
}
DAILY_SNOWFALL = ParameterSpec(
    id=Parameter.SNOW,
    name="Snowfall",
    granularity=Granularity.DAILY,
    unit=Unit.MILLIMETERS,
    dtype="Float64",
    validators=[minimum(0), maximum(2000)],
)


# ---------------------------------------------------------------- NOAA -> meteostat mirror


def mirror_path(mirror_dir: Path, year: int, station_id: str) -> Path:
    """Where meteostat's daily layout keeps one station-year."""
    return mirror_dir / "daily" / str(year) / f"{station_id}.csv.gz"


def read_noaa_daily(noaa_csv: Path) -> pd.DataFrame:
    """The NOAA file as written: every column a string, missing values kept as 'M' or ''."""
    return pd.read_csv(noaa_csv, dtype=str, keep_default_na=False)


def noaa_contract_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The raw rows as the contract sees them: missing markers ('M', '') become nulls, other text
    is kept as written; plus the parsed date and a ``tmax_ge_tmin`` flag (True where either
    temperature is missing or not a number). Absent raw columns stay absent, so the contract
    names them."""
    frame = raw.copy()
    dates = raw.get(RAW_DATE, pd.Series(pd.NA, index=raw.index, dtype="string"))
    frame[CHECK_DATE] = pd.to_datetime(dates, format=RAW_DATE_FORMAT, errors="coerce")
    for column in [c for c in RAW_NUMERIC if c in raw.columns]:
        text = raw[column].str.strip()
        frame[column] = text.mask(text.isin(RAW_MISSING))
    nothing = pd.Series(np.nan, index=raw.index)
    tmax = _numbers(frame.get(RAW_TMAX, nothing))
    tmin = _numbers(frame.get(RAW_TMIN, nothing))
    frame[CHECK_TMAX_GE_TMIN] = tmax.isna() | tmin.isna() | (tmax >= tmin)
    summer = frame[CHECK_DATE].dt.month.isin((6, 7, 8))
    frame[CHECK_SUMMER_TMAX] = tmax.where(summer)
    return frame


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _in_years(frame: pd.DataFrame, years: range | None) -> pd.DataFrame:
    """Rows of the given years; rows without a valid date stay so the contract sees them."""
    if years is None:
        return frame
    year = frame[CHECK_DATE].dt.year
    return frame[year.isna() | year.isin(list(years))]


def fahrenheit_to_celsius(values: pd.Series) -> pd.Series:
    """°F -> °C."""
    return (values - 32.0) * 5.0 / 9.0


def inches_to_mm(values: pd.Series) -> pd.Series:
    """inches -> mm."""
    return values * MM_PER_INCH


def to_mirror_frame(days: pd.DataFrame) -> pd.DataFrame:
    """Rows that passed the contract as meteostat daily rows: ``year,month,day`` then ``tmin, tmax`` (°C),
    ``prcp, snow`` (mm), each followed by its ``_source`` column (empty where missing)."""
    when = days[CHECK_DATE]
    out = pd.DataFrame(
        {"year": when.dt.year, "month": when.dt.month, "day": when.dt.day}, index=days.index
    )
    values = {
        Parameter.TMIN: fahrenheit_to_celsius(_numbers(days[RAW_TMIN])),
        Parameter.TMAX: fahrenheit_to_celsius(_numbers(days[RAW_TMAX])),
        Parameter.PRCP: inches_to_mm(_numbers(days[RAW_RAIN])),
        Parameter.SNOW: inches_to_mm(_numbers(days[RAW_SNOW])),
    }
    for parameter, series in values.items():
        out[str(parameter)] = series
        out[f"{parameter}_source"] = pd.Series(SOURCE_ID, index=days.index).where(series.notna())
    return out.sort_values(list(MIRROR_COLUMNS)).reset_index(drop=True)


def write_mirror_year(rows: pd.DataFrame, path: Path) -> Path:
    """Write one station-year (gzip with a fixed mtime, so re-running gives the same bytes);
    the file is replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    rows.to_csv(partial, index=False, compression={"method": "gzip", "mtime": 0})
    os.replace(partial, path)
    return path


def convert_noaa_daily(
    noaa_csv: Path,
    mirror_dir: Path,
    station: StationSettings,
    *,
    years: range | None = None,
    quarantine_dir: Path | None = None,
    max_quarantine_share: float | None = None,
) -> tuple[list[Path], ContractResult]:
    """Check the NOAA GHCN-Daily file against ``NOAA_SUITE`` and write the years that have
    data (all, or those in ``years``) into meteostat's daily layout under ``mirror_dir``.

    Quarantined rows go to ``quarantine_dir`` and their days are left out (they load as NaN).
    ``max_quarantine_share`` overrides the suite's share (a fraction of the checked rows).
    Returns the files written, in year order, and the contract result. Re-running overwrites.
    """
    suite = NOAA_SUITE
    if max_quarantine_share is not None:
        suite = replace(suite, max_quarantine_share=max_quarantine_share)
    raw = read_noaa_daily(noaa_csv)
    checkable = _in_years(noaa_contract_frame(raw), years)
    passed, result = check(
        checkable,
        suite,
        source=str(noaa_csv),
        quarantine_dir=quarantine_dir,
        show_columns=(RAW_DATE, *RAW_NUMERIC),
    )
    mirror = to_mirror_frame(passed)
    years_found = mirror.groupby("year", sort=True)
    written = []
    for i, (year, rows) in enumerate(years_found):
        progress.info("year %d", int(year), extra={"step": i, "steps": years_found.ngroups})
        written.append(write_mirror_year(rows, mirror_path(mirror_dir, int(year), station.id)))
    progress.info("%d years written", len(written),
                  extra={"step": len(written), "steps": years_found.ngroups})
    log.info(
        "wrote %d meteostat daily files for station %s under %s",
        len(written),
        station.id,
        mirror_dir,
    )
    return written, result


# ---------------------------------------------------------------- meteostat -> daily frame


def meteostat_station(station: StationSettings) -> ms.Station:
    """A full Station object, so meteostat never looks the id up in its online stations.db."""
    return ms.Station(
        id=station.id,
        name=station.name,
        country=station.country,
        latitude=station.latitude,
        longitude=station.longitude,
        elevation=station.elevation,
        timezone=station.timezone,
    )


def daily_endpoint(mode: str, mirror_dir: Path) -> str:
    """The daily-file URL template meteostat formats with ``year`` and ``station``."""
    if mode == "online":
        return ONLINE_DAILY_ENDPOINT
    return str(mirror_dir.resolve() / "daily" / "{year}" / "{station}.csv.gz")


def ensure_daily_snowfall() -> None:
    """Make meteostat accept daily snowfall (mm); 2.1.5 defines snowfall for hourly only."""
    existing = parameter_service.get_parameter(Parameter.SNOW, Granularity.DAILY)
    if existing is None:
        parameter_service.register(DAILY_SNOWFALL)
    elif existing.unit != Unit.MILLIMETERS:
        raise RuntimeError(f"meteostat's daily snowfall is in {existing.unit}, expected mm")


@contextmanager
def meteostat_daily_source(endpoint: str, *, local: bool) -> Iterator[None]:
    """Point meteostat's daily provider at ``endpoint`` with its cache off, and restore the
    previous settings afterwards.

    The provider module copies ``config.daily_endpoint`` into its own ``ENDPOINT`` when first
    imported, so setting the config alone is ignored after the first fetch; both are set. For a
    ``local`` mirror meteostat's guard against daily requests longer than 30 years is lifted
    (it protects meteostat's servers, which a local read does not touch)."""
    from meteostat.providers.meteostat import daily as provider

    config = ms.config
    saved = (
        config.daily_endpoint,
        provider.ENDPOINT,
        config.cache_enable,
        config.block_large_requests,
    )
    config.daily_endpoint = provider.ENDPOINT = endpoint
    config.cache_enable = False
    config.block_large_requests = config.block_large_requests and not local
    try:
        yield
    finally:
        (
            config.daily_endpoint,
            provider.ENDPOINT,
            config.cache_enable,
            config.block_large_requests,
        ) = saved


def mirror_span(
    mirror_dir: Path, station_id: str, start: date, end: date
) -> tuple[date, date] | None:
    """The part of [start, end] between the first and last mirror years that have a file, or
    None. Missing years are logged; asking meteostat for them only adds its own tracebacks."""
    years = range(start.year, end.year + 1)
    present = [y for y in years if mirror_path(mirror_dir, y, station_id).is_file()]
    missing = sorted(set(years) - set(present))
    if missing:
        log.warning(
            "meteostat mirror %s has no daily file for station %s in %s; those days load as NaN",
            mirror_dir,
            station_id,
            missing,
        )
    if not present:
        return None
    return max(start, date(present[0], 1, 1)), min(end, date(present[-1], 12, 31))


def to_weather_frame(fetched: pd.DataFrame | None, start: date, end: date) -> pd.DataFrame:
    """Meteostat's daily frame (index ``time``) as one row per day in [start, end]:
    ``date`` (naive midnight of the station's local standard day), ``tmax_c``, ``tmin_c`` (°C),
    ``prcp_mm``, ``snow_mm`` (mm), float64 with NaN where missing."""
    days = pd.date_range(start, end, freq="D", name=WX_DATE, unit="us")
    if fetched is None:
        fetched = pd.DataFrame(index=days)
    frame = fetched.rename(columns={str(k): v for k, v in _TO_WEATHER.items()})
    frame = frame.reindex(index=days, columns=list(WEATHER_COLUMNS)).astype("float64")
    return frame.rename_axis(WX_DATE).reset_index()


def fetch_meteostat_daily(
    cfg: WeatherSettings, mirror_dir: Path, start: date, end: date
) -> pd.DataFrame | None:
    """``meteostat.daily(...).fetch()`` for the station's tmax, tmin, prcp and snow, from the
    mirror (local mode) or data.meteostat.net (online mode); None when there is no data."""
    ensure_daily_snowfall()
    station = meteostat_station(cfg.station)
    local = cfg.mode == "local"
    with meteostat_daily_source(daily_endpoint(cfg.mode, mirror_dir), local=local):
        series = ms.daily(
            station, start, end, parameters=list(_TO_WEATHER), providers=[Provider.DAILY]
        )
    return series.fetch()


def load_daily_weather(
    cfg: WeatherSettings, mirror_dir: Path, start: date, end: date
) -> pd.DataFrame:
    """Daily weather of ``cfg.station`` for the local days ``start``..``end`` (inclusive),
    read through ``meteostat.daily``: from the mirror under ``mirror_dir`` in local mode (no
    network), from data.meteostat.net in online mode. See ``to_weather_frame`` for the shape."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    span: tuple[date, date] | None = (start, end)
    if cfg.mode == "local":
        span = mirror_span(mirror_dir, cfg.station.id, start, end)
    fetched = None if span is None else fetch_meteostat_daily(cfg, mirror_dir, *span)
    return to_weather_frame(fetched, start, end)
