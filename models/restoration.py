"""How long an outage will last: LightGBM quantile models of the remaining time to
restoration (P10, P50, P90), at first report and k hours later, with a conformal widening of
the P10-P90 interval learned on a later slice than the fit, and the honest comparison
against the utility's own estimates and a median-by-cause baseline."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from configs.settings import FeatureSettings, ModelSettings, RestorationSettings
from features import columns as C
from features.restoration import (
    CATEGORICAL,
    ELAPSED_H,
    FEATURES,
    OPEN,
    REMAINING_H,
    STATUS,
    UTILITY_ETR_H,
    GridState,
    T,
    UtilityUpdates,
    build_duration_rows,
    duration_rows,
    storm_days,
)

log = logging.getLogger(__name__)

P10, P50, P90 = "p10_h", "p50_h", "p90_h"
QUANTILE_COLUMNS = {0.1: P10, 0.5: P50, 0.9: P90}


@dataclass
class DurationModel:
    """Quantile boosters on log1p(remaining hours), their category maps, and the conformal
    widening (log scale) per elapsed-hours bucket that makes P10-P90 cover ~80 % on the
    calibration slice."""

    categories: dict[str, list[str]]
    boosters: dict[float, lgb.Booster]
    widen: dict[str, float]  # group_key() -> widening of both ends, log1p(hours)
    regime_edges: tuple[float, ...] = ()  # outages open territory-wide that start a regime
    typical: dict[str, Any] = field(default_factory=dict)  # defaults for hypothetical outages
    info: dict = field(default_factory=dict)

    def matrix(self, rows: pd.DataFrame) -> pd.DataFrame:
        x = rows[list(FEATURES)].copy()
        for name in CATEGORICAL:
            x[name] = pd.Categorical(rows[name].astype(str), categories=self.categories[name])
        return x

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """P10, P50, P90 of the hours from each row's time to restoration (non-decreasing,
        at least 0), index aligned with ``rows``."""
        x = self.matrix(rows)
        raw = np.column_stack([self.boosters[q].predict(x) for q in (0.1, 0.5, 0.9)])
        raw = np.sort(raw, axis=1)  # quantile crossing
        widen = self.widening(rows)
        raw[:, 0] -= widen
        raw[:, 2] += widen
        hours = np.clip(np.expm1(raw), 0.0, None)
        return pd.DataFrame(hours, columns=[P10, P50, P90], index=rows.index)

    def groups(self, rows: pd.DataFrame, buckets: tuple[float, ...]) -> np.ndarray:
        """Calibration group of each row: the map's regime (outages open territory-wide,
        cut at ``regime_edges``) and the elapsed-hours bucket (the largest bucket <= it)."""
        edges = np.asarray(self.regime_edges, "float64")
        regime = np.searchsorted(edges, rows["terr_open"].to_numpy("float64"), side="right")
        b = np.asarray(sorted(buckets), "float64")
        at = b[np.clip(np.searchsorted(b, rows[ELAPSED_H].to_numpy("float64"), side="right")
                       - 1, 0, None)]
        return np.array([group_key(int(r), float(e)) for r, e in zip(regime, at, strict=True)])

    def widening(self, rows: pd.DataFrame) -> np.ndarray:
        buckets = tuple(sorted({float(k.split("|")[1]) for k in self.widen}))
        keys = self.groups(rows, buckets)
        return np.array([self.widen.get(k, self.widen.get(group_key(-1, float(k.split("|")[1])),
                                                          0.0)) for k in keys])


def group_key(regime: int, elapsed_bucket: float) -> str:
    """``"<regime>|<elapsed bucket>"``; regime -1 pools every regime of the bucket."""
    return f"{regime}|{elapsed_bucket:g}"


class CauseMedian:
    """Baseline: median remaining hours by first cause and elapsed-hours bucket, learned on
    the training rows (falls back to the bucket's median, then the overall one)."""

    def __init__(self, rows: pd.DataFrame) -> None:
        clean = rows[rows[REMAINING_H].notna()]
        self.by_cause = clean.groupby(["cause", ELAPSED_H])[REMAINING_H].median()
        self.by_elapsed = clean.groupby(ELAPSED_H)[REMAINING_H].median()
        self.overall = float(clean[REMAINING_H].median())

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        key = pd.MultiIndex.from_arrays([rows["cause"], rows[ELAPSED_H]])
        out = self.by_cause.reindex(key).to_numpy()
        out = np.where(np.isnan(out), self.by_elapsed.reindex(rows[ELAPSED_H]).to_numpy(), out)
        return np.where(np.isnan(out), self.overall, out)


def fit_duration_model(fit_rows: pd.DataFrame, calibration_rows: pd.DataFrame,
                       cfg: RestorationSettings) -> DurationModel:
    """Fit one LightGBM quantile model per quantile on the CLEAN rows of ``fit_rows`` and learn
    the interval widening on ``calibration_rows`` (which must be later than every fit row's
    restoration)."""
    fit = fit_rows[fit_rows[REMAINING_H].notna()]
    cal = calibration_rows[calibration_rows[REMAINING_H].notna()]
    if len(fit) < cfg.min_rows or len(cal) < cfg.min_rows // 10:
        raise ValueError(
            f"restoration model: {len(fit)} fit rows and {len(cal)} calibration rows with a "
            f"clean end; need at least {cfg.min_rows} and {cfg.min_rows // 10} "
            "(hint: the outage history must cover the training period)")
    categories = {name: sorted(fit[name].astype(str).unique()) for name in CATEGORICAL}
    model = DurationModel(categories=categories, boosters={}, widen={},
                          regime_edges=tuple(cfg.regime_open_edges))
    x = model.matrix(fit)
    y = np.log1p(fit[REMAINING_H].to_numpy("float64"))
    for q in (0.1, 0.5, 0.9):
        params = {**cfg.lgbm_params, "objective": "quantile", "alpha": q, "seed": cfg.seed}
        model.boosters[q] = lgb.train(params, lgb.Dataset(x, y, free_raw_data=True),
                                      num_boost_round=cfg.num_boost_round)
    model.widen = _conformal_widening(model, cal, cfg.interval_coverage)
    model.typical = {
        "cause": str(fit["cause"].mode().iloc[0]),
        "comment": str(fit["comment"].mode().iloc[0]),
        "since_start_h": float(fit.loc[fit[ELAPSED_H] == 0, "since_start_h"].median()),
        "customers_by_area": fit.loc[fit[ELAPSED_H] == 0].groupby("area")["log_customers"]
        .median().pipe(np.expm1).round().to_dict(),
    }
    model.info = {"fit_rows": len(fit), "calibration_rows": len(cal),
                  "quantile_objective": "log1p(hours)", "widening": model.widen}
    return model


MIN_GROUP_ROWS = 30


def _conformal_widening(model: DurationModel, cal: pd.DataFrame, coverage: float
                        ) -> dict[str, float]:
    """Conformalised quantile regression, per group (regime of the map x elapsed bucket):
    the (coverage)-quantile of max(lo - y, y - hi) on the calibration rows (log scale;
    negative values narrow). Each bucket also gets a pooled value (regime -1) for groups
    with fewer than MIN_GROUP_ROWS calibration rows."""
    x = model.matrix(cal)
    lo = model.boosters[0.1].predict(x)
    hi = model.boosters[0.9].predict(x)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    y = np.log1p(cal[REMAINING_H].to_numpy("float64"))
    score = np.maximum(lo - y, y - hi)
    buckets = tuple(sorted(float(b) for b in cal[ELAPSED_H].unique()))
    keys = model.groups(cal, buckets)
    pooled = np.array([group_key(-1, float(k.split("|")[1])) for k in keys])
    out: dict[str, float] = {}
    for key in np.unique(np.concatenate([keys, pooled])):
        s = score[(keys == key) | (pooled == key)]
        if len(s) >= MIN_GROUP_ROWS:
            out[str(key)] = float(np.quantile(s, min(1.0, coverage * (1 + 1 / len(s)))))
    return out


# ----------------------------------------------------------------------- the comparison


def errors(rows: pd.DataFrame, predictions: pd.DataFrame, baseline: CauseMedian) -> pd.DataFrame:
    """Signed errors in hours (estimate minus actual remaining time; positive = estimated too
    late) of the model's P50, the utility's estimate in effect and the cause-median
    baseline, and whether the actual time fell inside P10-P90."""
    actual = rows[REMAINING_H].to_numpy("float64")
    return pd.DataFrame({
        "model_p50": predictions[P50].to_numpy() - actual,
        "utility": rows[UTILITY_ETR_H].to_numpy("float64") - actual,
        "cause_median": baseline.predict(rows) - actual,
        "covered": ((predictions[P10].to_numpy() <= actual)
                    & (actual <= predictions[P90].to_numpy())),
        ELAPSED_H: rows[ELAPSED_H].to_numpy(),
        "has_utility_etr": rows[UTILITY_ETR_H].notna().to_numpy(),
    }, index=rows.index)


def _summary(err: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(err)}
    for name in ("model_p50", "utility", "cause_median"):
        if name not in err.columns:
            continue
        e = err[name].dropna()
        if len(e):
            out[name] = {"mae_h": round(float(e.abs().mean()), 3),
                         "medae_h": round(float(e.abs().median()), 3),
                         "bias_h": round(float(e.mean()), 3)}
    out["p10_p90_coverage"] = round(float(err["covered"].mean()), 4) if len(err) else None
    return out


def compare(rows: pd.DataFrame, predictions: pd.DataFrame, baseline: CauseMedian,
            storm_days: pd.Index, tz: str) -> dict[str, Any]:
    """The comparison table: on the outages the utility gave an estimate for (the same
    outages for every method), overall and on storm versus normal days, per elapsed bucket;
    and the model against the baseline on every outage with a clean end."""
    clean = rows[REMAINING_H].notna() & rows[T].notna()
    rows, predictions = rows[clean], predictions[clean]
    err = errors(rows, predictions, baseline)
    storm = pd.Series(rows[T].dt.tz_convert(tz).dt.date.isin(set(storm_days)).to_numpy(),
                      index=rows.index)
    table: dict[str, Any] = {}
    for k, group in err.groupby(ELAPSED_H):
        with_etr = group[group["has_utility_etr"]]
        label = f"elapsed_{k:g}h"
        table[label] = {
            "same_outages_with_utility_etr": _summary(with_etr),
            "storm_days": _summary(with_etr[storm[with_etr.index]]),
            "normal_days": _summary(with_etr[~storm[with_etr.index]]),
            "all_clean_outages": _summary(group.drop(columns=["utility"])),
        }
    return table


def comparison_markdown(table: dict[str, Any]) -> str:
    """The comparison as a Markdown table (hours)."""
    lines = ["| elapsed | subset | n | P50 MAE | P50 MedAE | P50 bias | utility MAE | "
             "utility MedAE | utility bias | cause-median MAE | cause-median MedAE | "
             "P10-P90 coverage |", "|" + "---|" * 12]
    for elapsed, parts in table.items():
        for subset, s in parts.items():
            m, u, b = s.get("model_p50", {}), s.get("utility", {}), s.get("cause_median", {})
            lines.append(
                f"| {elapsed} | {subset} | {s['n']} | {m.get('mae_h', '')} | "
                f"{m.get('medae_h', '')} | {m.get('bias_h', '')} | {u.get('mae_h', '')} | "
                f"{u.get('medae_h', '')} | {u.get('bias_h', '')} | {b.get('mae_h', '')} | "
                f"{b.get('medae_h', '')} | {s.get('p10_p90_coverage', '')} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class RestorationPeriods:
    """UTC bounds: fit on reports before ``calibration_start`` restored by then, calibrate on
    [calibration_start, train_end) restored by train_end, test on [test_start, test_end)."""

    calibration_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def __post_init__(self) -> None:
        if not self.calibration_start < self.train_end <= self.test_start < self.test_end:
            raise ValueError(f"restoration periods out of order: {self}")


def split_rows(rows: pd.DataFrame, periods: RestorationPeriods
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Fit, calibration and test rows. A row belongs to a slice by its first-report time;
    fit and calibration rows whose outage was not restored (clean) before the slice ended are
    right-censored there and dropped, so no slice learns from a later one."""
    first = rows[T] - pd.to_timedelta(rows[ELAPSED_H], unit="h")
    end = rows[T] + pd.to_timedelta(rows[REMAINING_H], unit="h")
    fit = rows[(first < periods.calibration_start) & (end < periods.calibration_start)]
    cal = rows[(first >= periods.calibration_start) & (first < periods.train_end)
               & (end < periods.train_end)]
    test = rows[(first >= periods.test_start) & (first < periods.test_end)
                & rows[REMAINING_H].notna()]
    return fit, cal, test


def clean_share(rows: pd.DataFrame) -> float:
    return float(rows[REMAINING_H].notna().mean()) if len(rows) else 0.0


def fit_and_evaluate_restoration(
    rows: pd.DataFrame, periods: RestorationPeriods, cfg: RestorationSettings,
    storm_days: pd.Index, tz: str, events: pd.DataFrame | None = None,
) -> tuple[DurationModel, dict[str, Any]]:
    """Fit on the fit slice, calibrate on the later calibration slice, and compare on the
    test period (never seen by either) against the utility and the cause-median baseline."""
    fit, cal, test = split_rows(rows, periods)
    if test.empty:
        raise ValueError(f"restoration model: no outage with a clean end reported in the test "
                         f"period {periods.test_start}..{periods.test_end}")
    model = fit_duration_model(fit, cal, cfg)
    baseline = CauseMedian(fit)
    predictions = model.predict(test)
    table = compare(test, predictions, baseline, storm_days, tz)
    first = table.get("elapsed_0h", {}).get("same_outages_with_utility_etr", {})
    headline = {
        "n": first.get("n", 0),
        "p50_mae_h": first.get("model_p50", {}).get("mae_h"),
        "p50_medae_h": first.get("model_p50", {}).get("medae_h"),
        "utility_first_etr_mae_h": first.get("utility", {}).get("mae_h"),
        "utility_first_etr_medae_h": first.get("utility", {}).get("medae_h"),
        "cause_median_mae_h": first.get("cause_median", {}).get("mae_h"),
        "p10_p90_coverage": first.get("p10_p90_coverage"),
    }
    report = {
        "headline_first_report": headline,
        "comparison": table,
        "periods": {k: str(v) for k, v in periods.__dict__.items()},
        "rows": {"fit": len(fit), "calibration": len(cal), "test": len(test)},
        "storm_days_in_test": [str(d) for d in storm_days],
        "model": model.info,
    }
    if events is not None:
        report["against_last_etr"] = comparison_against_last_etr(test, events, predictions)
    model.info = {**model.info, "trained_through": str(periods.train_end)}
    return model, report


def comparison_against_last_etr(rows: pd.DataFrame, events: pd.DataFrame,
                                predictions: pd.DataFrame) -> dict[str, Any]:
    """For outages still open k hours after the first report: the model's re-estimate at k
    against the utility's *last* published estimate (``EV_ETR_LAST``, issued at some later,
    unknown moment, so it favours the utility)."""
    last = events.set_index(C.EV_ID)[C.EV_ETR_LAST]
    end = rows[T] + pd.to_timedelta(rows[REMAINING_H], unit="h")
    utility_err = (rows[C.EV_ID].map(last) - end).dt.total_seconds() / 3600
    model_err = predictions[P50] - rows[REMAINING_H]
    out: dict[str, Any] = {}
    for k, idx in rows.groupby(ELAPSED_H).groups.items():
        u = utility_err[idx]
        both = u.notna() & model_err[idx].notna()
        out[f"elapsed_{k:g}h"] = {
            "n": int(both.sum()),
            "model_p50_mae_h": round(float(model_err[idx][both].abs().mean()), 3),
            "model_p50_medae_h": round(float(model_err[idx][both].abs().median()), 3),
            "utility_last_etr_mae_h": round(float(u[both].abs().mean()), 3),
            "utility_last_etr_medae_h": round(float(u[both].abs().median()), 3),
        }
    return out


def train_restoration_model(
    events: pd.DataFrame, updates: UtilityUpdates | None, weather_daily: pd.DataFrame,
    areas: pd.DataFrame, cfg: RestorationSettings, model_cfg: ModelSettings,
    features: FeatureSettings, station_tz: str,
) -> tuple[DurationModel, dict[str, Any], GridState]:
    """Build the rows from the outage history (events with AREA), fit, calibrate and compare;
    returns the model, the report (with counts of outages by end status) and the grid state
    for scoring."""
    rows, state, counts = build_duration_rows(
        events, updates, weather_daily, areas, cfg.elapsed_h, cfg.max_end_uncertainty_min,
        station_tz, features)
    periods = periods_from(model_cfg, cfg)
    storm = storm_days(state, periods.test_start, periods.test_end, station_tz,
                       cfg.storm_customers_out)
    model, report = fit_and_evaluate_restoration(rows, periods, cfg, storm, station_tz, events)
    report["outages"] = counts
    log.info("restoration model: first-report P50 MAE %s h vs utility %s h on %s outages",
             report["headline_first_report"]["p50_mae_h"],
             report["headline_first_report"]["utility_first_etr_mae_h"],
             report["headline_first_report"]["n"])
    return model, report, state


def periods_from(model: ModelSettings, cfg: RestorationSettings) -> RestorationPeriods:
    """The risk model's training and test periods, with the calibration slice cut from the
    end of training."""
    def utc(value: Any) -> pd.Timestamp:
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    train_end = utc(model.train_end)
    return RestorationPeriods(
        calibration_start=train_end - pd.Timedelta(days=cfg.calibration_days),
        train_end=train_end, test_start=utc(model.test_start), test_end=utc(model.test_end))


# ------------------------------------------------------------------------------- scoring


def estimate_open_outages(
    model: DurationModel, events: pd.DataFrame, state: GridState, weather_daily: pd.DataFrame,
    as_of: pd.Timestamp, station_tz: str, features: FeatureSettings,
    updates: UtilityUpdates | None = None,
) -> pd.DataFrame:
    """Outages on the map at ``as_of`` (reported by then, not restored by then) with the
    model's P10/P50/P90 restoration time (UTC) and the utility's estimate in effect. Uses
    nothing after ``as_of``."""
    as_of = pd.Timestamp(as_of)
    on_map = (~events[C.EV_PLANNED] & events[C.EV_DUPLICATE_OF].isna()
              & (events[C.EV_FIRST_SEEN] <= as_of) & ~(events[C.EV_END] <= as_of))
    open_now = events[on_map].assign(**{STATUS: OPEN})
    columns = [C.EV_ID, C.AREA, C.EV_FIRST_SEEN, ELAPSED_H, "cause", "customers",
               P10, P50, P90, "restored_p10_utc", "restored_p50_utc", "restored_p90_utc",
               "utility_etr_utc"]
    if open_now.empty:
        return pd.DataFrame(columns=columns)
    t = pd.Series(as_of, index=open_now.index)
    rows = duration_rows(open_now, t, state, weather_daily, station_tz, features, updates)
    pred = model.predict(rows)
    out = pd.DataFrame({
        C.EV_ID: rows[C.EV_ID], C.AREA: rows[C.AREA],
        C.EV_FIRST_SEEN: open_now[C.EV_FIRST_SEEN].to_numpy(), ELAPSED_H: rows[ELAPSED_H],
        "cause": rows["cause"], "customers": open_now[C.EV_CUSTOMERS_FIRST].to_numpy(),
        P10: pred[P10], P50: pred[P50], P90: pred[P90],
    })
    for name in (P10, P50, P90):
        out[f"restored_{name[:3]}_utc"] = (as_of + pd.to_timedelta(out[name], unit="h")).dt.round("s")
    out["utility_etr_utc"] = (as_of + pd.to_timedelta(rows[UTILITY_ETR_H], unit="h")).dt.round("s")
    return out[columns].sort_values(P50, ascending=False, ignore_index=True)


def window_durations(
    model: DurationModel, windows: pd.DataFrame, areas: pd.DataFrame, state: GridState,
    weather_daily: pd.DataFrame, as_of: pd.Timestamp, station_tz: str,
    features: FeatureSettings,
) -> pd.DataFrame:
    """``windows`` with how long an outage starting in each would likely last
    (duration_p10_h, duration_p50_h, duration_p90_h, hours): a typical outage of the area
    reported at the window's start, with the map as it is at ``as_of``."""
    out = windows.copy()
    if windows.empty:
        for name in ("duration_p10_h", "duration_p50_h", "duration_p90_h"):
            out[name] = pd.Series(dtype="float64")
        return out
    typical = model.typical
    where = areas.set_index(C.AREA)
    area = windows[C.AREA].astype(str)
    start = pd.to_datetime(windows["start"], utc=True)
    customers = area.map(typical.get("customers_by_area", {})).fillna(4.0)
    no_time = pd.Series(pd.NaT, index=windows.index, dtype="datetime64[ns, UTC]")
    hypothetical = pd.DataFrame({
        C.EV_ID: windows["window_id"].astype(str),
        C.EV_SOURCE_ID: windows["window_id"].astype(str),
        C.AREA: area, STATUS: OPEN, C.EV_END: no_time,
        C.EV_FIRST_SEEN: start,
        C.EV_START: start - pd.Timedelta(hours=typical.get("since_start_h", 0.0)),
        C.EV_CAUSE_FIRST: typical.get("cause", "unknown"),
        C.EV_CUSTOMERS_FIRST: customers.astype("float64"),
        C.EV_ETR_FIRST: no_time,
        C.EV_LAT: area.map(where[C.AREA_LAT]).astype("float64"),
        C.EV_LON: area.map(where[C.AREA_LON]).astype("float64"),
    }, index=windows.index)
    rows = duration_rows(hypothetical, hypothetical[C.EV_FIRST_SEEN], state, weather_daily,
                         station_tz, features, state_t=pd.Timestamp(as_of))
    rows["comment"] = typical.get("comment", "none")
    rows["utility_gave_etr"] = np.nan  # unknown for an outage that has not happened
    pred = model.predict(rows)
    out["duration_p10_h"] = pred[P10].round(2).to_numpy()
    out["duration_p50_h"] = pred[P50].round(2).to_numpy()
    out["duration_p90_h"] = pred[P90].round(2).to_numpy()
    return out
