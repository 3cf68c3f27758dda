"""Forecasts in scoring (features/forecast_weather.py and the nightly flow).

No forecast archive overlaps the Kentucky outage history, so the forecasts here are written
at test time into tmp_path: NetCDF files on a regular lat/lon grid over Kentucky (2 m
temperature in K, precipitation as running totals in kg m-2), read back through the real
reader. The observed weather is the real Lexington station file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from configs.settings import load_settings
from features import columns as C
from features import forecast_weather as fw
from features.build import WEATHER, weather_by_hour

REPO = Path(__file__).resolve().parents[1]
AREAS = ["21111", "21067", "21185", "21013"]  # Jefferson, Fayette, Oldham, Bell
AS_OF = pd.Timestamp("2023-03-02T12:00:00Z")  # as in tests/test_integration.py
TZ = "America/New_York"
HORIZON = 72
LATS = np.arange(36.0, 40.01, 0.25)
LONS = np.arange(-90.0, -81.49, 0.25)


@pytest.fixture(scope="module")
def cfg(data_dir, tmp_path_factory):
    return load_settings(REPO / "configs/kentucky.yaml", environ={
        "FOREWARN_DATA_DIR": str(data_dir),
        "FOREWARN_HOME": str(tmp_path_factory.mktemp("fc-home"))})


@pytest.fixture(scope="module")
def observed(cfg, tmp_path_factory) -> pd.DataFrame:
    """The real Lexington daily weather, 2023-02-15 .. 2023-03-15, through the mirror."""
    from features.weather import convert_noaa_daily, load_daily_weather

    mirror = tmp_path_factory.mktemp("mirror")
    convert_noaa_daily(cfg.data_path(cfg.weather.noaa_daily_file), mirror, cfg.weather.station,
                       years=range(2023, 2024), quarantine_dir=mirror / "q")
    return load_daily_weather(cfg.weather, mirror, date(2023, 2, 15), date(2023, 3, 15))


@pytest.fixture(scope="module")
def areas(cfg) -> pd.DataFrame:
    from features.areas import read_counties

    counties = read_counties(cfg.data_path(cfg.areas.counties_file))
    counties = counties.rename(columns={C.EV_COUNTY: C.AREA})
    return counties[counties[C.AREA].isin(AREAS)][[C.AREA, C.AREA_LAT, C.AREA_LON]]


def _local_day(ts: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return ts.tz_convert(TZ).tz_localize(None).normalize()


def observed_hourly(observed: pd.DataFrame, issue: pd.Timestamp, lead_h: int
                    ) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Hourly steps (valid times) from ``issue`` and, for each, a 2 m temperature (°C) and a
    precipitation amount (mm) whose daily max/min/sum in the station's local day are the
    station's observed values: max at 15:00, min at 04:00 local, the day's rain at 12:00."""
    valid = pd.date_range(issue, periods=lead_h + 1, freq="h")
    d = observed.set_index(C.WX_DATE)
    day = _local_day(valid)
    hour = valid.tz_convert(TZ).hour
    tmax = d[C.WX_TMAX].reindex(day).to_numpy()
    tmin = d[C.WX_TMIN].reindex(day).to_numpy()
    t2m = np.where(hour == 15, tmax, np.where(hour == 4, tmin, (tmax + tmin) / 2))
    # a period ends at its valid time: the 11-12 h step holds the day's rain
    prcp = np.where(hour == 12, d[C.WX_PRCP].reindex(day).to_numpy(), 0.0)
    prcp[0] = 0.0
    return valid, t2m, prcp


def write_forecast(path: Path, issue: pd.Timestamp, t2m_c: np.ndarray, prcp_mm: np.ndarray,
                   *, lead_h: int, snow_mm: np.ndarray | None = None) -> Path:
    """A NetCDF forecast over Kentucky, the same value at every grid point: ``t2m`` in K,
    ``tp`` as running totals from the issue time in kg m-2 and, if given, ``asnow`` (new snow
    depth) as running totals in m; hourly steps 0 .. lead_h."""
    steps = pd.to_timedelta(np.arange(lead_h + 1), unit="h")
    shape = (1, lead_h + 1, len(LATS), len(LONS))
    field = np.ones(shape)
    ds = xr.Dataset(
        {"t2m": (("time", "step", "latitude", "longitude"),
                 field * (np.asarray(t2m_c) + 273.15)[None, :, None, None], {"units": "K"}),
         "tp": (("time", "step", "latitude", "longitude"),
                field * np.cumsum(prcp_mm)[None, :, None, None], {"units": "kg m-2"})},
        coords={"time": [issue.tz_localize(None).to_datetime64()], "step": steps,
                "latitude": LATS, "longitude": LONS},
    )
    if snow_mm is not None:
        ds["asnow"] = (("time", "step", "latitude", "longitude"),
                       field * np.cumsum(snow_mm / 1000)[None, :, None, None], {"units": "m"})
    ds.to_netcdf(path)
    return path


def settings_for(cfg, directory: Path, **forecast):
    section = cfg.forecast.model_copy(update={
        "use": "forecast", "directory": str(directory), "file_glob": "*.nc",
        "method": "nearest", **forecast})
    return section


# ------------------------------------------------------------------ parity by construction


def test_forecast_equal_to_observed_gives_exactly_the_replay_features(observed, cfg):
    """(a) A forecast whose daily aggregates are the station's observed days gives exactly
    the weather features that replay gives, for every area and hour of the horizon."""
    issue = AS_OF - pd.Timedelta(hours=12)
    valid, t2m, prcp = observed_hourly(observed, issue, 120)
    frame = pd.concat([pd.DataFrame({
        C.AREA: area, C.ISSUE_TS: issue, C.TS: valid,
        C.LEAD_H: (valid - issue) / pd.Timedelta(hours=1),
        C.FC_T2M: t2m, C.FC_PRCP: prcp,
        C.FC_SNOW: np.where(valid.tz_convert(TZ).hour == 12, observed.set_index(C.WX_DATE)[
            C.WX_SNOW].reindex(_local_day(valid)).to_numpy(), 0.0)}) for area in AREAS])
    got = fw.forecast_features(frame, observed, AS_OF, HORIZON, TZ, cfg.features)
    hours = pd.date_range(AS_OF, periods=HORIZON, freq="h")
    replay = weather_by_hour(observed, hours, TZ, cfg.features)
    assert list(got.hourly.columns) == list(WEATHER)
    assert got.variables == {C.WX_TMAX: C.FC_T2M, C.WX_TMIN: C.FC_T2M, C.WX_PRCP: C.FC_PRCP,
                             C.WX_SNOW: C.FC_SNOW}
    for area in AREAS:
        pd.testing.assert_frame_equal(got.hourly.loc[area], replay.rename_axis(C.TS),
                                      check_exact=True, check_freq=False)
    assert replay["wx_prcp_mm"].max() > 0  # the days are not trivially dry
    assert got.coverage["local_days"] == ["2023-03-02", "2023-03-03", "2023-03-04",
                                          "2023-03-05"]


def test_parity_holds_through_a_file_and_the_nightly_scoring_rows(observed, cfg, areas,
                                                                  tmp_path):
    """The same through a NetCDF file in K and kg m-2 (units converted by the reader) and
    into make_rows: the rows the model scores hold the replay values (to float rounding of
    the K conversion), names and units unchanged."""
    issue = AS_OF - pd.Timedelta(hours=12)
    valid, t2m, prcp = observed_hourly(observed, issue, 120)
    snow = np.where(valid.tz_convert(TZ).hour == 12, observed.set_index(C.WX_DATE)[
        C.WX_SNOW].reindex(_local_day(valid)).to_numpy(), 0.0)
    write_forecast(tmp_path / "fc.nc", issue, t2m, prcp, lead_h=120, snow_mm=snow)
    wx = fw.scoring_weather(settings_for(cfg, tmp_path), cfg.paths.data_dir, areas, observed,
                            AS_OF, HORIZON, TZ, cfg.features)
    assert wx.source == "forecast" and wx.record["issue_ts"] == issue.isoformat()
    hours = pd.date_range(AS_OF, periods=HORIZON, freq="h")
    replay = weather_by_hour(observed, hours, TZ, cfg.features)
    panel = _tiny_panel(hours)
    a, t = np.repeat(np.arange(len(AREAS)), HORIZON), np.tile(np.arange(HORIZON), len(AREAS))
    rows_fc = _rows(panel, wx.hourly, a, t, cfg)
    rows_rp = _rows(panel, replay, a, t, cfg)
    for col in WEATHER:
        np.testing.assert_allclose(rows_fc[col], rows_rp[col], rtol=0, atol=1e-4,
                                   err_msg=col)
    assert rows_fc["wx_prcp_mm"].notna().all()


def _tiny_panel(hours: pd.DatetimeIndex):
    from features.labels import HourlyPanel

    zeros = np.zeros((len(AREAS), len(hours)))
    return HourlyPanel(np.array(AREAS, dtype=object), hours, zeros, zeros.copy(),
                       np.ones(len(hours), dtype=bool), hours[0])


def _rows(panel, weather, a, t, cfg):
    from features.build import Climatology, make_rows

    areas = pd.DataFrame({C.AREA: AREAS, C.CUSTOMERS_SERVED: 1000, C.AREA_LAT: 37.5,
                          C.AREA_LON: -85.0})
    clim = Climatology(pd.DataFrame({C.AREA: AREAS, "month": 3, "hour": 0, "rate": 0.01}),
                       pd.Series(0.01, index=AREAS), 0.01)
    return make_rows(panel, areas, weather, clim, a, t, np.ones_like(t), cfg.features)


# ------------------------------------------------------------------ contracts


def test_newest_forecast_at_or_before_the_as_of_is_chosen_and_later_ones_ignored(
        observed, cfg, areas, tmp_path):
    for name, issue in (("a.nc", AS_OF - pd.Timedelta(hours=18)),
                        ("b.nc", AS_OF - pd.Timedelta(hours=6)),
                        ("c.nc", AS_OF + pd.Timedelta(hours=6))):  # not yet issued at as-of
        _, t2m, prcp = observed_hourly(observed, issue, 120)
        write_forecast(tmp_path / name, issue, t2m, prcp, lead_h=120)
    chosen = fw.choose_forecast(settings_for(cfg, tmp_path), cfg.paths.data_dir, AS_OF)
    assert [p.name for p in chosen.files] == ["b.nc"]
    assert chosen.issue_ts == AS_OF - pd.Timedelta(hours=6) and chosen.age_h == 6.0
    assert chosen.issues_found == 3


def test_a_stale_forecast_is_refused_with_the_reason(observed, cfg, areas, tmp_path):
    """(b) Issued 48 h before the as-of with max_age_h 24: refused, the message names the
    issue time, the age and the setting; with fallback replay it is flagged instead."""
    issue = AS_OF - pd.Timedelta(hours=48)
    _, t2m, prcp = observed_hourly(observed, issue, 168)
    write_forecast(tmp_path / "old.nc", issue, t2m, prcp, lead_h=168)
    section = settings_for(cfg, tmp_path, max_age_h=24)
    with pytest.raises(fw.ForecastRefused, match=r"stale: .*issued 2023-02-28T12:00:00\+00:00"
                       r", 48 h before, more than forecast.max_age_h 24 h") as err:
        fw.scoring_weather(section, cfg.paths.data_dir, areas, observed, AS_OF, HORIZON, TZ,
                           cfg.features)
    assert err.value.kind == "stale" and "\n" not in str(err.value)
    flagged = fw.scoring_weather(section.model_copy(update={"fallback": "replay"}),
                                 cfg.paths.data_dir, areas, observed, AS_OF, HORIZON, TZ,
                                 cfg.features)
    assert flagged.source == "replay" and flagged.hourly is None
    assert flagged.record["refused"] == "stale" and "48 h before" in flagged.record["reason"]
    assert flagged.record["files"] == [str(tmp_path / "old.nc")]
    fresh = fw.scoring_weather(section.model_copy(update={"max_age_h": 48}),
                               cfg.paths.data_dir, areas, observed, AS_OF, HORIZON, TZ,
                               cfg.features)
    assert fresh.source == "forecast" and fresh.record["age_h"] == 48.0


def test_an_incomplete_horizon_is_refused_or_flagged_as_configured(observed, cfg, areas,
                                                                   tmp_path):
    """(c) 48 h of lead time cannot cover the local days of a 72 h horizon (2-5 March)."""
    issue = AS_OF - pd.Timedelta(hours=6)
    _, t2m, prcp = observed_hourly(observed, issue, 48)
    write_forecast(tmp_path / "short.nc", issue, t2m, prcp, lead_h=48)
    section = settings_for(cfg, tmp_path)
    with pytest.raises(fw.ForecastRefused, match=r"incomplete for the 72 h horizon .* need "
                       r"steps until 2023-03-06T05:00:00\+00:00, but its precipitation steps "
                       r"reach only 2023-03-04T06:00:00\+00:00") as err:
        fw.scoring_weather(section, cfg.paths.data_dir, areas, observed, AS_OF, HORIZON, TZ,
                           cfg.features)
    assert err.value.kind == "incomplete"
    flagged = fw.scoring_weather(section.model_copy(update={"fallback": "replay"}),
                                 cfg.paths.data_dir, areas, observed, AS_OF, HORIZON, TZ,
                                 cfg.features)
    assert (flagged.source, flagged.record["refused"]) == ("replay", "incomplete")
    assert flagged.record["files"] == [str(tmp_path / "short.nc")]


def test_a_forecast_without_precipitation_is_incomplete(observed, cfg, areas, tmp_path):
    issue = AS_OF - pd.Timedelta(hours=6)
    _, t2m, prcp = observed_hourly(observed, issue, 120)
    path = write_forecast(tmp_path / "dry.nc", issue, t2m, prcp, lead_h=120)
    xr.load_dataset(path).drop_vars("tp").to_netcdf(tmp_path / "t_only.nc")
    path.unlink()
    with pytest.raises(fw.ForecastRefused, match="lacks what the model's weather features "
                       r"need: prcp_mm \(from one of \('fc_prcp_mm',\)\)"):
        fw.scoring_weather(settings_for(cfg, tmp_path), cfg.paths.data_dir, areas, observed,
                           AS_OF, HORIZON, TZ, cfg.features)


def test_implausible_values_refuse_the_forecast(observed, cfg, areas, tmp_path):
    """Temperatures already in °C but labelled K fail the reader's range contract; the
    refusal names the file and the rule, and is of kind "implausible"."""
    issue = AS_OF - pd.Timedelta(hours=6)
    _, t2m, prcp = observed_hourly(observed, issue, 120)
    path = write_forecast(tmp_path / "k.nc", issue, t2m - 273.15, prcp, lead_h=120)
    with pytest.raises(fw.ForecastRefused, match=r"k.nc: fc_t2m_c .* rule values_between") as err:
        fw.scoring_weather(settings_for(cfg, tmp_path), cfg.paths.data_dir, areas, observed,
                           AS_OF, HORIZON, TZ, cfg.features)
    assert err.value.kind == "implausible" and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_no_forecast_at_or_before_the_as_of_is_missing(observed, cfg, areas, tmp_path):
    issue = AS_OF + pd.Timedelta(hours=1)
    _, t2m, prcp = observed_hourly(observed, issue, 96)
    write_forecast(tmp_path / "late.nc", issue, t2m, prcp, lead_h=96)
    with pytest.raises(fw.ForecastRefused, match="no forecast .* was issued at or before the "
                       "as-of 2023-03-02T12:00:00"):
        fw.choose_forecast(settings_for(cfg, tmp_path), cfg.paths.data_dir, AS_OF)


def test_settings_need_a_directory_to_use_forecasts(tmp_path):
    from configs.settings import SettingsError

    bad = tmp_path / "fc.yaml"
    bad.write_text("forecast:\n  use: forecast\n  directory: ''\n")
    with pytest.raises(SettingsError, match="use: forecast needs forecast.directory"):
        load_settings(bad, environ={})
    assert load_settings(REPO / "configs/kentucky.yaml", environ={}).forecast.use == "replay"


# ------------------------------------------------------------------ the nightly flow


def _flow_settings(cfg, data_dir, home: Path, forecast_dir: Path, **forecast):
    return load_settings(
        REPO / "configs/kentucky.yaml",
        environ={"FOREWARN_DATA_DIR": str(data_dir), "FOREWARN_HOME": str(home)},
        overrides={
            "areas": {"include": AREAS},
            "model": {"train_start": "2022-03-01T00:00:00Z", "valid_hours": 720,
                      "test_end": "2023-04-01T00:00:00Z", "num_boost_round": 80,
                      "min_positive_hours": 300},
            "windows": {"min_probability": 0.15, "min_lift": 1.2},
            "restoration": {"enabled": False},
            "forecast": {"use": "forecast", "directory": str(forecast_dir),
                         "file_glob": "*.nc", **forecast},
        },
    )


def _flat_forecast(directory: Path, rain_mm: float) -> Path:
    """Issued 6 h before the as-of, 0-96 h: a mild diurnal cycle and ``rain_mm`` falling
    through 3 March (local), dry otherwise."""
    issue = AS_OF - pd.Timedelta(hours=6)
    valid = pd.date_range(issue, periods=97, freq="h")
    local = valid.tz_convert(TZ)
    t2m = 8.0 + 6.0 * np.sin((local.hour.to_numpy() - 9) / 24 * 2 * np.pi)
    # a step's amount falls in the period ending at its valid time: local day of (valid - 1 us)
    ends_in = _local_day(valid - pd.Timedelta(microseconds=1))
    wet = (ends_in == pd.Timestamp("2023-03-03")) & (np.arange(97) > 0)
    prcp = np.where(wet, rain_mm / wet.sum(), 0.0)
    directory.mkdir(parents=True, exist_ok=True)
    return write_forecast(directory / f"fc_{int(rain_mm)}mm.nc", issue, t2m, prcp, lead_h=96)


@pytest.fixture(scope="module")
def forecast_runs(prefect_api, cfg, data_dir, tmp_path_factory):
    """The real nightly flow twice for the same as-of, with a dry forecast and with one of
    80 mm of rain on 3 March; everything else equal."""
    from flows.nightly import nightly

    runs = {}
    for rain in (0.0, 80.0):
        root = tmp_path_factory.mktemp(f"fc{int(rain)}")
        _flat_forecast(root / "forecasts", rain)
        settings = _flow_settings(cfg, data_dir, root / "home", root / "forecasts")
        runs[rain] = nightly(settings, as_of=AS_OF.isoformat(), out=root / "runs")
    return runs


@pytest.mark.integration
def test_run_json_names_the_forecast_file_issue_time_and_age(forecast_runs):
    """(d) run.json, the hourly rows and the windows say which forecast scored the run."""
    run = forecast_runs[80.0]
    run_dir = Path(run["run_dir"])
    manifest = json.loads((run_dir / "run.json").read_text())
    fc = manifest["forecast"]
    assert manifest["weather_source"] == "forecast" and fc["status"] == "used"
    assert [Path(f).name for f in fc["files"]] == ["fc_80mm.nc"]
    assert fc["issue_ts"] == "2023-03-02T06:00:00+00:00" and fc["age_h"] == 6.0
    assert fc["coverage"]["share"] == 1.0 and fc["lead_h"] == [0.0, 96.0]
    assert fc["daily_from"][C.WX_PRCP] == C.FC_PRCP
    assert fc["daily_from"][C.WX_SNOW] is None  # no snowfall in the file
    assert any(i["path"] == fc["files"][0] and len(i["sha256"]) == 64
               for i in manifest["inputs"])
    assert {"forecast_read", "forecast_sample", "forecast_convert"} <= set(
        manifest["timings_s"])
    hourly = pd.read_parquet(run_dir / "risk_hourly.parquet")
    assert (hourly["weather_source"] == "forecast").all()
    assert (hourly["forecast_issue_ts"] == "2023-03-02T06:00:00+00:00").all()
    assert (hourly["forecast_files"] == "fc_80mm.nc").all()
    windows = pd.read_parquet(run_dir / "risk_windows.parquet")
    assert (windows["weather_source"] == "forecast").all()
    assert (windows["forecast_files"] == "fc_80mm.nc").all()


@pytest.mark.integration
def test_forecast_rain_moves_the_risk(forecast_runs):
    """(e) Same as-of, same data: 80 mm of forecast rain on 3 March gives higher risk than a
    dry forecast for some areas on that day, and the antecedent-rain feature carries it on."""
    dry, wet = (pd.read_parquet(Path(forecast_runs[r]["run_dir"]) / "risk_hourly.parquet")
                for r in (0.0, 80.0))
    assert forecast_runs[0.0]["model"]["version"] == forecast_runs[80.0]["model"]["version"]
    merged = dry.merge(wet, on=[C.AREA, C.TS], suffixes=("_dry", "_wet"))
    assert len(merged) == len(AREAS) * HORIZON
    on_day = _local_day(pd.DatetimeIndex(merged[C.TS])) == pd.Timestamp("2023-03-03")
    lift = (merged["prob_wet"] - merged["prob_dry"])[on_day].groupby(
        merged.loc[on_day, C.AREA]).mean()
    assert (lift > 0.01).any(), lift.to_dict()
    before = _local_day(pd.DatetimeIndex(merged[C.TS])) == pd.Timestamp("2023-03-02")
    np.testing.assert_allclose(merged.loc[before, "prob_wet"], merged.loc[before, "prob_dry"])


@pytest.mark.integration
def test_a_stale_forecast_stops_the_nightly_flow_before_training(prefect_api, cfg, data_dir,
                                                                 tmp_path):
    from flows.nightly import nightly

    _flat_forecast(tmp_path / "forecasts", 0.0)
    settings = _flow_settings(cfg, data_dir, tmp_path / "home", tmp_path / "forecasts",
                              max_age_h=3)
    with pytest.raises(fw.ForecastRefused, match="stale: .* 6 h before, more than "
                       "forecast.max_age_h 3 h"):
        nightly(settings, as_of=AS_OF.isoformat(), out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing was trained


@pytest.fixture()
def cli_process_logging(tmp_path):
    """The CLI configures process-wide logging (a file handler under its home, a filter on
    console handlers); undo that after the in-process run."""
    yield
    import logging

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "forewarn.failures"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            for flt in [f for f in handler.filters if type(f).__module__ == "flows.cli"]:
                handler.removeFilter(flt)
            if isinstance(handler, logging.FileHandler) and Path(
                    handler.baseFilename).is_relative_to(tmp_path):
                logger.removeHandler(handler)
                handler.close()
    logging.getLogger("forewarn.failures").propagate = True


def test_cli_stops_on_a_stale_forecast_with_one_line_and_exit_2(
        observed, data_dir, tmp_path, monkeypatch, cli_process_logging):
    """`forewarn nightly` with a profile pointing at a stale forecast: exit code 2 and the
    reason on one line of stderr. The flow is replaced by its forecast step (the real
    choose_forecast on the real profile's settings), so no Prefect server starts."""
    from typer.testing import CliRunner

    import flows.nightly
    from flows.cli import app

    issue = AS_OF - pd.Timedelta(hours=30)
    _, t2m, prcp = observed_hourly(observed, issue, 120)
    (tmp_path / "fc").mkdir()
    write_forecast(tmp_path / "fc" / "old.nc", issue, t2m, prcp, lead_h=120)
    profile = tmp_path / "fc.yaml"
    profile.write_text(f"forecast:\n  use: forecast\n  directory: {tmp_path / 'fc'}\n"
                       "  file_glob: '*.nc'\n  max_age_h: 24\n", encoding="utf-8")

    def nightly(cfg, as_of=None, out=None):
        fw.choose_forecast(cfg.forecast, cfg.paths.data_dir, pd.Timestamp(as_of))
        raise AssertionError("the stale forecast was accepted")

    monkeypatch.setattr(flows.nightly, "nightly", nightly)
    result = CliRunner().invoke(
        app, ["nightly", "--config", str(profile), "--as-of", "2023-03-02T12:00:00Z"],
        env={"FOREWARN_DATA_DIR": str(data_dir), "FOREWARN_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line == (
        "forewarn: error: forecast is stale: the newest forecast issued at or before the as-of "
        "2023-03-02T12:00:00+00:00 was issued 2023-03-01T06:00:00+00:00, 30 h before, more "
        "than forecast.max_age_h 24 h (files: old.nc); hint: fetch a newer forecast or raise "
        "max_age_h")
