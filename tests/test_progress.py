"""Progress of long CLI work: stages, folds, batches and years report progress as log
records, and the CLI draws them as rich bars on a terminal only (never with --quiet, never
into a pipe or a file)."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from rich.console import Console
from rich.progress import Progress

from flows.nightly import STAGES, _stage  # imports Prefect, which sets up logging, first
from flows.progress import PROGRESS_LOGGER, ProgressHandler, progress_bars, wants_bars


def _report(job: str, message: str, step: int, steps: int) -> None:
    logging.getLogger(f"{PROGRESS_LOGGER}.{job}").info(message, extra={"step": step,
                                                                       "steps": steps})


def test_progress_records_become_one_bar_per_job() -> None:
    progress = Progress(console=Console(file=io.StringIO()))
    handler = ProgressHandler(progress)
    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        _report("nightly", "stage 1 of 14: load outages", 0, 14)
        _report("weather", "year 2019", 0, 5)
        _report("nightly", "stage 8 of 14: train and evaluate", 7, 14)
        logging.getLogger(PROGRESS_LOGGER + ".nightly").info("no step: not progress")
        logging.getLogger("flows.nightly").info("x", extra={"step": 3, "steps": 4})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    nightly, weather = progress.tasks
    assert (nightly.completed, nightly.total) == (7, 14)
    assert nightly.description == "nightly: stage 8 of 14: train and evaluate"
    assert (weather.completed, weather.total, weather.description) == (0, 5, "weather: year 2019")


def test_bars_only_for_a_person_at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not wants_bars(quiet=False)  # pytest captures stderr: not a terminal
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert wants_bars(quiet=False)
    assert not wants_bars(quiet=True)


def test_while_bars_show_progress_stays_off_the_console_log(
        capsys: pytest.CaptureFixture[str]) -> None:
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    root.addHandler(console)
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)
    try:
        with progress_bars(True) as progress:
            assert progress is not None
            _report("backtest", "fold 1 of 4", 0, 5)
            logging.getLogger("flows.backtest").warning("an ordinary line")
            [task] = progress.tasks
            assert (task.completed, task.total) == (0, 5)
        _report("backtest", "fold 2 of 4", 1, 5)  # after the block: a log line again
        [task] = progress.tasks
        assert task.completed == 0  # the bar no longer listens
        assert not logging.getLogger(PROGRESS_LOGGER).handlers
        assert not console.filters and console.stream is sys.stderr
    finally:
        root.removeHandler(console)
        logging.getLogger(PROGRESS_LOGGER).setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "LOG an ordinary line" in err
    assert "LOG fold 1 of 4" not in err  # shown by the bar, not as a log line
    assert "LOG fold 2 of 4" in err


def test_no_bars_means_no_display() -> None:
    with progress_bars(False) as progress:
        assert progress is None
        assert not logging.getLogger(PROGRESS_LOGGER).handlers


def test_nightly_stages_report_progress(caplog: pytest.LogCaptureFixture) -> None:
    timings: dict[str, float] = {}
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        with _stage(timings, "train_and_evaluate"):
            pass
        with _stage(timings, "a_stage_added_later"):  # not in STAGES: timed, no progress
            pass
    [record] = [r for r in caplog.records if r.name == f"{PROGRESS_LOGGER}.nightly"]
    assert record.getMessage() == f"stage 8 of {len(STAGES)}: train and evaluate"
    assert (record.step, record.steps) == (7, len(STAGES))  # type: ignore[attr-defined]
    assert set(timings) == {"train_and_evaluate", "a_stage_added_later"}


def test_weather_mirror_reports_one_step_per_year(tmp_path, data_dir, caplog) -> None:
    from configs.settings import load_settings
    from features.weather import convert_noaa_daily

    cfg = load_settings(None)
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        files, _ = convert_noaa_daily(cfg.data_path(cfg.weather.noaa_daily_file),
                                      tmp_path / "ms", cfg.weather.station,
                                      years=range(2021, 2024))
    steps = [(r.getMessage(), r.step, r.steps) for r in caplog.records
             if r.name == f"{PROGRESS_LOGGER}.weather"]
    assert steps == [("year 2021", 0, 3), ("year 2022", 1, 3), ("year 2023", 2, 3),
                     ("3 years written", 3, 3)]
    assert len(files) == 3
