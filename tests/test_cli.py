"""The ``forewarn`` command line: help texts, and bad inputs that must stop the run with a
one-line reason on stderr (exit code 2) instead of a traceback.

Broken inputs are made at test time in tmp_path from a small real slice of the events file; the
data folder given to the CLI holds symlinks to the real data plus those broken copies. Most
error paths run the real CLI in process, with the flow replaced by its first task's body (no
Prefect server); one test runs the console script and the real flow end to end (~30-40 s: the
ephemeral Prefect server starts before the first task fails).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from configs.settings import Settings, load_settings
from features.contracts import ContractError
from flows.cli import app

REPO = Path(__file__).resolve().parents[1]
FOREWARN = Path(sys.executable).with_name("forewarn")
EVENTS = "lgeku_outages_kentucky/lgeku_outage_events_2019-12_2023-12.csv.gz"
SLICE_ROWS = 3000


def _data_dir(root: Path, real: Path) -> Path:
    """A data folder of symlinks to the real sources, plus broken copies under ``broken/``."""
    data = root / "data"
    (data / "broken").mkdir(parents=True)
    for source in real.iterdir():
        if source.is_dir():
            (data / source.name).symlink_to(source, target_is_directory=True)
    raw = pd.read_csv(real / EVENTS, nrows=SLICE_ROWS, low_memory=False)
    raw.to_csv(data / "broken" / "events_ok.csv.gz", index=False)
    raw.rename(columns={"first_seen_utc": "first_seen"}).to_csv(
        data / "broken" / "events_renamed_column.csv.gz", index=False)
    garbled = raw.copy()
    most = garbled.index[: int(0.8 * len(garbled))]
    for column in ("reported_start_time", "reported_start_time_last", "first_seen_utc"):
        # US-style local text instead of ISO-8601 UTC
        garbled[column] = garbled[column].astype(object)
        garbled.loc[most, column] = pd.to_datetime(garbled.loc[most, column], format="ISO8601").dt.strftime(
            "%m/%d/%Y %I:%M %p")
    garbled.to_csv(data / "broken" / "events_bad_times.csv.gz", index=False)
    return data


def _profile(root: Path, events_file: str) -> Path:
    path = root / f"profile_{Path(events_file).name.split('.')[0]}.yaml"
    path.write_text(f"outages:\n  events_file: {events_file}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _data_dir(tmp_path_factory.mktemp("cli"), data_dir)


def _settings(data: Path, events_file: str) -> Settings:
    env = {**os.environ, "FOREWARN_DATA_DIR": str(data),
           "FOREWARN_HOME": str(data.parent / "home")}
    return load_settings(_profile(data.parent, events_file), environ=env)


# --- help -------------------------------------------------------------------------------------


def test_console_script_help_lists_the_subcommands() -> None:
    run = subprocess.run([str(FOREWARN), "--help"], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert run.returncode == 0, run.stderr
    for command in ("nightly", "advise", "report", "weather-mirror", "ui"):
        assert command in run.stdout


def test_nightly_help_lists_its_options() -> None:
    result = CliRunner().invoke(app, ["nightly", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--config", "--as-of", "--out", "--quiet", "configs/kentucky.yaml"):
        assert option in result.output


def _commands() -> list[str]:
    """Every command registered on the app, including those added after this test was
    written (read from the click group typer builds, not from a list kept here)."""
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_app_has_the_known_commands() -> None:
    assert set(_commands()) >= {"nightly", "backtest", "advise", "report", "weather-mirror",
                                "dispatch", "serve", "notify-run", "ui"}


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_with_an_example(command: str) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(app, [command, flag], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = result.output
        assert f"Usage: forewarn {command}" in text
        assert "Example" in text, f"`forewarn {command} --help` shows no example"
        example = text[text.index("Example"):]
        assert f"forewarn {command}" in example  # the example runs this very command
        # rich markup rendered, not printed; literal brackets in examples survive
        assert "[b]" not in text and "[/b]" not in text


def test_help_paragraphs_are_not_broken_mid_sentence() -> None:
    """Docstrings are wrapped at 95 columns in the source; the help flows them to the
    terminal's width instead of keeping those breaks."""
    result = CliRunner().invoke(app, ["nightly", "--help"], env={"COLUMNS": "200"})
    assert "Reads and checks the sources, trains and evaluates the model against climatology " \
           "on a later period" in result.output


def test_top_level_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Examples" in result.output and "forewarn COMMAND --help" in result.output


# --- the loading task on broken copies (function level) ---------------------------------------


def test_load_outages_task_reads_the_unbroken_slice(data: Path) -> None:
    from flows.nightly import load_outages

    history = load_outages.fn(_settings(data, "broken/events_ok.csv.gz"))
    assert len(history.events) == SLICE_ROWS
    assert history.contracts[0].rows_quarantined == 0
    assert history.source_files[0] == data / "broken" / "events_ok.csv.gz"


@pytest.mark.parametrize(
    ("events_file", "expected"),
    [
        ("broken/no_such_events.csv.gz", ["input file not found", "no_such_events.csv.gz"]),
        ("broken/events_renamed_column.csv.gz",
         ["events_renamed_column.csv.gz", "missing columns: 'first_seen_utc'"]),
        ("broken/events_bad_times.csv.gz",
         ["events_bad_times.csv.gz", "column '_first_seen'", "2400 of 3000 rows fail",
          "(first_seen_utc)", "ISO-8601"]),
    ],
)
def test_load_outages_task_rejects_broken_inputs(data: Path, events_file: str,
                                                 expected: list[str]) -> None:
    from flows.nightly import load_outages

    with pytest.raises(ContractError) as err:
        load_outages.fn(_settings(data, events_file))
    for text in expected:
        assert text in str(err.value)


# --- the real CLI in process ------------------------------------------------------------------


@pytest.fixture()
def cli_logging(data: Path):
    """The CLI configures logging for a whole process (a log file handler under its home, a
    filter that strips tracebacks from console handlers); undo that after each in-process run."""
    yield
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "forewarn.failures"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            for flt in [f for f in handler.filters
                        if type(f).__module__ in ("flows.cli", "serving.privacy")]:
                handler.removeFilter(flt)
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(
                    data.parent):
                logger.removeHandler(handler)
                handler.close()
    logging.getLogger("forewarn.failures").propagate = True


@pytest.fixture()
def flow_without_prefect(monkeypatch: pytest.MonkeyPatch, cli_logging: None) -> list[str]:
    """Replace the nightly flow with the body of its first task; records the files it read."""
    import flows.nightly

    seen: list[str] = []

    def nightly(cfg: Settings, as_of: str | None = None, out: Path | None = None) -> dict:
        seen.append(cfg.outages.events_file)
        flows.nightly.load_outages.fn(cfg)
        raise AssertionError("the broken input was accepted")

    monkeypatch.setattr(flows.nightly, "nightly", nightly)
    return seen


def _invoke(data: Path, events_file: str):
    return CliRunner().invoke(
        app, ["nightly", "--config", str(_profile(data.parent, events_file))],
        env={"FOREWARN_DATA_DIR": str(data), "FOREWARN_HOME": str(data.parent / "home")})


def test_cli_reports_a_missing_events_file_before_starting_the_flow(
    data: Path, flow_without_prefect: list[str],
) -> None:
    result = _invoke(data, "broken/no_such_events.csv.gz")
    assert flow_without_prefect == []  # checked up front, no Prefect server started
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("forewarn: error: input file not found: ")
    assert str(data / "broken" / "no_such_events.csv.gz") in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("events_file", "expected"),
    [
        ("broken/events_renamed_column.csv.gz", "missing columns: 'first_seen_utc'"),
        ("broken/events_bad_times.csv.gz", "column '_first_seen', rule values_not_null: 2400 of "
                                           "3000 rows fail"),
    ],
)
def test_cli_reports_broken_event_files_in_one_line(data: Path, flow_without_prefect: list[str],
                                                    events_file: str, expected: str) -> None:
    result = _invoke(data, events_file)
    assert flow_without_prefect == [events_file]
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"forewarn: error: data contract 'lgeku_events' failed for {data / events_file}; ")
    assert expected in line
    assert "Traceback" not in result.stderr


def test_cli_reports_a_missing_data_dir_and_a_bad_profile(tmp_path: Path) -> None:
    profile = _profile(tmp_path, EVENTS)
    missing = CliRunner().invoke(app, ["nightly", "--config", str(profile)],
                                 env={"FOREWARN_DATA_DIR": str(tmp_path / "nowhere")})
    assert missing.exit_code == 2
    assert missing.stderr.strip() == (
        f"forewarn: error: data directory not found: {tmp_path / 'nowhere'} "
        "(set FOREWARN_DATA_DIR)")

    bad = tmp_path / "bad.yaml"
    bad.write_text("outages:\n  max_quiet_gap_h: -3\n", encoding="utf-8")
    invalid = CliRunner().invoke(app, ["nightly", "--config", str(bad)])
    assert invalid.exit_code == 2
    [line] = invalid.stderr.splitlines()
    assert line.startswith(f"forewarn: error: invalid settings (bad, {bad} over base.yaml): "
                           "outages.max_quiet_gap_h")


# --- end to end: the console script runs the real flow until its first task fails ---------------


def test_nightly_end_to_end_reports_a_broken_events_file_in_one_line(data: Path) -> None:
    events_file = "broken/events_renamed_column.csv.gz"
    env = {**os.environ, "FOREWARN_DATA_DIR": str(data),
           "FOREWARN_HOME": str(data.parent / "home_e2e")}
    run = subprocess.run(
        [str(FOREWARN), "nightly", "--config", str(_profile(data.parent, events_file))],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    reasons = [ln for ln in run.stderr.splitlines() if ln.startswith("forewarn: error:")]
    assert len(reasons) == 1
    assert run.stderr.rstrip().splitlines()[-1] == reasons[0]
    assert reasons[0].startswith(
        f"forewarn: error: data contract 'lgeku_events' failed for {data / events_file}; "
        "missing columns: 'first_seen_utc'; columns present: ")


def test_weather_mirror_command_writes_meteostat_files(tmp_path, data_dir):
    """`forewarn weather-mirror` converts the NOAA file into meteostat's layout under the
    home and reports the contract in JSON."""
    import json as _json

    from typer.testing import CliRunner

    from flows.cli import app

    env = {"FOREWARN_HOME": str(tmp_path / "home"), "FOREWARN_DATA_DIR": str(data_dir)}
    result = CliRunner().invoke(app, ["weather-mirror", "--start-year", "2022",
                                      "--end-year", "2023"], env=env)
    assert result.exit_code == 0, result.output
    report = _json.loads(result.stdout[result.stdout.index("{"):])
    assert report["files"] == 2
    assert report["contract"]["rows_quarantined"] == 0
    files = sorted((tmp_path / "home" / "meteostat" / "daily").glob("*/72422.csv.gz"))
    assert [f.parent.name for f in files] == ["2022", "2023"]


@pytest.fixture()
def home_logging(tmp_path: Path):
    """Undo what an in-process CLI run does to process-wide logging under ``tmp_path``:
    its log file handler, contact masks, and console levels raised by --quiet."""
    from flows.progress import console_handlers

    levels = {h: h.level for h in console_handlers()}
    yield
    for h, level in levels.items():
        h.setLevel(level)
    for name in ("", "forewarn.failures"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            for flt in [f for f in handler.filters
                        if type(f).__module__ in ("flows.cli", "serving.privacy")]:
                handler.removeFilter(flt)
            if isinstance(handler, logging.FileHandler) and Path(
                    handler.baseFilename).is_relative_to(tmp_path):
                logger.removeHandler(handler)
                handler.close()
    logging.getLogger("forewarn.failures").propagate = True


def test_weather_mirror_draws_a_bar_per_year_on_a_terminal_only(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, home_logging: None,
) -> None:
    env = {"FOREWARN_HOME": str(tmp_path / "home"), "FOREWARN_DATA_DIR": str(data_dir)}
    args = ["weather-mirror", "--start-year", "2022", "--end-year", "2023"]
    plain = CliRunner().invoke(app, args, env=env)  # stderr is not a terminal: no bar
    assert plain.exit_code == 0, plain.output
    assert "━" not in plain.stderr and "2/2" not in plain.stderr

    monkeypatch.setattr("flows.cli.wants_bars", lambda quiet: not quiet)  # "a terminal"
    shown = CliRunner().invoke(app, args, env=env)
    assert shown.exit_code == 0, shown.output
    assert "weather: 2 years written" in shown.stderr and "2/2" in shown.stderr
    assert '"files": 2' in shown.stdout  # the result stays on stdout, apart from the bar
    quiet = CliRunner().invoke(app, [*args, "--quiet"], env=env)
    assert quiet.exit_code == 0, quiet.output
    assert "years written" not in quiet.stderr and "━" not in quiet.stderr
