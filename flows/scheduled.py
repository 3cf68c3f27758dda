"""The flows the scheduled Prefect deployments run (``flows/deployments.py`` builds them).

A deployment can pass only JSON parameters, so each flow takes the profile's path (and an
optional as-of time), reads the settings itself and hands them to the nightly flow:

- ``scheduled_nightly``: the nightly flow as a subflow; ``retrain`` false (the nightly
  deployment) scores with the registered champions and trains only what has none yet, true
  (the weekly deployment) trains, registers the challenger, gates it and scores;
- ``refresh``: rescores with the champions only when a forecast newer than the one the latest
  run used has arrived; with ``forecast.use: replay`` it does nothing and says why.

A bad input or setting fails the run with its reason on one line, so the Prefect UI shows it
in the state message of the flow run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from configs.settings import Settings, SettingsError, load_settings, tool_environment
from features.contracts import ContractError
from features.forecast_weather import RefreshDecision, decide_refresh, forecast_issue_times
from flows.nightly import io_failure, nightly
from serving.publish import latest_manifest


def one_line(exc: BaseException) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(exc)).strip()


@contextmanager
def _reason_in_one_line() -> Iterator[None]:
    """Prefect records a failed flow run's exception as its state message; contract and
    settings messages span lines (file, column, rule, rows, hint), the UI shows one."""
    try:
        yield
    except (ContractError, SettingsError) as exc:
        raise ContractError(one_line(exc)) from exc


def settings_from(config: str) -> Settings:
    """The profile's settings, and the tools' environment under its home (the caller's values
    win, as in the CLI)."""
    cfg = load_settings(Path(config))
    for key, value in tool_environment(cfg).items():
        os.environ.setdefault(key, value)
    return cfg


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a scheduled run returns (kept small: Prefect shows it, the run directory holds
    the rest)."""
    return {"run_id": manifest["run_id"], "run_dir": manifest["run_dir"],
            "as_of": manifest["as_of"], "model_version": manifest["model"]["version"],
            "retrained": manifest["model"]["retrained"],
            "forecast_issue_ts": manifest["forecast"].get("issue_ts"),
            "windows": manifest["windows"], "advisories": manifest["advisories"]["decided"]}


@flow(name="forewarn-scheduled-nightly", log_prints=False)
def scheduled_nightly(config: str, as_of: str | None = None, retrain: bool = False
                      ) -> dict[str, Any]:
    """The nightly job for a deployment: ``config`` is the profile YAML's path, ``as_of`` an
    ISO-8601 UTC hour (default: the latest with history and weather), ``retrain`` whether to
    train a challenger and gate it (false: score with the champion, train only if none)."""
    with _reason_in_one_line():
        cfg = settings_from(config)
        manifest = nightly(cfg, as_of=as_of, retrain=retrain)
    return _summary(manifest)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def refresh_check(cfg: Settings, now: pd.Timestamp) -> RefreshDecision:
    """Compare the newest forecast in the forecast folder with the one the latest run used."""
    times = (forecast_issue_times(cfg.forecast, cfg.paths.data_dir)
             if cfg.forecast.use == "forecast" else pd.DatetimeIndex([], tz="UTC"))
    return decide_refresh(cfg.forecast.use, times, now, latest_manifest(cfg.paths.runs_dir))


@flow(name="forewarn-refresh", log_prints=False)
def refresh(config: str, as_of: str | None = None) -> dict[str, Any]:
    """The hourly refresh: rescore the horizon with the champions when a forecast newer than
    the latest run's has arrived (issued at or before ``as_of``, default now), else return
    why not."""
    logger = get_run_logger()
    with _reason_in_one_line():
        cfg = settings_from(config)
        now = pd.Timestamp(as_of) if as_of else pd.Timestamp.now(tz="UTC")
        check = refresh_check.with_options(timeout_seconds=cfg.deployments.io_timeout_s)
        decision = check(cfg, now)
        logger.info("refresh: %s", decision.reason)
        result: dict[str, Any] = {"rescored": decision.rescore, "reason": decision.reason,
                                  "newest_issue_ts": decision.newest_issue_ts,
                                  "last_issue_ts": decision.last_issue_ts,
                                  "last_run_id": decision.last_run_id}
        if not decision.rescore:
            return result
        manifest = nightly(cfg, as_of=as_of, retrain=False)
    return result | _summary(manifest)
