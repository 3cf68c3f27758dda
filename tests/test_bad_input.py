"""Bad inputs found by trying to break the nightly job: each stops with a reason that names
the file and the rule instead of crashing or producing a quietly wrong forecast."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import load_settings
from features import columns as C
from features.areas import build_areas, read_counties
from features.contracts import ContractError
from features.dataset import check_weather_coverage
from features.labels import HourlyPanel
from features.outages import read_lgeku_events
from features.weather import convert_noaa_daily
from models.scoring import resolve_issue_time

CFG = load_settings(environ={})


def _events(planned: bool, county: str = "21067") -> pd.DataFrame:
    return pd.DataFrame({
        C.AREA: [county] * 3, C.EV_COUNTY: [county] * 3, C.EV_PLANNED: [planned] * 3,
        C.EV_DUPLICATE_OF: [None] * 3, C.EV_LAT: [38.0] * 3, C.EV_LON: [-84.5] * 3})


COUNTS = pd.DataFrame({C.EV_COUNTY: ["21067"], C.CUSTOMERS_SERVED: [170_000]})
COUNTIES = pd.DataFrame({C.EV_COUNTY: ["21067"], C.AREA_NAME: ["Fayette County"],
                         C.AREA_LAT: [38.04], C.AREA_LON: [-84.46]})


def test_only_planned_events_stop_with_a_reason_not_a_crash():
    with pytest.raises(ContractError, match="no unplanned outage events"):
        build_areas(_events(planned=True), COUNTIES, COUNTS, CFG.areas, CFG.customers)


def test_a_county_without_a_customer_count_gets_a_marked_lower_bound():
    """Norton city (VA) is absent from MCC.csv, and a quarantined row leaves a county
    without a count: its customers served come from its outage history instead, marked."""
    from features.areas import SERVED_SOURCE

    every_area = CFG.areas.model_copy(update={"min_events": 1})
    both = pd.concat([_events(False), _events(False, "51720")], ignore_index=True)
    both[C.EV_START] = pd.Timestamp("2023-05-01 10:00", tz="UTC")
    both[C.EV_CUSTOMERS] = [10, 20, 30, 5, 7, 100]
    areas = build_areas(both, COUNTIES, COUNTS, every_area, CFG.customers).set_index(C.AREA)
    assert areas.loc["21067", C.CUSTOMERS_SERVED] == 170_000
    assert areas.loc["21067", SERVED_SOURCE] == "counts"
    assert areas.loc["51720", C.CUSTOMERS_SERVED] == 112  # one day's outages: 5 + 7 + 100
    assert areas.loc["51720", SERVED_SOURCE] == "outage history"


def test_counties_file_that_is_not_geojson_names_the_file(tmp_path):
    bad = tmp_path / "counties.json"
    bad.write_text("this is not json")
    with pytest.raises(ContractError, match=r"counties\.json: not a GeoJSON"):
        read_counties(bad)
    bad.write_text('{"type": "FeatureCollection"}')
    with pytest.raises(ContractError, match="KeyError"):
        read_counties(bad)


def test_truncated_gzip_events_file_is_a_contract_error(tmp_path, data_dir):
    real = data_dir / CFG.outages.events_file
    with gzip.open(real, "rb") as fh:
        head = fh.read(200_000)
    cut = gzip.compress(head)[:-4000]
    path = tmp_path / "events.csv.gz"
    path.write_bytes(cut)
    with pytest.raises(ContractError, match=r"cannot read .*events\.csv\.gz"):
        read_lgeku_events(path, CFG.outages)


def test_weather_that_misses_the_outage_history_stops_the_run():
    hours = pd.date_range(pd.Timestamp("2023-01-01", tz="UTC"), periods=100, freq="h")
    panel = HourlyPanel(np.array(["A"], dtype=object), hours, np.zeros((1, 100)),
                        np.zeros((1, 100)), np.ones(100, bool), hours[-1] + pd.Timedelta(hours=1))
    wx = pd.DataFrame({"wx_prcp_mm": np.nan, "wx_tmax_c": np.nan}, index=hours)
    with pytest.raises(ContractError, match=r"weather covers 0% of the outage history"):
        check_weather_coverage(wx, panel, 0.8, Path("noaa.csv"))
    wx.iloc[:90, 0] = 1.0
    assert check_weather_coverage(wx, panel, 0.8, Path("noaa.csv")) == pytest.approx(0.9)


def test_temperatures_in_celsius_are_refused(tmp_path, data_dir):
    raw = pd.read_csv(data_dir / CFG.weather.noaa_daily_file, dtype=str)
    recent = raw[raw["date"].str.endswith(("/2022", "/2023"))].copy()
    for col in ("T_air_max", "T_air_min"):
        f = pd.to_numeric(recent[col], errors="coerce")
        recent[col] = ((f - 32) * 5 / 9).round().astype("Int64").astype(str).replace("<NA>", "M")
    path = tmp_path / "noaa_celsius.csv"
    recent.to_csv(path, index=False)
    with pytest.raises(ContractError, match="°C"):
        convert_noaa_daily(path, tmp_path / "ms", CFG.weather.station, years=range(2022, 2024))


def test_as_of_without_weather_for_the_horizon_is_refused():
    end = pd.Timestamp("2024-01-01", tz="UTC")
    hours = pd.date_range(pd.Timestamp("2023-11-01", tz="UTC"), periods=61 * 24, freq="h")
    panel = HourlyPanel(np.array(["A"], dtype=object), hours, np.zeros((1, len(hours))),
                        np.zeros((1, len(hours))), np.ones(len(hours), bool), end)
    weather = pd.DataFrame({C.WX_DATE: pd.date_range("2023-11-01", "2023-12-31", freq="D"),
                            C.WX_TMAX: 5.0, C.WX_TMIN: 0.0, C.WX_PRCP: 1.0, C.WX_SNOW: 0.0})
    with pytest.raises(ValueError, match="no observed weather to replay"):
        resolve_issue_time("2023-12-31T00:00:00Z", panel, weather, 72, "UTC")
    assert resolve_issue_time("2023-12-29T00:00:00Z", panel, weather, 72, "UTC") == pd.Timestamp(
        "2023-12-29", tz="UTC")
