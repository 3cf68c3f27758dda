"""Rolling-origin folds: train on everything before a fold, predict the fold."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Fold:
    """Train on [train_start, start), test on [start, end); times UTC."""

    index: int
    train_start: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def name(self) -> str:
        return f"fold{self.index}-{self.start:%Y%m%d}"


def rolling_origin_folds(train_start: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                         fold_days: int) -> list[Fold]:
    """Consecutive folds of ``fold_days`` days covering [start, end); each trains on everything
    from ``train_start`` to its own start. A remainder shorter than half a fold joins the last
    fold (a year in 91-day folds is four folds, not four and a one-day fifth)."""
    if not train_start < start < end:
        raise ValueError(f"backtest needs train_start < start < end, got {train_start}, "
                         f"{start}, {end}")
    if fold_days < 1:
        raise ValueError(f"fold_days must be at least 1, got {fold_days}")
    folds: list[Fold] = []
    lo, i = start, 0
    step = pd.Timedelta(days=fold_days)
    while lo < end:
        hi = min(lo + step, end)
        if folds and hi - lo < step / 2:
            last = folds.pop()
            folds.append(Fold(last.index, train_start, last.start, end))
            break
        folds.append(Fold(i, train_start, lo, hi))
        lo, i = hi, i + 1
    return folds
