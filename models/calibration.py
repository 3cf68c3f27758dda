"""Probability calibration fitted on a slice later than the one the trees learned on.

Two classic maps from a raw probability to a calibrated one: Platt scaling (a logistic
regression on the raw log-odds, two numbers) and isotonic regression (a non-decreasing step
function, pool-adjacent-violators). Both are monotone non-decreasing, so a calibrated model
keeps the raw model's ranking and its monotone constraints. ``choose_calibrator`` picks one
(or none) on the later half of the calibration slice after fitting on the earlier half, then
refits the winner on the whole slice; a map must lower the later half's Brier score by
``MIN_GAIN`` to be chosen over none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

METHODS = ("none", "platt", "isotonic")
MIN_CLASS_ROWS = 100  # positives (and negatives) needed in each half of the slice for auto
MIN_GAIN = 0.005  # a map is chosen only if it lowers the later half's Brier by 0.5 % or more
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    """A fitted map from raw to calibrated probabilities (``method`` in METHODS)."""

    method: str = "none"
    platt: tuple[float, float] = (1.0, 0.0)  # slope, intercept on the raw log-odds
    knots_x: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    knots_y: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    info: dict = field(default_factory=dict)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype="float64")
        if self.method == "platt":
            a, b = self.platt
            return expit(a * _logit(raw) + b)
        if self.method == "isotonic":
            return np.clip(np.interp(raw, self.knots_x, self.knots_y), 0.0, 1.0)
        return raw


def fit_platt(raw: np.ndarray, y: np.ndarray, iterations: int = 50) -> Calibrator:
    """Logistic regression of ``y`` on logit(raw) by Newton's method (a tiny ridge keeps
    it finite when one slice is perfectly separated)."""
    x = _logit(np.asarray(raw, dtype="float64"))
    y = np.asarray(y, dtype="float64")
    design = np.column_stack([x, np.ones_like(x)])
    w = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = expit(design @ w)
        grad = design.T @ (p - y) + 1e-6 * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return Calibrator("platt", platt=(float(w[0]), float(w[1])))


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> Calibrator:
    """Pool adjacent violators on rows sorted by ``raw``: the non-decreasing step function
    closest to ``y`` in squared error. Each block contributes its lowest and highest raw value
    as knots, so prediction interpolates linearly between blocks and is flat beyond the ends."""
    raw = np.asarray(raw, dtype="float64")
    y = np.asarray(y, dtype="float64")
    order = np.argsort(raw, kind="mergesort")
    xs, ys = raw[order], y[order]
    # collapse equal raw values first: far fewer blocks for the Python loop below
    ux, start = np.unique(xs, return_index=True)
    sums = np.add.reduceat(ys, start)
    counts = np.diff(np.append(start, len(xs))).astype("float64")
    means: list[float] = []
    weights: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for x_i, s_i, n_i in zip(ux, sums, counts, strict=True):
        means.append(s_i / n_i)
        weights.append(n_i)
        lo.append(x_i)
        hi.append(x_i)
        while len(means) > 1 and means[-2] >= means[-1]:
            n = weights[-2] + weights[-1]
            m = (means[-2] * weights[-2] + means[-1] * weights[-1]) / n
            means[-2:], weights[-2:] = [m], [n]
            lo[-2:], hi[-2:] = [lo[-2]], [hi[-1]]
    kx = np.column_stack([lo, hi]).ravel()
    ky = np.repeat(means, 2)
    keep = np.append(True, np.diff(kx) > 0)  # one-value blocks give a knot twice
    return Calibrator("isotonic", knots_x=kx[keep], knots_y=np.clip(ky[keep], _EPS, 1 - _EPS))


FITTERS = {"none": lambda raw, y: Calibrator("none"), "platt": fit_platt,
           "isotonic": fit_isotonic}


def fit_every_method(raw: np.ndarray, y: np.ndarray) -> dict[str, Calibrator]:
    """Each method of METHODS fitted on the whole slice (an empty dict when the slice holds
    one class only), for backtests that compare them on later folds."""
    y = np.asarray(y, dtype="float64")
    if not len(y) or y.min() == y.max():
        return {}
    return {m: FITTERS[m](raw, y) for m in METHODS}


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def choose_calibrator(raw: np.ndarray, y: np.ndarray, ts: np.ndarray,
                      method: str = "auto") -> Calibrator:
    """Calibrate on rows (raw probability, label, time). ``auto`` fits every method on the
    earlier half of the slice (by time), keeps the one with the lowest Brier score on the later
    half, and refits it on the whole slice; a named method is fitted on the whole slice.
    ``info`` records the candidates' scores and the choice."""
    raw = np.asarray(raw, dtype="float64")
    y = np.asarray(y, dtype="float64")
    if method != "auto":
        if method not in FITTERS:
            raise ValueError(f"unknown calibration {method!r}; use auto or one of {METHODS}")
        cal = FITTERS[method](raw, y) if len(y) and y.min() != y.max() else Calibrator()
        cal.info = {"method": cal.method, "chosen_by": "config", "rows": len(y)}
        return cal
    order = np.argsort(np.asarray(ts), kind="mergesort")
    early, late = order[: len(order) // 2], order[len(order) // 2:]
    few = min(y[early].sum(), (1 - y[early]).sum(), y[late].sum(), (1 - y[late]).sum())
    if few < MIN_CLASS_ROWS:
        return Calibrator(info={"method": "none", "rows": len(y), "positives": int(y.sum()),
                                "chosen_by": f"fewer than {MIN_CLASS_ROWS} rows of a class in a "
                                "half of the slice: too few to calibrate on"})
    scores = {m: _brier(y[late], fit(raw[early], y[early])(raw[late]))
              for m, fit in FITTERS.items()}
    # a map must earn its place: LightGBM's binary objective is close to calibrated already,
    # and a map fitted on a small slice can add more noise than it removes
    bar = scores["none"] * (1 - MIN_GAIN)
    best = min(METHODS, key=lambda m: scores[m] if m == "none" or scores[m] < bar else np.inf)
    cal = FITTERS[best](raw, y)
    cal.info = {"method": best, "chosen_by": "later-half Brier",
                "later_half_brier": {m: round(s, 6) for m, s in scores.items()},
                "rows": len(y), "positives": int(y.sum())}
    return cal
