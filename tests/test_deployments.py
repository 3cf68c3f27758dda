"""Scheduled deployments (flows/deployments.py, flows/scheduled.py): how they are built, that
a real Prefect API stores their schedules as built, that the hourly refresh rescores only on
a newer forecast, that a failed run carries its reason on one line, and that the nightly run
without retraining scores with the registered champion.

Forecasts are tiny NetCDF files written into tmp_path and read back through the real reader;
the broken input is a slice of the real events file with a renamed column."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from configs.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "configs" / "kentucky.yaml"
EVENTS = "lgeku_outages_kentucky/lgeku_outage_events_2019-12_2023-12.csv.gz"


@pytest.fixture(scope="module")
def deployments(kentucky_settings):
    from flows.deployments import build_deployments

    return {d.name: d for d in build_deployments(kentucky_settings, PROFILE)}


# ------------------------------------------------------------------ how they are built


def test_three_deployments_with_crons_time_zone_parameters_and_limits(deployments):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    assert set(deployments) == {"nightly", "weekly-retrain", "hourly-refresh"}
    expected = {  # deployment: flow, cron, parameters, what a second concurrent run does
        "nightly": ("forewarn-scheduled-nightly", "0 3 * * 1-6",
                    {"config": str(PROFILE), "retrain": False}, ConcurrencyLimitStrategy.ENQUEUE),
        "weekly-retrain": ("forewarn-scheduled-nightly", "0 3 * * 0",
                           {"config": str(PROFILE), "retrain": True},
                           ConcurrencyLimitStrategy.ENQUEUE),
        "hourly-refresh": ("forewarn-refresh", "15 * * * *", {"config": str(PROFILE)},
                           ConcurrencyLimitStrategy.CANCEL_NEW),
    }
    for name, (flow_name, cron, parameters, strategy) in expected.items():
        d = deployments[name]
        [schedule] = d.schedules
        assert d.flow_name == flow_name
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, "America/New_York")
        assert schedule.active
        assert d.parameters == parameters
        assert d.concurrency_limit == 1 and d.concurrency_options.collision_strategy == strategy
        assert d.tags == ["forewarn", "kentucky"]
        assert d.entrypoint in {"flows.scheduled.scheduled_nightly", "flows.scheduled.refresh"}


def test_nightly_and_weekly_retrain_together_fire_once_every_night_across_dst(deployments):
    """Two weeks around each daylight-saving change of 2026 in New York (8 March, 1
    November): every local night has exactly one run, at 03:00 local time (02:00 would not
    exist on 8 March), and the Sunday one retrains."""
    from prefect.server.schemas.schedules import CronSchedule

    for first_day, sundays in (("2026-03-02", {"2026-03-08", "2026-03-15"}),
                               ("2026-10-26", {"2026-11-01", "2026-11-08"})):
        days = pd.date_range(first_day, periods=14)
        start = datetime.fromisoformat(first_day).replace(tzinfo=UTC)
        end = start + pd.Timedelta(days=14)
        fires: dict[str, str] = {}
        for name in ("nightly", "weekly-retrain"):
            sched = deployments[name].schedules[0].schedule
            server = CronSchedule(cron=sched.cron, timezone=sched.timezone)
            for when in asyncio.run(server.get_dates(n=100, start=start, end=end)):
                local = when.astimezone(ZoneInfo("America/New_York"))
                assert (local.hour, local.minute) == (3, 0), (name, when)
                assert local.date().isoformat() not in fires
                fires[local.date().isoformat()] = name
        assert sorted(fires) == [d.date().isoformat() for d in days]
        assert {d for d, n in fires.items() if n == "weekly-retrain"} == sundays


def test_settings_refuse_a_bad_cron_or_time_zone(data_dir):
    with pytest.raises(SettingsError, match=r"deployments.nightly_cron: .*not a 5-field cron"):
        load_settings(PROFILE, overrides={"deployments": {"nightly_cron": "0 2 * *"}})
    with pytest.raises(SettingsError, match=r"deployments.timezone: .*unknown time zone"):
        load_settings(PROFILE, overrides={"deployments": {"timezone": "Kentucky/Lexington"}})


def test_io_tasks_get_the_configured_timeout_and_a_timed_out_attempt_is_retried(
        kentucky_settings):
    from prefect.states import Failed
    from prefect.task_engine import TaskRunTimeoutError

    from features.contracts import ContractError
    from flows.nightly import _io, io_failure, load_outages, publish

    cfg = kentucky_settings.model_copy(update={"deployments": kentucky_settings.deployments
                                               .model_copy(update={"io_timeout_s": 42.0})})
    assert _io(cfg, load_outages).timeout_seconds == 42.0
    assert _io(cfg, publish).retries == 2 and load_outages.timeout_seconds is None
    assert io_failure(None, None, Failed(data=TaskRunTimeoutError("slow disk")))
    assert not io_failure(None, None, Failed(data=ContractError("bad rows")))


# ------------------------------------------------------------------ against a real Prefect API


def test_applied_deployments_read_back_with_their_schedules(prefect_api, deployments):
    from prefect import get_client

    for d in deployments.values():
        d.apply()

    async def read() -> dict:
        async with get_client() as client:
            return {name: await client.read_deployment_by_name(f"{d.flow_name}/{name}")
                    for name, d in deployments.items()}

    stored = asyncio.run(read())
    crons = {name: [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]
             for name, d in stored.items()}
    assert crons == {"nightly": [("0 3 * * 1-6", "America/New_York", True)],
                     "weekly-retrain": [("0 3 * * 0", "America/New_York", True)],
                     "hourly-refresh": [("15 * * * *", "America/New_York", True)]}
    assert stored["weekly-retrain"].parameters == {"config": str(PROFILE), "retrain": True}
    assert stored["nightly"].parameters["retrain"] is False
    for d in stored.values():
        assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1
    assert stored["hourly-refresh"].concurrency_options.collision_strategy == "CANCEL_NEW"


def _broken_profile(root: Path, data_dir: Path) -> Path:
    raw = pd.read_csv(data_dir / EVENTS, nrows=2000, low_memory=False)
    broken = root / "events_renamed_column.csv.gz"
    raw.rename(columns={"first_seen_utc": "first_seen"}).to_csv(broken, index=False)
    profile = root / "broken.yaml"
    profile.write_text(f"outages:\n  events_file: {broken}\n", encoding="utf-8")
    return profile


def test_a_failed_scheduled_run_records_its_reason_on_one_line(prefect_api, data_dir, tmp_path):
    from prefect import get_client

    from flows.scheduled import scheduled_nightly

    profile = _broken_profile(tmp_path, data_dir)
    state = scheduled_nightly(config=str(profile), return_state=True)
    assert state.is_failed()

    async def stored_message() -> str | None:
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            return run.state.message if run.state else None

    message = asyncio.run(stored_message())
    assert message == state.message
    assert "\n" not in message
    assert "ContractError: data contract 'lgeku_events' failed for" in message
    assert "missing columns: 'first_seen_utc'" in message


def test_the_refresh_flow_does_nothing_with_replayed_weather(prefect_api, tmp_path):
    from flows.scheduled import refresh

    result = refresh(config=str(PROFILE))
    assert result["rescored"] is False
    assert result["reason"].startswith("forecast.use is replay")
    assert result["newest_issue_ts"] is None


# ------------------------------------------------------------------ the refresh decision


def _forecast(path: Path, issue: str) -> None:
    """A 24 h NetCDF forecast over Kentucky (2 m temperature in K, precipitation totals)."""
    lats, lons = np.arange(36.0, 40.01, 1.0), np.arange(-90.0, -81.9, 1.0)
    steps = pd.to_timedelta(np.arange(25), unit="h")
    ones = np.ones((1, len(steps), len(lats), len(lons)))
    dims = ("time", "step", "latitude", "longitude")
    xr.Dataset({"t2m": (dims, ones * 283.0, {"units": "K"}),
                "tp": (dims, ones * np.arange(25)[None, :, None, None], {"units": "kg m-2"})},
               coords={"time": [pd.Timestamp(issue).to_datetime64()], "step": steps,
                       "latitude": lats, "longitude": lons}).to_netcdf(path)


def _run(runs: Path, run_id: str, created: str, issue_ts: str | None) -> None:
    forecast = {"use": "forecast", "status": "used", "issue_ts": issue_ts} if issue_ts else {
        "use": "replay"}
    (runs / run_id).mkdir(parents=True)
    (runs / run_id / "run.json").write_text(json.dumps(
        {"run_id": run_id, "created_utc": created, "forecast": forecast}))


def test_refresh_rescores_only_when_a_newer_forecast_arrived(data_dir, tmp_path):
    from flows.scheduled import refresh_check

    home, folder = tmp_path / "home", tmp_path / "nwp"
    folder.mkdir()
    cfg = load_settings(PROFILE, environ={"FOREWARN_DATA_DIR": str(data_dir),
                                          "FOREWARN_HOME": str(home)},
                        overrides={"forecast": {"use": "forecast", "directory": str(folder),
                                                "file_glob": "*.nc"}})
    now = pd.Timestamp("2026-12-04T10:15:00Z")
    _forecast(folder / "a.nc", "2026-12-04T00:00")
    _forecast(folder / "b.nc", "2026-12-04T06:00")
    _forecast(folder / "c.nc", "2026-12-04T12:00")  # not issued yet at `now`

    first = refresh_check.fn(cfg, now)
    assert first.rescore and first.newest_issue_ts == "2026-12-04T06:00:00+00:00"
    assert first.reason.endswith("(no run yet)")

    # the latest run (by creation, not by id) used the 06 UTC forecast: nothing newer
    _run(cfg.paths.runs_dir, "20261203T0600Z-20261204T070000Z-aaaaaa",
         "2026-12-04T07:00:00+00:00", "2026-12-04T06:00:00+00:00")
    _run(cfg.paths.runs_dir, "20261204T0000Z-20261204T020000Z-bbbbbb",
         "2026-12-04T02:00:00+00:00", "2026-12-04T00:00:00+00:00")
    (cfg.paths.runs_dir / "20261204T0900Z-unfinished").mkdir()  # no run.json: not a run
    skip = refresh_check.fn(cfg, now)
    assert not skip.rescore
    assert skip.last_run_id == "20261203T0600Z-20261204T070000Z-aaaaaa"
    assert skip.reason == ("no newer forecast: the newest, issued 2026-12-04T06:00:00+00:00, "
                           "is the one run 20261203T0600Z-20261204T070000Z-aaaaaa used")

    later = refresh_check.fn(cfg, pd.Timestamp("2026-12-04T13:15:00Z"))
    assert later.rescore and later.newest_issue_ts == "2026-12-04T12:00:00+00:00"
    assert later.last_issue_ts == "2026-12-04T06:00:00+00:00"

    # a run that replayed observed weather used no forecast: any forecast is newer
    _run(cfg.paths.runs_dir, "20261204T0800Z-20261204T090000Z-cccccc",
         "2026-12-04T09:00:00+00:00", None)
    assert refresh_check.fn(cfg, now).rescore


# ------------------------------------------------------------------ nightly without retraining

AREAS = ["21111", "21067", "21185", "21013"]  # as in tests/test_integration.py
AS_OF = "2023-03-02T12:00:00Z"


@pytest.mark.integration
def test_nightly_without_retrain_trains_only_when_no_champion_exists(
        prefect_api, data_dir, tmp_path):
    from mlflow import MlflowClient

    from flows.nightly import nightly

    cfg = load_settings(PROFILE, environ={"FOREWARN_DATA_DIR": str(data_dir),
                                          "FOREWARN_HOME": str(tmp_path / "home")},
                        overrides={
                            "areas": {"include": AREAS},
                            "model": {"train_start": "2022-03-01T00:00:00Z", "valid_hours": 720,
                                      "test_end": "2023-04-01T00:00:00Z",
                                      "num_boost_round": 80, "min_positive_hours": 300},
                            "restoration": {"num_boost_round": 40}})
    first = nightly(cfg, as_of=AS_OF, out=tmp_path / "runs", retrain=False)
    second = nightly(cfg, as_of=AS_OF, out=tmp_path / "runs", retrain=False)
    assert first["model"]["retrained"] and first["restoration"]["retrained"]
    assert first["model"]["gate"]["promote"]  # no champion yet: trained and promoted
    assert not second["model"]["retrained"] and not second["restoration"]["retrained"]
    assert second["model"]["version"] == first["model"]["version"] == "1"
    assert second["model"]["gate"]["reasons"] == ["not retrained: champion v1 scores this run"]
    assert "train_and_evaluate" not in second["timings_s"]
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    assert [str(v.version) for v in client.search_model_versions("name='forewarn-risk'")] == ["1"]
    # the champion, scored on the same test rows, has the metrics it was trained with
    assert second["metrics_overall"] == pytest.approx(first["metrics_overall"])
    hourly = [pd.read_parquet(Path(m["run_dir"]) / "risk_hourly.parquet") for m in
              (first, second)]
    pd.testing.assert_series_equal(hourly[0]["prob"], hourly[1]["prob"])


# ------------------------------------------------------------------ the commands


def test_deploy_refuses_in_one_line_without_a_prefect_server_and_both_commands_have_help(
        monkeypatch):
    import logging

    import prefect

    def served(*deployments):  # had it not refused, serve() would block the suite forever
        raise AssertionError("forewarn deploy served without a Prefect server")

    monkeypatch.setattr(prefect, "serve", served)

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from flows.cli import app

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        # the suite's Prefect API (prefect_api fixture) is set through Prefect's settings
        # context, which outranks the environment: take it away for this command
        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            result = CliRunner().invoke(app, ["deploy", "--config", str(PROFILE)],
                                        env={"PREFECT_API_URL": ""})
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "forewarn: error: no Prefect server configured: schedules need one; start it with "
        "`forewarn prefect-server`, then export PREFECT_API_URL=http://127.0.0.1:4200/api")
    for command, example in (("deploy", "export PREFECT_API_URL=http://127.0.0.1:4200/api "
                                        "forewarn deploy --config"),
                             ("prefect-server", "Examples forewarn prefect-server --config")):
        text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        assert example in " ".join(text.split())
