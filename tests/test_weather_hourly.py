"""features/weather_hourly.py: meteostat's hourly interface on a mirror in meteostat's own layout
(generated in tmp_path: no real hourly station file exists for Kentucky), the outage-driver
features by hand, their use of the past only, and the graceful fall-back to the real daily
NOAA weather of Lexington."""

from __future__ import annotations

import gzip
import logging
import socket
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import DriverSettings, WeatherSettings, load_settings
from features import columns as C
from features import weather, weather_hourly

TZ = "America/New_York"
START = pd.Timestamp("2022-12-29 00:00", tz="UTC")
END = pd.Timestamp("2023-01-03 23:00", tz="UTC")


@pytest.fixture(scope="module")
def wx_cfg() -> WeatherSettings:
    return load_settings().weather


@pytest.fixture(scope="module")
def drivers() -> DriverSettings:
    return load_settings().drivers


def _observations() -> pd.DataFrame:
    """Hourly observations in product units with known events: a 3-hour wind storm, freezing
    rain, wet snow, a hot hour, and a missing hour, across a year boundary."""
    hours = pd.date_range(START, END, freq="h", name=C.TS)
    n = len(hours)
    frame = pd.DataFrame({
        C.TS: hours,
        C.WXH_TEMP: np.full(n, 5.0),
        C.WXH_PRCP: np.zeros(n),
        C.WXH_SNOW: np.zeros(n),
        C.WXH_WIND: np.full(n, 3.0),
        C.WXH_GUST: np.full(n, 6.0),
        C.WXH_COCO: np.full(n, 3.0),
    }).set_index(C.TS)
    storm = pd.date_range("2023-01-01 10:00", periods=3, freq="h", tz="UTC")
    frame.loc[storm, C.WXH_WIND] = 15.0  # 54 km/h
    frame.loc[storm, C.WXH_GUST] = 25.0  # 90 km/h
    frame.loc["2022-12-30 00:00":"2022-12-30 05:00", C.WXH_PRCP] = 4.0  # 24 mm
    frame.loc["2022-12-31 06:00":"2022-12-31 07:00", [C.WXH_TEMP, C.WXH_PRCP]] = [-1.0, 2.0]
    frame.loc["2023-01-02 03:00", C.WXH_COCO] = 10.0  # freezing rain reported, 5 °C
    frame.loc["2023-01-02 12:00":"2023-01-02 14:00", [C.WXH_TEMP, C.WXH_SNOW]] = [0.5, 20.0]
    frame.loc["2023-01-02 18:00", C.WXH_TEMP] = 33.0
    frame.loc["2023-01-03 05:00"] = np.nan  # a missing observation hour
    return frame.reset_index()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, wx_cfg) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("meteostat")
    return root, weather_hourly.write_hourly_mirror(_observations(), root, wx_cfg.station.id)


@pytest.fixture(scope="module")
def loaded(mirror, wx_cfg) -> pd.DataFrame:
    return weather_hourly.load_hourly_weather(wx_cfg, mirror[0], START, END)


# ---------------------------------------------------------------- meteostat hourly


def test_mirror_is_in_meteostats_hourly_layout(mirror, wx_cfg):
    root, files = mirror
    assert files == [root / "hourly" / "2022" / f"{wx_cfg.station.id}.csv.gz",
                     root / "hourly" / "2023" / f"{wx_cfg.station.id}.csv.gz"]
    with gzip.open(files[1], "rt") as handle:
        header = handle.readline().strip()
        first = handle.readline().strip()
    assert header == ("year,month,day,hour,temp,temp_source,prcp,prcp_source,snow,snow_source,"
                      "wspd,wspd_source,wpgt,wpgt_source,coco,coco_source")
    # meteostat units in the file: km/h and cm
    assert first.startswith("2023,1,1,0,5.0,isd_lite,0.0,isd_lite,0.0,isd_lite,10.8,isd_lite,"
                            "21.6,isd_lite,3.0,isd_lite")


def test_hourly_read_through_meteostat_without_network(mirror, wx_cfg, monkeypatch):
    calls: list = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    frame = weather_hourly.load_hourly_weather(wx_cfg, mirror[0], START, END).set_index(C.TS)
    assert calls == []
    assert len(frame) == 6 * 24 and frame.index.tz is not None
    expected = _observations().set_index(C.TS)
    # meteostat rounds km/h to 0.1, so m/s come back within 0.1/3.6
    np.testing.assert_allclose(frame[C.WXH_WIND], expected[C.WXH_WIND], atol=0.03)
    assert frame.loc["2023-01-01 10:00", C.WXH_GUST] == pytest.approx(25.0)
    assert frame.loc["2023-01-02 12:00", C.WXH_SNOW] == pytest.approx(20.0)
    assert frame.loc["2022-12-31 06:00", C.WXH_TEMP] == -1.0
    assert frame.loc["2023-01-02 03:00", C.WXH_COCO] == 10.0
    assert frame.loc["2023-01-03 05:00"].isna().all()


def test_years_without_a_mirror_file_load_as_nan(mirror, wx_cfg, caplog):
    with caplog.at_level(logging.WARNING):
        frame = weather_hourly.load_hourly_weather(
            wx_cfg, mirror[0], pd.Timestamp("2021-12-31 22:00", tz="UTC"),
            pd.Timestamp("2022-12-29 01:00", tz="UTC")).set_index(C.TS)
    assert "2021" in caplog.text
    assert frame.loc[:"2021-12-31 23:00"].isna().all().all()
    assert frame.loc["2022-12-29 01:00", C.WXH_TEMP] == 5.0


# ---------------------------------------------------------------- driver features


def _drivers(hourly: pd.DataFrame, cfg: DriverSettings, **kwargs) -> tuple[pd.DataFrame, dict]:
    hours = pd.date_range(START + pd.Timedelta(hours=72), END, freq="h", tz="UTC")
    frame, source = weather_hourly.driver_features(hours, cfg, TZ, hourly=hourly, **kwargs)
    return frame.set_index(C.TS), source


def test_driver_features_by_hand(loaded, drivers):
    f, source = _drivers(loaded, drivers)
    at = f.loc
    # wind storm 10:00-12:00 on 1 January: 3 hours of gusts >= 20 m/s and wind >= 12 m/s
    assert at["2023-01-01 12:00", C.DRV_GUST_HOURS] == 3
    assert at["2023-01-01 12:00", C.DRV_WIND_HOURS] == 3
    assert at["2023-01-01 11:00", C.DRV_WIND_RUN] == 2
    assert at["2023-01-01 13:00", C.DRV_WIND_RUN] == 0
    assert at["2023-01-02 09:00", C.DRV_GUST_HOURS] == 3  # still inside the 24 h
    assert at["2023-01-02 10:00", C.DRV_GUST_HOURS] == 2
    assert at["2023-01-02 12:00", C.DRV_GUST_HOURS] == 0
    assert at["2023-01-01 12:00", C.DRV_GUST_MAX] == pytest.approx(25.0)
    # 24 mm from 00:00 to 05:00 on 30 December, plus 4 mm of freezing rain on the 31st
    assert at["2023-01-01 00:00", C.DRV_RAIN_72] == pytest.approx(28.0)
    assert at["2023-01-01 00:00", C.DRV_RAIN_24] == pytest.approx(4.0)
    assert at["2023-01-01 08:00", C.DRV_RAIN_24] == pytest.approx(0.0)
    assert at["2023-01-02 06:00", C.DRV_RAIN_72] == pytest.approx(4.0)  # the 24 mm left
    assert at["2023-01-01 05:00", C.DRV_FREEZING] == 1.0  # -1 °C rain at 07:00 on the 31st
    assert at["2023-01-01 08:00", C.DRV_FREEZING] == 0.0
    assert at["2023-01-02 03:00", C.DRV_FREEZING] == 1.0  # reported code 10 at 5 °C
    # 3 hours of 20 mm snow at 0.5 °C
    assert at["2023-01-02 14:00", C.DRV_WET_SNOW] == pytest.approx(60.0)
    assert at["2023-01-02 11:00", C.DRV_WET_SNOW] == 0.0
    assert at["2023-01-02 18:00", C.DRV_HEAT] == 1.0 and at["2023-01-02 19:00", C.DRV_HEAT] == 0
    assert (f[C.DRV_LEAF_ON] == 0).all()  # winter
    assert f[C.DRV_HEAT_LOAD].isna().all() and source[C.DRV_HEAT_LOAD] == "unavailable"
    assert source[C.DRV_GUST_MAX] == "hourly" and source[C.DRV_LEAF_ON] == "calendar"
    assert list(f.columns) == list(C.DRIVER_FEATURES)


def test_heat_with_high_load_uses_telemetry_loading(loaded, drivers):
    hours = pd.date_range("2023-01-02 17:00", "2023-01-02 19:00", freq="h", tz="UTC")
    load = pd.Series([1.5, 1.5, 1.5], index=hours)
    f, source = _drivers(loaded, drivers, load_rel=load)
    assert f.loc["2023-01-02 18:00", C.DRV_HEAT_LOAD] == 1.0
    assert f.loc["2023-01-02 17:00", C.DRV_HEAT_LOAD] == 0.0  # loaded but not hot
    assert np.isnan(f.loc["2023-01-02 20:00", C.DRV_HEAT_LOAD])  # no loading known
    assert source[C.DRV_HEAT_LOAD] == "hourly + telemetry"


def test_leaf_on_in_local_summer_months(drivers):
    hours = pd.DatetimeIndex(["2023-04-30 23:00", "2023-05-01 03:00", "2023-10-31 12:00",
                              "2023-11-01 05:00"], tz="UTC")
    f, source = weather_hourly.driver_features(hours, drivers, TZ)
    # 2023-05-01 03:00 UTC is still 30 April in Kentucky; 11-01 05:00 UTC is 1 November 01:00
    assert f[C.DRV_LEAF_ON].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert {v for k, v in source.items() if k != C.DRV_LEAF_ON} == {"unavailable"}


def test_driver_features_at_t_use_nothing_after_t(loaded, drivers):
    t0 = pd.Timestamp("2023-01-01 11:00", tz="UTC")
    before, _ = _drivers(loaded, drivers)
    rewritten = loaded.copy()
    later = rewritten[C.TS] > t0
    rng = np.random.default_rng(3)
    for column in C.HOURLY_WEATHER_COLUMNS:
        rewritten.loc[later, column] = rng.uniform(0, 40, int(later.sum()))
    after, _ = _drivers(rewritten, drivers)
    pd.testing.assert_frame_equal(after.loc[:t0], before.loc[:t0])
    assert not after.loc[t0 + pd.Timedelta(hours=1):].equals(before.loc[t0 +
                                                                       pd.Timedelta(hours=1):])
    # a change before t0 is seen at t0
    earlier = loaded.copy()
    earlier.loc[earlier[C.TS] == t0 - pd.Timedelta(hours=5), C.WXH_PRCP] = 10.0
    moved, _ = _drivers(earlier, drivers)
    assert moved.loc[t0, C.DRV_RAIN_24] == before.loc[t0, C.DRV_RAIN_24] + 10.0


# ---------------------------------------------------------------- daily fall-back


@pytest.fixture(scope="module")
def lexington_daily(tmp_path_factory, data_dir, wx_cfg) -> pd.DataFrame:
    """The real NOAA daily weather of Lexington for early 2022, through the daily mirror."""
    root = tmp_path_factory.mktemp("daily")
    weather.convert_noaa_daily(data_dir / wx_cfg.noaa_daily_file, root, wx_cfg.station,
                               years=range(2022, 2023))
    return weather.load_daily_weather(wx_cfg, root, date(2022, 1, 1), date(2022, 7, 31))


def test_daily_weather_gives_the_same_features_where_derivable(lexington_daily, drivers):
    hours = pd.date_range("2022-01-04 00:00", "2022-07-31 00:00", freq="h", tz="UTC")
    f, source = weather_hourly.driver_features(hours, drivers, TZ, daily=lexington_daily)
    f = f.set_index(C.TS)
    assert list(f.columns) == list(C.DRIVER_FEATURES)
    assert source[C.DRV_RAIN_24] == "daily" and source[C.DRV_HEAT] == "daily"
    assert source[C.DRV_FREEZING] == source[C.DRV_WET_SNOW] == "daily (approximate)"
    for name in (C.DRV_GUST_MAX, C.DRV_GUST_HOURS, C.DRV_WIND_HOURS, C.DRV_WIND_RUN,
                 C.DRV_HEAT_LOAD):
        assert source[name] == "unavailable" and f[name].isna().all()
    days = lexington_daily.set_index(C.WX_DATE)
    # 2022-05-08 15:00 UTC is 11:00 on 8 May in Lexington: that day's total and three days'
    # (NOAA: 0.72, 0.1 and 0 inches on 6-8 May)
    hour = pd.Timestamp("2022-05-08 15:00", tz="UTC")
    assert f.loc[hour, C.DRV_RAIN_24] == days.loc["2022-05-08", C.WX_PRCP] == 0.0
    assert f.loc[hour, C.DRV_RAIN_72] == pytest.approx(20.8, abs=0.11)
    assert f.loc[hour, C.DRV_LEAF_ON] == 1.0
    # 03:00 UTC is still the previous local day (0.1 in = 2.5 mm on 7 May)
    assert f.loc[pd.Timestamp("2022-05-08 03:00", tz="UTC"), C.DRV_RAIN_24] == 2.5
    # NOAA has no precipitation for 4 and 5 May: NaN, not 0
    assert np.isnan(f.loc[pd.Timestamp("2022-05-05 15:00", tz="UTC"), C.DRV_RAIN_24])
    assert np.isnan(f.loc[pd.Timestamp("2022-05-06 15:00", tz="UTC"), C.DRV_RAIN_72])
    hot = days[C.WX_TMAX] >= drivers.hot_c
    assert hot.any()  # a real Kentucky summer
    assert f[C.DRV_HEAT].sum() == pytest.approx(24 * hot.loc["2022-01-04":"2022-07-30"].sum(),
                                                abs=24)


def test_hourly_wins_over_daily_where_both_exist(loaded, lexington_daily, drivers):
    f, source = _drivers(loaded, drivers, daily=lexington_daily)
    assert source[C.DRV_RAIN_24] == "hourly"
    assert f.loc["2023-01-01 00:00", C.DRV_RAIN_72] == pytest.approx(28.0)
