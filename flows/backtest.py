"""The backtest Prefect flow: load and check the sources once, then one task per fold
(train on everything before it, predict it), then the metrics, plots and MLflow runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from configs.settings import Settings
from features.dataset import Dataset, weather_span
from flows.nightly import assemble, io_failure, load_outages, load_reference, load_weather
from models.backtest import (
    FoldResult,
    per_area_plot,
    reliability_plot,
    run_fold,
    skill_by_fold_plot,
    summarise,
    territory_customers_out,
    training_daily_outage_hours,
)
from models.registry import log_backtest
from models.split import Fold, rolling_origin_folds
from serving.publish import write_json

log = logging.getLogger(__name__)
progress = logging.getLogger("forewarn.progress.backtest")  # see flows/progress.py


@task(cache_policy=NO_CACHE)
def fold_task(data: Dataset, fold: Fold, cfg: Settings) -> FoldResult:
    return run_fold(data, cfg.features, cfg.model, fold)


@task(cache_policy=NO_CACHE)
def summary_task(results: list[FoldResult], data: Dataset, first: Fold, cfg: Settings
                 ) -> dict[str, Any]:
    tz = cfg.weather.station.timezone
    train_daily = training_daily_outage_hours(data, first.train_start, first.start, tz)
    return summarise(results, territory_customers_out(data), train_daily,
                     cfg.backtest.big_day_customers_out, tz, cfg.backtest.top_k)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def write_task(out: Path, metrics: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    table = pd.DataFrame.from_dict(metrics["per_area"], orient="index").rename_axis("area_id")
    table.sort_values("brier_skill", ascending=False).to_csv(out / "per_area_skill.csv")
    return [Path(reliability_plot(metrics, str(out / "reliability.png"))),
            Path(skill_by_fold_plot(metrics, str(out / "skill_by_fold.png"))),
            Path(per_area_plot(metrics, str(out / "per_area_skill.png"))),
            out / "per_area_skill.csv"]


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def mlflow_task(metrics: dict[str, Any], plots: list[Path], folds: list[Fold],
                cfg: Settings) -> str:
    return log_backtest(
        tracking_uri=cfg.tracking_uri, experiment=cfg.backtest.experiment,
        artifact_location=f"{cfg.artifact_location}/{cfg.backtest.experiment}",
        metrics=metrics, plots=plots,
        params={"profile": cfg.profile, "folds": len(folds), "fold_days": cfg.backtest.fold_days,
                "train_start": str(folds[0].train_start), "start": str(folds[0].start),
                "end": str(folds[-1].end), "big_day_customers_out":
                cfg.backtest.big_day_customers_out,
                **{f"lgbm_{k}": v for k, v in cfg.model.lgbm_params.items()}},
        run_name=f"{cfg.profile}-backtest-{folds[0].start:%Y%m%d}-{folds[-1].end:%Y%m%d}",
    )


@flow(name="forewarn-backtest", log_prints=False)
def backtest(cfg: Settings, start: pd.Timestamp, end: pd.Timestamp, out: Path
             ) -> dict[str, Any]:
    """Rolling-origin backtest of the risk model over [start, end) (UTC), folds of
    ``backtest.fold_days``; writes metrics.json and plots into ``out`` and logs a parent
    MLflow run with one nested run per fold. Returns the metrics and the MLflow run id."""
    folds = rolling_origin_folds(pd.Timestamp(cfg.model.train_start), start, end,
                                 cfg.backtest.fold_days)
    steps = len(folds) + 1
    progress.info("load and check the sources", extra={"step": 0, "steps": steps})
    history = load_outages(cfg)
    first, last = weather_span(history, cfg.model.horizon_h, cfg.weather.station.timezone)
    weather, _ = load_weather(cfg, first, last)
    counts, counties, _ = load_reference(cfg)
    data = assemble(history, counties, counts, weather, cfg)
    results = []
    for i, fold in enumerate(folds):
        progress.info("fold %d of %d (%s to %s)", i + 1, len(folds), f"{fold.start:%Y-%m-%d}",
                      f"{fold.end:%Y-%m-%d}", extra={"step": i, "steps": steps})
        results.append(fold_task(data, fold, cfg))
    progress.info("scores, plots and MLflow runs", extra={"step": len(folds), "steps": steps})
    metrics = summary_task(results, data, folds[0], cfg)
    plots = write_task(out, metrics)
    run_id = mlflow_task(metrics, plots, folds, cfg)
    progress.info("done", extra={"step": steps, "steps": steps})
    return {"metrics": metrics, "mlflow_run_id": run_id, "out": str(out)}
