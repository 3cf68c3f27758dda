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
