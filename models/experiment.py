"""Train on one period, measure on a later one: the honest-metrics path of the nightly run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from configs.settings import FeatureSettings, ModelSettings
from features import columns as C
from features.build import Climatology, feature_names, make_rows, sample_labelled_rows
from features.dataset import Dataset
from models.scoring import evaluate_predictions
from models.train import (
    AreaJob,
    RiskModel,
    area_jobs,
    area_params,
    assemble_risk_model,
    customers_per_outage_hour,
    fit_areas,
    fit_pooled,
    labelled,
)

log = logging.getLogger(__name__)


def test_positions(data: Dataset, cfg: ModelSettings) -> tuple[np.ndarray, ...]:
    """The (area, hour, lead) positions of every labelled hour of [test_start, test_end)
    (clipped to the history), each at one lead drawn from 1..horizon with a fixed seed: the
    same rows for every model scored on the period."""
    panel = data.panel
    test_end = min(pd.Timestamp(cfg.test_end), panel.history_end)
    positions = sample_labelled_rows(panel, pd.Timestamp(cfg.test_start), test_end,
                                     cfg.horizon_h, cfg.seed + 1)
    if len(positions[0]) == 0:  # checked before the minutes of training, not after
        raise ValueError(
            f"no labelled hours in the test period {cfg.test_start:%Y-%m-%d}.."
            f"{cfg.test_end:%Y-%m-%d}: the outage history ends {panel.history_end:%Y-%m-%d}"
        )
    return positions


def predict_period(model: RiskModel, data: Dataset, feat_cfg: FeatureSettings,
                   positions: tuple[np.ndarray, ...]) -> pd.DataFrame:
    """Feature rows at ``positions`` built with the model's own climatology, labelled ones
    only, with the model's PROB and MODEL_KIND."""
    a, t, lead = positions
    rows = make_rows(data.panel, data.areas, data.weather_hourly, model.climatology, a, t,
                     lead, feat_cfg)
    rows = rows[rows[C.LABEL].notna()].copy()
    rows[C.PROB] = model.predict(rows)
    rows[C.MODEL_KIND] = model.kinds(rows[C.AREA].to_numpy())
    return rows


@dataclass
class TrainingSet:
    """What training needs, built once: the labelled feature rows of
    [train_start, train_end), the climatology and customers per outage hour learned on the
    training period only, the per-area units of work, and the test positions."""

    rows: pd.DataFrame
    feature_names: list[str]
    climatology: Climatology
    customers_per_outage_hour: pd.Series
    jobs: list[AreaJob]
    skipped: dict[str, str]  # areas with enough positives but no usable validation rows
    test_positions: tuple[np.ndarray, ...]
    seconds: float  # building the rows


def training_set(data: Dataset, feat_cfg: FeatureSettings, cfg: ModelSettings) -> TrainingSet:
    """Training rows at one lead each, drawn from 1..horizon with a fixed seed, for every
    labelled (area, hour) of [train_start, train_end), and the per-area jobs."""
    t_start = time.perf_counter()
    panel = data.panel
    train_end = pd.Timestamp(cfg.train_end)
    clim = Climatology.fit(panel, end=train_end)
    use = (panel.hours >= pd.Timestamp(cfg.train_start)) & (panel.hours < train_end)
    cust = customers_per_outage_hour(panel.customers, panel.counts, panel.area_ids,
                                     np.asarray(use & panel.observed))
    names = feature_names(feat_cfg)
    test_pos = test_positions(data, cfg)
    a, t, lead = sample_labelled_rows(panel, pd.Timestamp(cfg.train_start), train_end,
                                      cfg.horizon_h, cfg.seed)
    if len(a) == 0:
        raise ValueError(f"no labelled hours between {cfg.train_start} and {cfg.train_end}")
    rows = labelled(make_rows(panel, data.areas, data.weather_hourly, clim, a, t, lead,
                              feat_cfg))
    jobs, skipped = area_jobs(rows, names, cfg)
    return TrainingSet(rows, names, clim, cust, jobs, skipped, test_pos,
                       round(time.perf_counter() - t_start, 2))


def finish_training(
    ts: TrainingSet, pooled: lgb.Booster, area_models: dict[str, str], data: Dataset,
    feat_cfg: FeatureSettings, cfg: ModelSettings, train_seconds: float,
) -> tuple[RiskModel, pd.DataFrame, dict[str, float]]:
    """The risk model from the fitted pooled booster and per-area model texts, and its
    predictions for the test positions. Returns the model, the test rows (features, LABEL,
    PROB, MODEL_KIND) and timings (s)."""
    t0 = time.perf_counter()
    model = assemble_risk_model(ts.rows, ts.feature_names, pooled, area_models, ts.skipped,
                                ts.climatology, ts.customers_per_outage_hour, cfg)
    t_model = time.perf_counter()
    test_rows = predict_period(model, data, feat_cfg, ts.test_positions)
    seconds = {"rows": ts.seconds, "train": round(train_seconds + t_model - t0, 2),
               "predict": round(time.perf_counter() - t_model, 2)}
    return model, test_rows, seconds


def fit_and_predict(
    data: Dataset, feat_cfg: FeatureSettings, cfg: ModelSettings
) -> tuple[RiskModel, pd.DataFrame, dict[str, float]]:
    """Fit on [train_start, train_end) and predict every labelled (area, hour) of
    [test_start, test_end) (clipped to the history), each at one lead drawn from 1..horizon,
    all in this process. Climatology and customers per outage hour are learned on the
    training period only. Returns the model, the test rows (features, LABEL, PROB,
    MODEL_KIND) and timings (s)."""
    ts = training_set(data, feat_cfg, cfg)
    t0 = time.perf_counter()
    pooled = fit_pooled(ts.rows, ts.feature_names, cfg)
    fitted = fit_areas(ts.jobs, area_params(ts.feature_names, cfg), cfg)
    return finish_training(ts, pooled, fitted, data, feat_cfg, cfg, time.perf_counter() - t0)


def evaluate_training(model: RiskModel, test_rows: pd.DataFrame, seconds: dict[str, float]
                      ) -> dict:
    """Metrics of a freshly trained model on its test rows (see :func:`evaluate_predictions`),
    with timings and the training record."""
    metrics = evaluate_predictions(test_rows)
    metrics["seconds"] = seconds
    metrics["training"] = {k: v for k, v in model.info.items() if k != "per_area_decisions"}
    log.info("test %s: model ROC-AUC %.3f vs climatology %.3f, Brier skill %.3f",
             metrics["test_start"][:10], metrics["overall"]["model_roc_auc"],
             metrics["overall"]["climatology_roc_auc"], metrics["overall"]["brier_skill"])
    return metrics


def fit_and_evaluate(
    data: Dataset, feat_cfg: FeatureSettings, cfg: ModelSettings
) -> tuple[RiskModel, dict]:
    """Fit on [train_start, train_end) and evaluate against climatology on
    [test_start, test_end) (see :func:`fit_and_predict`)."""
    model, test_rows, seconds = fit_and_predict(data, feat_cfg, cfg)
    return model, evaluate_training(model, test_rows, seconds)


def evaluate_on_test_period(model: RiskModel, data: Dataset, feat_cfg: FeatureSettings,
                            cfg: ModelSettings) -> dict:
    """Any model (e.g. the registered champion) scored on the same test rows as a model
    trained by :func:`fit_and_predict` with ``cfg`` (the metrics of evaluate_predictions)."""
    return evaluate_predictions(predict_period(model, data, feat_cfg, test_positions(data, cfg)))
