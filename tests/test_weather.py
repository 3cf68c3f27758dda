"""features/weather.py on the real Lexington GHCN-Daily file: conversion into meteostat's daily
layout, reading it back through meteostat with no network, and the NOAA data contract."""

from __future__ import annotations

import gzip
import socket
from datetime import date
from pathlib import Path

import meteostat as ms
import numpy as np
import pandas as pd
import pytest

from configs.settings import WeatherSettings, load_settings
from features import weather
from features.columns import WEATHER_COLUMNS, WX_DATE, WX_PRCP, WX_SNOW, WX_TMAX, WX_TMIN
from features.contracts import ContractError

MIRROR_HEADER = "year,month,day,tmin,tmin_source,tmax,tmax_source,prcp,prcp_source,snow,snow_source"


@pytest.fixture(scope="session")
def wx_cfg() -> WeatherSettings:
    return load_settings().weather


@pytest.fixture(scope="session")
def noaa_csv(data_dir: Path, wx_cfg: WeatherSettings) -> Path:
    return data_dir / wx_cfg.noaa_daily_file


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory, noaa_csv: Path, wx_cfg: WeatherSettings):
    """The whole real file converted once for the session: (mirror_dir, paths, contract result)."""
    mirror_dir = tmp_path_factory.mktemp("meteostat")
    paths, result = weather.convert_noaa_daily(noaa_csv, mirror_dir, wx_cfg.station)
    return mirror_dir, paths, result


def _load(cfg: WeatherSettings, mirror_dir: Path, start: date, end: date) -> pd.DataFrame:
    return weather.load_daily_weather(cfg, mirror_dir, start, end).set_index(WX_DATE)


def _read_mirror(path: Path) -> tuple[str, pd.DataFrame]:
    with gzip.open(path, "rt") as handle:
        header = handle.readline().strip()
    return header, pd.read_csv(path, compression="gzip")


def _real_lines(noaa_csv: Path, year: int) -> tuple[str, list[str]]:
    header, *lines = noaa_csv.read_text().splitlines()
    return header, [line for line in lines if line.split(",")[0].endswith(f"/{year}")]


# ---------------------------------------------------------------- conversion


def test_convert_writes_meteostat_daily_layout(mirror, wx_cfg):
    mirror_dir, paths, _ = mirror
    sid = wx_cfg.station.id
    assert paths == [mirror_dir / "daily" / str(y) / f"{sid}.csv.gz" for y in range(1900, 2024)]

    header, leap = _read_mirror(mirror_dir / "daily" / "2020" / f"{sid}.csv.gz")
    assert header == MIRROR_HEADER
    assert len(leap) == 366

    _, y2023 = _read_mirror(paths[-1])
    day = y2023[(y2023.month == 12) & (y2023.day == 30)].iloc[0]  # NOAA: 0.04 in, blank, 40/36 °F
    assert day["prcp"] == pytest.approx(1.016)
    assert day["tmax"] == pytest.approx((40 - 32) * 5 / 9)
    assert day["tmin"] == pytest.approx((36 - 32) * 5 / 9)
    assert day["prcp_source"] == "ghcnd"
    assert np.isnan(day["snow"]) and pd.isna(day["snow_source"])


def test_real_file_passes_the_contract(mirror):
    result = mirror[2]
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (45290, 45290, 0)
    assert result.failures == [] and result.quarantine_file is None


def test_convert_only_writes_years_with_data_and_is_idempotent(tmp_path, noaa_csv, wx_cfg):
    paths, _ = weather.convert_noaa_daily(
        noaa_csv, tmp_path, wx_cfg.station, years=range(2023, 2026)
    )
    first = paths[0].read_bytes()
    again, _ = weather.convert_noaa_daily(
        noaa_csv, tmp_path, wx_cfg.station, years=range(2023, 2026)
    )

    assert paths == again == [weather.mirror_path(tmp_path, 2023, wx_cfg.station.id)]
    assert again[0].read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "daily").iterdir()) == ["2023"]


# ---------------------------------------------------------------- reading through meteostat


def test_known_days_round_trip_through_meteostat(mirror, wx_cfg):
    frame = _load(wx_cfg, mirror[0], date(2022, 1, 1), date(2023, 12, 31))

    # 12/30/2023: rain 0.04 in = 1.016 mm, which meteostat rounds to 0.1 mm; 40/36 °F; no snow value.
    dec30 = frame.loc["2023-12-30"]
    assert (dec30[WX_PRCP], dec30[WX_TMAX], dec30[WX_TMIN]) == (1.0, 4.4, 2.2)
    assert np.isnan(dec30[WX_SNOW])
    # 1/6/2022: 0.55 in precipitation, 9.9 in snowfall (not depth), 29/15 °F.
    jan6 = frame.loc["2022-01-06"]
    assert (jan6[WX_PRCP], jan6[WX_SNOW], jan6[WX_TMAX], jan6[WX_TMIN]) == (14.0, 251.5, -1.7, -9.4)
    assert np.isnan(frame.loc["2023-12-28", WX_PRCP])  # blank in the NOAA file


def test_load_equals_the_noaa_file_over_39_years(mirror, wx_cfg, noaa_csv):
    """Longer than meteostat's default 30-year guard for daily requests, lifted for a mirror."""
    frame = _load(wx_cfg, mirror[0], date(1985, 1, 1), date(2023, 12, 31))
    raw = pd.read_csv(noaa_csv, na_values=["M"])
    raw.index = pd.to_datetime(raw["date"], format="%m/%d/%Y")
    raw = raw.loc["1985-01-01":"2023-12-31"]
    expected = {  # meteostat rounds every float to 0.1
        WX_TMAX: ((raw["T_air_max"] - 32) * 5 / 9).round(1),
        WX_TMIN: ((raw["T_air_min"] - 32) * 5 / 9).round(1),
        WX_PRCP: (raw["rain"] * 25.4).round(1),
        WX_SNOW: (raw["snow"] * 25.4).round(1),
    }

    assert len(frame) == len(raw) == 39 * 365 + 9
    for column, values in expected.items():
        np.testing.assert_array_equal(frame[column].to_numpy(), values.to_numpy(), err_msg=column)
    recent = frame.loc["2019-01-01":]
    assert recent.isna().sum().to_dict() == {WX_TMAX: 0, WX_TMIN: 0, WX_PRCP: 212, WX_SNOW: 81}


def test_missing_m_stays_nan(mirror, wx_cfg):
    frame = _load(wx_cfg, mirror[0], date(1902, 12, 21), date(1902, 12, 24))

    # 12/22/1902: 40 °F, M; 12/23/1902: M, 29 °F; 12/24/1902: rain and snow blank.
    assert np.isnan(frame.loc["1902-12-22", WX_TMIN]) and frame.loc["1902-12-22", WX_TMAX] == 4.4
    assert np.isnan(frame.loc["1902-12-23", WX_TMAX]) and frame.loc["1902-12-23", WX_TMIN] == -1.7
    assert frame.loc["1902-12-24", [WX_PRCP, WX_SNOW]].isna().all()
    assert frame.loc["1902-12-21", WX_PRCP] == 10.4  # 0.41 in


def test_load_returns_every_day_of_the_range(mirror, wx_cfg, caplog):
    frame = weather.load_daily_weather(wx_cfg, mirror[0], date(2023, 12, 30), date(2024, 1, 2))

    assert list(frame.columns) == [WX_DATE, *WEATHER_COLUMNS]
    assert list(frame[WX_DATE]) == list(pd.date_range("2023-12-30", "2024-01-02", freq="D"))
    assert frame[WX_DATE].dt.tz is None
    assert all(frame[c].dtype == "float64" for c in WEATHER_COLUMNS)
    assert frame.iloc[2:][list(WEATHER_COLUMNS)].isna().all().all()  # no 2024 file in the mirror
    assert frame.iloc[0][WX_TMAX] == 4.4
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.name for r in warnings] == ["features.weather"] and "[2024]" in warnings[0].message


def test_load_beyond_the_mirror_is_all_nan(mirror, wx_cfg):
    frame = weather.load_daily_weather(wx_cfg, mirror[0], date(2024, 3, 1), date(2024, 3, 3))

    assert len(frame) == 3 and frame[list(WEATHER_COLUMNS)].isna().all().all()


def test_load_rejects_an_inverted_range(mirror, wx_cfg):
    with pytest.raises(ValueError, match="before start"):
        weather.load_daily_weather(wx_cfg, mirror[0], date(2023, 1, 2), date(2023, 1, 1))


def test_local_mode_makes_no_network_call(mirror, wx_cfg, monkeypatch):
    calls: list[tuple] = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network used in a hermetic test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    frame = _load(wx_cfg, mirror[0], date(2023, 12, 1), date(2023, 12, 31))

    assert calls == []
    assert frame[WX_TMAX].notna().all()
    assert frame.loc["2023-12-30", WX_PRCP] == 1.0


def test_meteostat_reads_the_mirror_even_after_its_endpoint_was_captured(
    mirror, wx_cfg, tmp_path, monkeypatch
):
    """meteostat's daily provider copies the endpoint into a module constant on first import;
    simulate an earlier capture of another endpoint, then read two different mirrors in turn."""
    from meteostat.providers.meteostat import daily as provider

    stale = str(tmp_path / "stale" / "{year}" / "{station}.csv.gz")
    monkeypatch.setattr(provider, "ENDPOINT", stale)
    monkeypatch.setattr(ms.config, "daily_endpoint", stale)
    other = tmp_path / "other"
    rows = pd.DataFrame(
        {"year": [2023], "month": [12], "day": [30], "tmin": [-3.0], "tmin_source": ["ghcnd"],
         "tmax": [21.5], "tmax_source": ["ghcnd"]}
    )  # fmt: skip
    weather.write_mirror_year(rows, weather.mirror_path(other, 2023, wx_cfg.station.id))

    real = _load(wx_cfg, mirror[0], date(2023, 12, 30), date(2023, 12, 30))
    hand = _load(wx_cfg, other, date(2023, 12, 30), date(2023, 12, 30))

    assert (real.iloc[0][WX_TMAX], real.iloc[0][WX_PRCP]) == (4.4, 1.0)
    assert (hand.iloc[0][WX_TMAX], hand.iloc[0][WX_TMIN]) == (21.5, -3.0)
    assert np.isnan(hand.iloc[0][WX_PRCP])
    assert provider.ENDPOINT == stale and ms.config.daily_endpoint == stale  # restored


def test_endpoints_by_mode(tmp_path, wx_cfg):
    online = weather.daily_endpoint("online", tmp_path)
    local = weather.daily_endpoint("local", tmp_path)

    assert online == "https://data.meteostat.net/daily/{year}/{station}.csv.gz"
    assert Path(local.format(year=2023, station=wx_cfg.station.id)) == weather.mirror_path(
        tmp_path.resolve(), 2023, wx_cfg.station.id
    )


# ---------------------------------------------------------------- the NOAA contract


def _broken_copy(noaa_csv: Path, path: Path, edits: dict[int, str], year: int = 2023) -> Path:
    """A copy of one real year with some lines replaced, written at test time."""
    header, lines = _real_lines(noaa_csv, year)
    for index, line in edits.items():
        lines[index] = line
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_contract_quarantines_broken_rows_and_names_the_columns(tmp_path, noaa_csv, wx_cfg):
    broken = _broken_copy(
        noaa_csv,
        tmp_path / "broken.csv",
        {
            9: "1/10/2023,0.5,0,150,40",  # T_air_max out of range
            19: "1/20/2023,abc,0,50,40",  # rain not a number
            29: "13/45/2023,0,0,50,40",  # no such date
            39: "2/9/2023,0,0,30,40",  # maximum below minimum
        },
    )
    mirror_dir, quarantine = tmp_path / "mirror", tmp_path / "quarantine"
    paths, result = weather.convert_noaa_daily(
        broken, mirror_dir, wx_cfg.station, quarantine_dir=quarantine
    )

    assert (result.rows_in, result.rows_quarantined) == (365, 4)
    assert {f["column"] for f in result.failures} == {
        "T_air_max",
        "rain",
        "date_parsed",
        "tmax_ge_tmin",
    }
    set_aside = pd.read_csv(result.quarantine_file, dtype=str)
    assert sorted(set_aside["date"]) == ["1/10/2023", "1/20/2023", "13/45/2023", "2/9/2023"]
    assert "T_air_max:values_between" in set(set_aside["_failed_rules"])

    frame = _load(wx_cfg, mirror_dir, date(2023, 1, 9), date(2023, 1, 11))
    assert frame.loc["2023-01-10"].isna().all()  # the set-aside day loads as missing
    assert list(frame.loc[["2023-01-09", "2023-01-11"], WX_TMAX]) == [7.8, 14.4]  # 46, 58 °F


def test_contract_stops_when_too_many_rows_are_broken(tmp_path, noaa_csv, wx_cfg):
    edits = {i: f"1/{i + 1}/2023,0,0,999,40" for i in range(30)}
    broken = _broken_copy(noaa_csv, tmp_path / "broken.csv", edits)

    with pytest.raises(ContractError) as caught:
        weather.convert_noaa_daily(broken, tmp_path / "mirror", wx_cfg.station)
    message = str(caught.value)
    assert "broken.csv" in message and "'T_air_max'" in message and "values_between" in message
    assert "30 of 365 rows" in message and "°F" in message
    assert not (tmp_path / "mirror").exists()


def test_contract_names_a_missing_column(tmp_path, wx_cfg):
    broken = tmp_path / "no_tmin.csv"
    broken.write_text("date,rain,snow,T_air_max\n1/1/2023,0,0,50\n")

    with pytest.raises(ContractError, match="missing columns: 'T_air_min'"):
        weather.convert_noaa_daily(broken, tmp_path / "mirror", wx_cfg.station)
