"""Rolling-origin backtests: for each fold, train on everything before it and predict it;
score the model beside two baselines on exactly the same rows.

Baselines: climatology (area x month x hour rate learned on the fold's training part only,
the ``clim_rate`` feature) and the recent rate (the area's outages in the 30 days before the
issue time, as the chance of at least one in an hour: 1 - exp(-n / 720); the longest
configured history window).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from configs.settings import FeatureSettings, ModelSettings
from features import columns as C
from features.dataset import Dataset
from models.calibration import METHODS as CALIBRATION_METHODS
from models.experiment import fit_and_predict
from models.metrics import (
    LEAD_BUCKETS,
    SEASONS,
    daily_ranking,
    event_scores,
    expected_calibration_error,
    reliability,
    scores,
)
from models.split import Fold
from models.train import AREA_MODES, RiskModel

log = logging.getLogger(__name__)

CLIMATOLOGY = "clim_rate"
RECENT = "recent_rate"
METHODS = (C.PROB, CLIMATOLOGY, RECENT)
NAMES = {C.PROB: "model", CLIMATOLOGY: "climatology", RECENT: "recent_rate"}
# the same fitted boosters before calibration, by the rule that picks an area's model
VARIANTS = {f"raw_{mode}": mode for mode in AREA_MODES}
# the profile's rule under each calibration method fitted on the fold's validation slice
CALIBRATIONS = {f"cal_{method}": method for method in CALIBRATION_METHODS}


@dataclass(frozen=True)
class FoldResult:
    fold: Fold
    rows: pd.DataFrame  # test rows: AREA, TS, LEAD_H, LABEL and one column per METHOD
    seconds: dict[str, float]
    model_info: dict


def run_fold(data: Dataset, feat_cfg: FeatureSettings, cfg: ModelSettings,
             fold: Fold) -> FoldResult:
    """Train on [fold.train_start, fold.start), predict [fold.start, fold.end)."""
    fold_cfg = cfg.model_copy(update={"train_start": fold.train_start.to_pydatetime(),
                                      "train_end": fold.start.to_pydatetime(),
                                      "test_start": fold.start.to_pydatetime(),
                                      "test_end": fold.end.to_pydatetime()})
    model, rows, seconds = fit_and_predict(data, feat_cfg, fold_cfg)
    window = max(feat_cfg.history_windows_h)
    recent = 1.0 - np.exp(-rows[f"hist_n_{window}h"].to_numpy("float64") / window)
    out = rows[[C.AREA, C.TS, C.LEAD_H, C.LABEL, C.PROB, CLIMATOLOGY, C.MODEL_KIND]].assign(
        **{RECENT: recent}, **{col: model.predict_raw(rows, mode)
                               for col, mode in VARIANTS.items()},
        **calibration_variants(model, rows))
    info = {k: v for k, v in model.info.items() if k != "per_area_decisions"}
    return FoldResult(fold, out.reset_index(drop=True), seconds, info)


def calibration_variants(model: RiskModel, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The profile's area rule under each calibration method fitted on the fold's
    validation slice (raw where the slice could not fit one)."""
    raw = model.predict_raw(rows)
    return {col: model.candidates[m](raw) if m in model.candidates else raw
            for col, m in CALIBRATIONS.items()}


def skill(rows: pd.DataFrame, variants: bool = False) -> dict[str, Any]:
    """Every method's scores on the rows, with Brier skill against climatology, PR-AUC over
    prevalence and expected calibration error; with ``variants`` also the uncalibrated
    pooled, per-area and hybrid models and the model under each calibration method."""
    y = rows[C.LABEL].to_numpy("float64")
    clim = scores(y, rows[CLIMATOLOGY].to_numpy())
    out: dict[str, Any] = {"n": float(len(rows)), "prevalence": clim["prevalence"]}
    cols = {**NAMES, **({v: v for v in (*VARIANTS, *CALIBRATIONS)} if variants else {})}
    for col, name in cols.items():
        s = scores(y, rows[col].to_numpy())
        out[name] = {
            "roc_auc": s["roc_auc"], "pr_auc": s["pr_auc"], "brier": s["brier"],
            "pr_auc_over_prevalence": s["pr_auc"] / s["prevalence"] if s["prevalence"] else
            float("nan"),
            "brier_skill_vs_climatology": 1 - s["brier"] / clim["brier"] if clim["brier"] else
            float("nan"),
            "ece": expected_calibration_error(y, rows[col].to_numpy()),
        }
    return out


def big_days(rows: pd.DataFrame, territory_out: pd.Series, train_daily: pd.Series,
             min_customers_out: float, tz: str) -> dict[str, Any]:
    """Event scores for big days (customers out territory-wide reaching ``min_customers_out``
    at some hour of the local day). A method forecasts a big day when its expected number of
    area-hours with an outage start that day reaches the training days' value at the
    big-day rate (a threshold learned on the training part only).

    By lead: each area-hour carries one lead drawn from 1-72 h, so the rows of a day in a
    lead bucket are an independent third of its rows; the bucket forecasts the day when its
    expected outage-hours, scaled to the whole day, reach the threshold. A big day's lead
    time is the far edge of the farthest bucket that forecast it (24, 48 or 72 h)."""
    out_daily = territory_out.groupby(territory_out.index.tz_convert(tz).date).max()
    day = rows[C.TS].dt.tz_convert(tz).dt.date
    result: dict[str, Any] = {}
    observed = (out_daily >= min_customers_out).reindex(sorted(set(day))).fillna(False)
    train_big = (out_daily.reindex(train_daily.index) >= min_customers_out).fillna(False)
    rate = float(train_big.mean()) if len(train_big) else 0.0
    threshold = float(train_daily.quantile(1 - rate)) if rate > 0 else float("inf")
    day_rows = rows.groupby(day).size()
    for col in METHODS:
        expected = rows.groupby(day)[col].sum()
        scores_ = event_scores(observed, expected >= threshold)
        lead_time = pd.Series(0.0, index=observed.index)
        by_lead: dict[str, Any] = {}
        for lo, hi, name in LEAD_BUCKETS:
            part = rows[C.LEAD_H].between(lo, hi).to_numpy()
            part_day = day[part]
            scaled = (rows.loc[part].groupby(part_day)[col].sum()
                      * day_rows / rows.loc[part].groupby(part_day).size())
            flagged = (scaled >= threshold).reindex(observed.index).fillna(False)
            by_lead[name] = event_scores(observed, flagged)
            lead_time[flagged.astype(bool) & observed.astype(bool)] = float(hi)
        detected = lead_time[lead_time > 0]
        result[NAMES[col]] = scores_ | {
            "by_lead": by_lead,
            "lead_time_h_mean": float(detected.mean()) if len(detected) else float("nan"),
            "big_days_detected_by_lead_h": {str(int(h)): float((detected == h).sum())
                                            for _, h, _ in LEAD_BUCKETS},
        }
    result["threshold_expected_outage_hours"] = threshold
    result["big_day_rate_in_training"] = rate
    result["days"] = [str(d) for d in observed.index[observed.astype(bool)]]
    return result


def summarise(results: list[FoldResult], territory_out: pd.Series, train_daily: pd.Series,
              min_customers_out: float, tz: str, top_k: int = 10) -> dict[str, Any]:
    """metrics.json of a backtest: per fold and overall; overall also by lead bucket, by
    season, the daily ranking and the big-day scores; a reliability table per method."""
    allrows = pd.concat([r.rows for r in results], ignore_index=True)
    day = allrows[C.TS].dt.tz_convert(tz).dt.date

    def ranking(rows: pd.DataFrame, days: pd.Series) -> dict[str, Any]:
        frame = rows.assign(_day=days.to_numpy())
        out = {NAMES[c]: daily_ranking(frame, c, C.LABEL, "_day", C.AREA, top_k)
               for c in METHODS}
        # perfect foresight of each day's outage hours: the most any ranking can reach when
        # more than a quarter of the areas have an outage that day
        out["oracle"] = daily_ranking(frame, C.LABEL, C.LABEL, "_day", C.AREA, top_k)
        return out

    overall = skill(allrows, variants=True)
    overall["area_mode_winner"] = min(
        VARIANTS, key=lambda v: overall[v]["brier"]).removeprefix("raw_")
    overall["calibration_winner"] = min(
        CALIBRATIONS, key=lambda v: overall[v]["brier"]).removeprefix("cal_")
    out: dict[str, Any] = {
        "folds": [{"fold": r.fold.name, "train_start": str(r.fold.train_start),
                   "start": str(r.fold.start), "end": str(r.fold.end),
                   "seconds": r.seconds, "training": r.model_info,
                   **skill(r.rows, variants=True),
                   "ranking": ranking(r.rows, r.rows[C.TS].dt.tz_convert(tz).dt.date)}
                  for r in results],
        "overall": overall,
        "by_lead": {name: skill(allrows[allrows[C.LEAD_H].between(lo, hi)])
                    for lo, hi, name in LEAD_BUCKETS},
        "by_season": {season: skill(part) for season, part in allrows.groupby(
            allrows[C.TS].dt.month.map(SEASONS))},
        "ranking": ranking(allrows, day),
        "per_area": per_area_skill(allrows),
        "big_days": big_days(allrows, territory_out, train_daily, min_customers_out, tz),
        "reliability": {NAMES[c]: reliability(allrows[C.LABEL].to_numpy(),
                                              allrows[c].to_numpy()).to_dict(orient="list")
                        for c in METHODS},
    }
    return out


def per_area_skill(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per area: rows, outage hours, the model's and climatology's Brier score, Brier skill
    and ROC-AUC, and whether the model beats climatology there (Brier skill > 0)."""
    out: dict[str, dict[str, Any]] = {}
    for area, part in rows.groupby(C.AREA):
        y = part[C.LABEL].to_numpy("float64")
        m, c = scores(y, part[C.PROB].to_numpy()), scores(y, part[CLIMATOLOGY].to_numpy())
        bss = 1 - m["brier"] / c["brier"] if c["brier"] else float("nan")
        out[str(area)] = {"n": float(len(part)), "positives": float(y.sum()),
                          "model_brier": m["brier"], "climatology_brier": c["brier"],
                          "brier_skill": bss, "model_roc_auc": m["roc_auc"],
                          "climatology_roc_auc": c["roc_auc"],
                          "model_kind": str(part[C.MODEL_KIND].iloc[0]),
                          "beats_climatology": float(bss > 0)}
    return out


def territory_customers_out(data: Dataset) -> pd.Series:
    """Customers out territory-wide at the start of each hour of the history (UTC index)."""
    panel = data.panel
    if panel.open_customers is None:
        raise ValueError("the panel has no open-customer counts: big days need them")
    series = pd.Series(panel.open_customers.sum(axis=0), index=panel.hours)
    return series[panel.hours < panel.history_end]


def training_daily_outage_hours(data: Dataset, start: pd.Timestamp, end: pd.Timestamp,
                                tz: str) -> pd.Series:
    """Observed area-hours with an outage start per local day, in [start, end)."""
    panel = data.panel
    keep = (panel.hours >= start) & (panel.hours < end) & panel.observed
    labels = np.nan_to_num(panel.labels[:, keep]).sum(axis=0)
    return pd.Series(labels, index=panel.hours[keep].tz_convert(tz).date).groupby(
        level=0).sum()


def reliability_plot(metrics: dict[str, Any], path: str) -> str:
    """Reliability diagram (PNG) of every method from ``metrics['reliability']``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, table in metrics["reliability"].items():
        ax.plot(table["mean_p"], table["freq"], marker="o", label=name)
        top = max(top, max(table["mean_p"]), max(table["freq"]))
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect")
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability, all folds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def skill_by_fold_plot(metrics: dict[str, Any], path: str) -> str:
    """Brier skill against climatology and ROC-AUC per fold (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = metrics["folds"]
    names = [f["fold"] for f in folds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for method in ("model", "recent_rate"):
        a1.plot(names, [f[method]["brier_skill_vs_climatology"] for f in folds], marker="o",
                label=method)
    for method in ("model", "climatology", "recent_rate"):
        a2.plot(names, [f[method]["roc_auc"] for f in folds], marker="o", label=method)
    a1.axhline(0, color="grey", linestyle="--")
    a1.set_title("Brier skill vs climatology")
    a2.set_title("ROC-AUC")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=45)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def per_area_plot(metrics: dict[str, Any], path: str) -> str:
    """Brier skill against climatology per area, sorted (PNG): where the model beats the
    baseline (above zero) and where it does not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame.from_dict(metrics["per_area"], orient="index")
    table = table.sort_values("brier_skill")
    fig, ax = plt.subplots(figsize=(10, 4))
    colours = ["tab:green" if v > 0 else "tab:red" for v in table["brier_skill"]]
    ax.bar(range(len(table)), table["brier_skill"].clip(lower=-0.5), color=colours)
    ax.axhline(0, color="grey", linestyle="--")
    ax.set_xlabel(f"areas, sorted ({int(table['beats_climatology'].sum())} of {len(table)} "
                  "beat climatology)")
    ax.set_ylabel("Brier skill vs climatology (clipped at -0.5)")
    ax.set_title("Per-area skill, all folds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
