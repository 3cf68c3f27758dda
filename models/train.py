"""LightGBM risk models: one pooled model for every area, and per-area models where an area
has enough positive hours and its own model beats the pooled one on the validation slice (the
hybrid rule). Probabilities are calibrated on the validation slice, later than the rows the
trees learned on, and features where more of the weather can only mean more risk (rain,
snow, freezing precipitation) carry LightGBM monotone constraints."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from configs.settings import ModelSettings
from features import columns as C
from features.build import Climatology
from models.calibration import Calibrator, choose_calibrator, fit_every_method

log = logging.getLogger(__name__)

POOLED = "pooled"
PER_AREA = "per_area"
HYBRID = "hybrid"
AREA_MODES = (POOLED, PER_AREA, HYBRID)


@dataclass
class RiskModel:
    """Everything scoring needs, saved together: boosters, the climatology learned at training
    time, mean customers per outage hour by area, and what it was trained on."""

    feature_names: list[str]
    pooled: lgb.Booster
    per_area: dict[str, lgb.Booster]
    climatology: Climatology
    customers_per_outage_hour: pd.Series  # AREA -> mean customers affected in an outage hour
    horizon_h: int
    info: dict = field(default_factory=dict)
    # per-area models fitted but not chosen by the hybrid rule (kept for the comparison)
    rejected: dict[str, lgb.Booster] = field(default_factory=dict)
    calibrator: Calibrator = field(default_factory=Calibrator)
    # every calibration method fitted on the whole validation slice (backtests compare them)
    candidates: dict[str, Calibrator] = field(default_factory=dict)
    area_mode: str = HYBRID  # the rule scoring uses (model.area_mode of the profile)

    def __setstate__(self, state: dict) -> None:
        # a model pickled before a field existed loads with that field's default
        self.__dict__.update({"rejected": {}, "calibrator": Calibrator(), "candidates": {},
                              "area_mode": HYBRID, **state})

    def _boosters(self, mode: str | None) -> dict[str, lgb.Booster]:
        mode = mode or self.area_mode
        if mode == HYBRID:
            return self.per_area
        if mode == PER_AREA:
            return {**self.rejected, **self.per_area}
        if mode == POOLED:
            return {}
        raise ValueError(f"unknown area mode {mode!r}; use one of {AREA_MODES}")

    def kinds(self, area_ids: np.ndarray, mode: str | None = None) -> np.ndarray:
        """Which model scores each row's area: PER_AREA or POOLED."""
        own = pd.Index(list(self._boosters(mode)))
        return np.where(own.get_indexer(area_ids) >= 0, PER_AREA, POOLED)

    def predict(self, rows: pd.DataFrame, mode: str | None = None) -> np.ndarray:
        """Calibrated probability (0-1) that at least one unplanned outage starts in the row's
        area and hour. ``mode`` picks the models: by default the profile's rule
        (``area_mode``, what scoring uses); pooled, per_area or hybrid for comparisons."""
        return self.calibrator(self.predict_raw(rows, mode))

    def predict_raw(self, rows: pd.DataFrame, mode: str | None = None) -> np.ndarray:
        """The boosters' probability before calibration."""
        return self._apply(rows, contrib=False, mode=mode)[:, 0]

    def contributions(self, rows: pd.DataFrame) -> pd.DataFrame:
        """LightGBM's own per-feature contributions (log-odds, before calibration) of each
        row's prediction."""
        raw = self._apply(rows, contrib=True, mode=None)
        return pd.DataFrame(raw[:, :-1], columns=self.feature_names, index=rows.index)

    def _apply(self, rows: pd.DataFrame, contrib: bool, mode: str | None) -> np.ndarray:
        x = rows[self.feature_names].to_numpy(dtype="float32")
        width = len(self.feature_names) + 1 if contrib else 1
        out = np.zeros((len(rows), width))
        areas = rows[C.AREA].to_numpy()
        boosters = self._boosters(mode)
        pooled = self.kinds(areas, mode) == POOLED
        if pooled.any():
            out[pooled] = np.asarray(
                self.pooled.predict(x[pooled], pred_contrib=contrib)).reshape(-1, width)
        for area in np.unique(areas[~pooled]):
            sel = areas == area
            out[sel] = np.asarray(
                boosters[area].predict(x[sel], pred_contrib=contrib)).reshape(-1, width)
        return out


def _fit(
    params: dict, x: pd.DataFrame, y: np.ndarray, xv: pd.DataFrame, yv: np.ndarray,
    cfg: ModelSettings,
) -> lgb.Booster:
    train = lgb.Dataset(x, y, params={"verbose": -1}, free_raw_data=True)
    callbacks: list[Callable[..., Any]] = [lgb.log_evaluation(0)]
    valid_sets = []
    if len(yv) and len(np.unique(yv)) == 2:
        valid_sets = [lgb.Dataset(xv, yv, reference=train)]
        callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
    return lgb.train(params, train, num_boost_round=cfg.num_boost_round,
                     valid_sets=valid_sets, callbacks=callbacks)


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean log-loss of probabilities ``p`` for labels ``y`` (0/1)."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class AreaJob:
    """One area's own model to fit, as a unit of work a Dask worker can take: the area's
    training rows and its validation rows (features and LABEL 0/1)."""

    area: str
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_valid: pd.DataFrame
    y_valid: np.ndarray


def labelled(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows[C.LABEL].notna()]


def validation_mask(rows: pd.DataFrame, cfg: ModelSettings) -> np.ndarray:
    """True for rows whose target hour falls in the last ``cfg.valid_hours`` before
    ``cfg.train_end``: early stopping and the per-area-versus-pooled choice use them only."""
    valid_start = pd.Timestamp(cfg.train_end) - pd.Timedelta(hours=cfg.valid_hours)
    return (rows[C.TS] >= valid_start).to_numpy()


def model_params(feature_names: list[str], cfg: ModelSettings) -> dict[str, Any]:
    """LightGBM parameters of the pooled model: the profile's, a fixed seed, deterministic
    training and the monotone constraints."""
    params = {"seed": cfg.seed, "deterministic": True, **cfg.lgbm_params}
    monotone = monotone_constraints(feature_names, cfg.monotone)
    if any(monotone):
        params |= {"monotone_constraints": monotone,
                   "monotone_constraints_method": cfg.monotone_method}
    return params


def area_params(feature_names: list[str], cfg: ModelSettings) -> dict[str, Any]:
    """LightGBM parameters of a per-area model (the pooled ones with ``per_area_params``)."""
    return {**model_params(feature_names, cfg), **cfg.per_area_params}


def fit_pooled(rows: pd.DataFrame, feature_names: list[str], cfg: ModelSettings) -> lgb.Booster:
    """The pooled model over every area's training rows, early-stopped on the validation
    slice."""
    rows = labelled(rows)
    is_valid = validation_mask(rows, cfg)
    x = rows[feature_names]
    y = rows[C.LABEL].to_numpy(dtype="float64")
    pooled = _fit(model_params(feature_names, cfg), x[~is_valid], y[~is_valid], x[is_valid],
                  y[is_valid], cfg)
    log.info("pooled model: %d trees on %d rows", pooled.num_trees(), int((~is_valid).sum()))
    return pooled


def area_jobs(rows: pd.DataFrame, feature_names: list[str], cfg: ModelSettings
              ) -> tuple[list[AreaJob], dict[str, str]]:
    """One job per area with at least ``cfg.min_positive_hours`` positive training hours
    (sorted by area id), and the reason for each such area that cannot have its own model."""
    rows = labelled(rows)
    is_valid = validation_mask(rows, cfg)
    x = rows[feature_names]
    y = rows[C.LABEL].to_numpy(dtype="float64")
    areas = rows[C.AREA].to_numpy()
    pos = rows.loc[~is_valid].groupby(C.AREA)[C.LABEL].sum()
    jobs: list[AreaJob] = []
    skipped: dict[str, str] = {}
    for area in sorted(pos[pos >= cfg.min_positive_hours].index):
        tr = (areas == area) & ~is_valid
        va = (areas == area) & is_valid
        if va.sum() == 0 or len(np.unique(y[va])) < 2:
            skipped[area] = "pooled: no usable validation rows"
            continue
        jobs.append(AreaJob(area, x[tr], y[tr], x[va], y[va]))
    return jobs, skipped


def fit_area(job: AreaJob, params: dict[str, Any], cfg: ModelSettings) -> str:
    """The area's own model, early-stopped on its validation rows, as LightGBM's model text
    (``lgb.Booster(model_str=...)`` loads it). Pure: the same job and parameters give the
    same text on any machine or worker."""
    return _fit(params, job.x_train, job.y_train, job.x_valid, job.y_valid,
                cfg).model_to_string()


def fit_areas(jobs: list[AreaJob], params: dict[str, Any], cfg: ModelSettings
              ) -> dict[str, str]:
    """:func:`fit_area` for every job, one after another in this process."""
    return {job.area: fit_area(job, params, cfg) for job in jobs}


def assemble_risk_model(
    rows: pd.DataFrame,
    feature_names: list[str],
    pooled: lgb.Booster,
    area_models: Mapping[str, str],
    skipped: Mapping[str, str],
    climatology: Climatology,
    customers_per_outage_hour: pd.Series,
    cfg: ModelSettings,
) -> RiskModel:
    """The risk model from a fitted pooled booster and per-area model texts: the hybrid rule
    (an area keeps its own model where it beats the pooled one on its validation rows), the
    calibration on the validation slice, and the training record."""
    rows = labelled(rows)
    is_valid = validation_mask(rows, cfg)
    x = rows[feature_names]
    y = rows[C.LABEL].to_numpy(dtype="float64")
    areas = rows[C.AREA].to_numpy()
    per_area: dict[str, lgb.Booster] = {}
    rejected: dict[str, lgb.Booster] = {}
    decisions: dict[str, str] = {}
    for area in sorted({*area_models, *skipped}):
        if area in skipped:
            decisions[area] = skipped[area]
            continue
        own = lgb.Booster(model_str=area_models[area])
        va = (areas == area) & is_valid
        xv = x[va].to_numpy(dtype="float32")
        own_loss = logloss(y[va], np.asarray(own.predict(xv)))
        pooled_loss = logloss(y[va], np.asarray(pooled.predict(xv)))
        if own_loss < pooled_loss:
            per_area[area] = own
            decisions[area] = f"per-area: valid log-loss {own_loss:.4f} < pooled {pooled_loss:.4f}"
        else:
            rejected[area] = own
            decisions[area] = f"pooled: valid log-loss {pooled_loss:.4f} <= per-area {own_loss:.4f}"
    model = RiskModel(feature_names, pooled, per_area, climatology, customers_per_outage_hour,
                      cfg.horizon_h, {}, rejected, area_mode=cfg.area_mode)
    if is_valid.any():
        valid_rows = rows.loc[is_valid]
        valid_raw = model.predict_raw(valid_rows)
        model.calibrator = choose_calibrator(valid_raw, y[is_valid],
                                             valid_rows[C.TS].to_numpy(), cfg.calibration)
        model.candidates = fit_every_method(valid_raw, y[is_valid])
    log.info("calibration: %s", model.calibrator.info.get("method", "none"))
    monotone = monotone_constraints(feature_names, cfg.monotone)
    valid_start = pd.Timestamp(cfg.train_end) - pd.Timedelta(hours=cfg.valid_hours)
    model.info = {
        "rows_train": int((~is_valid).sum()),
        "rows_valid": int(is_valid.sum()),
        "positives_train": int(y[~is_valid].sum()),
        "pooled_trees": int(pooled.num_trees()),
        "per_area_models": len(per_area),
        "per_area_candidates": len(decisions),
        "areas_scored_by_own_model": int((model.kinds(np.array(list(decisions))) == PER_AREA
                                          ).sum()),
        "per_area_decisions": decisions,
        "area_mode": cfg.area_mode,
        "calibration": model.calibrator.info,
        "monotone_features": [f for f, m in zip(feature_names, monotone, strict=True) if m],
        "train_start": str(cfg.train_start),
        "train_end": str(cfg.train_end),
        "valid_start": str(valid_start),
    }
    return model


def train_risk_model(
    rows: pd.DataFrame,
    feature_names: list[str],
    climatology: Climatology,
    customers_per_outage_hour: pd.Series,
    cfg: ModelSettings,
) -> RiskModel:
    """Fit the pooled model and the per-area models on labelled training rows, in this
    process (``flows.training`` fans the per-area fits out over Dask instead).

    Rows whose target hour falls in the last ``cfg.valid_hours`` before ``cfg.train_end`` are
    the validation slice: early stopping and the per-area-versus-pooled choice use it only.
    """
    rows = labelled(rows)
    pooled = fit_pooled(rows, feature_names, cfg)
    jobs, skipped = area_jobs(rows, feature_names, cfg)
    fitted = fit_areas(jobs, area_params(feature_names, cfg), cfg)
    return assemble_risk_model(rows, feature_names, pooled, fitted, skipped, climatology,
                               customers_per_outage_hour, cfg)


def monotone_constraints(feature_names: list[str], wanted: Mapping[str, int]) -> list[int]:
    """LightGBM's ``monotone_constraints``, one entry per feature (1 non-decreasing, -1
    non-increasing, 0 free), from the profile's ``model.monotone`` map."""
    return [int(wanted.get(name, 0)) for name in feature_names]


def customers_per_outage_hour(
    customers: np.ndarray, counts: np.ndarray, area_ids: np.ndarray, use: np.ndarray
) -> pd.Series:
    """Mean customers affected in an hour with at least one outage, per area (training hours
    ``use`` only). Areas with none get the median of the others."""
    c = customers[:, use]
    hit = counts[:, use] > 0
    n = hit.sum(axis=1)
    mean = np.where(n > 0, (c * hit).sum(axis=1) / np.maximum(n, 1), np.nan)
    s = pd.Series(mean, index=area_ids)
    return s.fillna(s.median() if s.notna().any() else 4.0)
