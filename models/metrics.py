"""Skill scores of hourly risk against what happened, always beside a baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

LEAD_BUCKETS = ((1, 24, "0-24h"), (25, 48, "24-48h"), (49, 72, "48-72h"))


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), Brier score, prevalence and row count."""
    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    out = {"n": float(len(y)), "prevalence": float(y.mean()) if len(y) else float("nan")}
    if len(np.unique(y)) < 2:
        return out | {"roc_auc": float("nan"), "pr_auc": float("nan"),
                      "brier": float(brier_score_loss(y, p)) if len(y) else float("nan")}
    return out | {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
    }


def compare(y: np.ndarray, p_model: np.ndarray, p_base: np.ndarray) -> dict[str, float]:
    """Model and baseline scores on the same rows, with Brier skill of the model against the
    baseline (1 - Brier_model / Brier_baseline; > 0 means better than the baseline)."""
    m = scores(y, p_model)
    b = scores(y, p_base)
    out = {f"model_{k}": v for k, v in m.items() if k not in ("n", "prevalence")}
    out |= {f"climatology_{k}": v for k, v in b.items() if k not in ("n", "prevalence")}
    out["n"] = m["n"]
    out["prevalence"] = m["prevalence"]
    out["brier_skill"] = (
        1.0 - m["brier"] / b["brier"] if b.get("brier", 0) > 0 else float("nan")
    )
    out["pr_auc_over_prevalence"] = (
        m["pr_auc"] / m["prevalence"] if m["prevalence"] > 0 else float("nan")
    )
    return out


def evaluate(rows: pd.DataFrame, label: str, prob: str, base: str, lead: str) -> dict:
    """Overall and per lead-time bucket comparison on rows with a known label."""
    known = rows[rows[label].notna()]
    out: dict = {"overall": compare(known[label], known[prob], known[base]), "by_lead": {}}
    for lo, hi, name in LEAD_BUCKETS:
        part = known[(known[lead] >= lo) & (known[lead] <= hi)]
        if len(part):
            out["by_lead"][name] = compare(part[label], part[prob], part[base])
    return out


SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA",
           8: "JJA", 9: "SON", 10: "SON", 11: "SON"}


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Reliability table on quantile bins of the predictions: rows, mean predicted and
    observed frequency per bin (probabilities 0-1)."""
    frame = pd.DataFrame({"y": np.asarray(y, "float64"), "p": np.asarray(p, "float64")})
    frame["bin"] = pd.qcut(frame["p"].rank(method="first"), q=min(bins, max(len(frame), 1)),
                           labels=False)
    table = frame.groupby("bin").agg(n=("y", "size"), mean_p=("p", "mean"), freq=("y", "mean"))
    return table.reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE: rows-weighted mean |mean predicted - observed frequency| over quantile bins."""
    table = reliability(y, p, bins)
    if table.empty:
        return float("nan")
    return float((table["n"] * (table["mean_p"] - table["freq"]).abs()).sum() / table["n"].sum())


def daily_ranking(rows: pd.DataFrame, score: str, label: str, day: str, area: str,
                  k: int = 10) -> dict[str, float]:
    """Con Edison-style ranking quality: each day, rank areas by their mean ``score``; the
    share of areas with an outage that day that sit in the top 25 % of the ranking, and the
    precision of the top ``k`` (averaged over days with at least one outage)."""
    daily = rows.groupby([day, area]).agg(s=(score, "mean"), y=(label, "max")).reset_index()
    daily["rank"] = daily.groupby(day)["s"].rank(ascending=False, method="first")
    daily["n"] = daily.groupby(day)["s"].transform("size")
    daily["top25"] = daily["rank"] <= np.ceil(0.25 * daily["n"])
    hit = daily[daily["y"] > 0]
    if hit.empty:
        return {"top25_share": float("nan"), f"precision_at_{k}": float("nan"), "days": 0.0}
    top25 = hit.groupby(day)["top25"].mean()
    topk = daily[daily["rank"] <= k].groupby(day)["y"].mean().reindex(top25.index)
    return {"top25_share": float(top25.mean()), f"precision_at_{k}": float(topk.mean()),
            "days": float(len(top25))}


def event_scores(observed: pd.Series, predicted: pd.Series) -> dict[str, float]:
    """Probability of detection, false-alarm ratio and critical success index of yes/no
    events (e.g. big days), aligned by index."""
    o, f = observed.astype(bool), predicted.reindex(observed.index).fillna(False).astype(bool)
    hits, misses, alarms = int((o & f).sum()), int((o & ~f).sum()), int((~o & f).sum())
    return {
        "events": float(o.sum()), "forecast": float(f.sum()), "hits": float(hits),
        "pod": hits / (hits + misses) if hits + misses else float("nan"),
        "far": alarms / (hits + alarms) if hits + alarms else float("nan"),
        "csi": hits / (hits + misses + alarms) if hits + misses + alarms else float("nan"),
    }
