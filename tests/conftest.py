"""Hermetic test environment: every tool writes under one temporary folder, nothing goes to
the network, and the real shared data is read from FOREWARN_DATA_DIR (default ../shared/data).

The environment is set before any test module imports prefect, mlflow or meteostat."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="forewarn-tests-"))
REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FOREWARN_DATA_DIR") or (REPO.parent / "shared" / "data")).resolve()

os.environ.update(
    {
        "FOREWARN_DATA_DIR": str(DATA_DIR),
        "FOREWARN_HOME": str(_TMP / "home"),
        "PREFECT_HOME": str(_TMP / "prefect"),
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_TRACKING_URI": f"sqlite:///{_TMP}/mlflow.db",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        "MS_CACHE_ENABLE": "false",
        "MS_NETWORK_MAX_RETRIES": "0",
        "MS_STATIONS_DB_ENDPOINTS": "[]",
    }
)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"shared data not found at {DATA_DIR}; set FOREWARN_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def prefect_api():
    """One real (ephemeral) Prefect API for the whole session, shared by every integration
    test module; heartbeats off (each would cost ~1 s per flow run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def kentucky_settings():
    from configs.settings import load_settings

    return load_settings(REPO / "configs" / "kentucky.yaml")


@pytest.fixture(scope="session")
def real_history(kentucky_settings, session_tmp):
    """The real LG&E/KU outage history through the adapter (read once per session)."""
    from features.outages import load_outage_history

    return load_outage_history(
        kentucky_settings.outages, kentucky_settings.paths.data_dir, session_tmp / "quarantine"
    )


def four_county_data(data_dir: Path, history, home: Path, areas: list[str],
                     num_boost_round: int):
    """Settings and the real dataset of a few counties, trained from June 2021 through 2022
    and tested on June-July 2023: the flow's own loaders (their functions, no Prefect API)."""
    from configs.settings import load_settings
    from features.dataset import weather_span
    from flows.nightly import assemble, load_reference, load_weather

    cfg = load_settings(
        REPO / "configs/kentucky.yaml",
        environ={"FOREWARN_DATA_DIR": str(data_dir), "FOREWARN_HOME": str(home)},
        overrides={"areas": {"include": areas},
                   "model": {"train_start": "2021-06-01T00:00:00Z", "valid_hours": 720,
                             "test_start": "2023-06-01T00:00:00Z",
                             "test_end": "2023-08-01T00:00:00Z",
                             "num_boost_round": num_boost_round,
                             "min_positive_hours": 300}})
    first, last = weather_span(history, cfg.model.horizon_h, cfg.weather.station.timezone)
    weather, _ = load_weather.fn(cfg, first, last)
    counts, counties, _ = load_reference.fn(cfg)
    return cfg, assemble.fn(history, counties, counts, weather, cfg)


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's temporary folder (Prefect database, MLflow store, outputs)."""
    import shutil

    shutil.rmtree(_TMP, ignore_errors=True)
