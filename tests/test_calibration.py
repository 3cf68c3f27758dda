"""Probability calibration: Platt and isotonic fits, the automatic choice, and its honesty."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.calibration import (
    MIN_CLASS_ROWS,
    Calibrator,
    choose_calibrator,
    fit_every_method,
    fit_isotonic,
    fit_platt,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _overconfident(n: int = 200_000, seed: int = 0):
    """Raw scores whose log-odds are twice too steep and shifted: truth = sigmoid(0.5 l - 0.4)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-3.0, 1.6, n)
    raw = _sigmoid(logit)
    y = (rng.random(n) < _sigmoid(0.5 * logit - 0.4)).astype(float)
    ts = np.arange(n)  # time order = row order
    return raw, y, ts


def _brier(y, p):
    return float(np.mean((p - y) ** 2))


def test_platt_recovers_the_slope_and_intercept_of_the_log_odds():
    raw, y, _ = _overconfident()
    cal = fit_platt(raw, y)
    slope, intercept = cal.platt
    assert slope == pytest.approx(0.5, abs=0.03)
    assert intercept == pytest.approx(-0.4, abs=0.08)
    assert _brier(y, cal(raw)) < _brier(y, raw)


def test_isotonic_is_non_decreasing_keeps_the_mean_and_the_ranking():
    raw, y, _ = _overconfident(50_000)
    cal = fit_isotonic(raw, y)
    grid = np.linspace(0, 1, 2001)
    assert (np.diff(cal(grid)) >= -1e-12).all()
    # pool-adjacent-violators keeps the sum of the labels on the rows it was fit on
    assert cal(raw).mean() == pytest.approx(y.mean(), rel=1e-3)
    assert _brier(y, cal(raw)) < _brier(y, raw)
    # ties may merge, but no pair of rows swaps order
    order = np.argsort(raw)
    assert (np.diff(cal(raw)[order]) >= -1e-12).all()
    assert roc_auc_score(y, cal(raw)) == pytest.approx(roc_auc_score(y, raw), abs=2e-3)


def test_auto_keeps_raw_probabilities_that_are_already_calibrated():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.0, 0.3, 100_000)
    y = (rng.random(len(raw)) < raw).astype(float)
    cal = choose_calibrator(raw, y, np.arange(len(raw)))
    assert cal.method == "none"
    assert cal.info["chosen_by"] == "later-half Brier"
    assert set(cal.info["later_half_brier"]) == {"none", "platt", "isotonic"}
    np.testing.assert_array_equal(cal(raw), raw)


def test_auto_maps_overconfident_probabilities_and_is_chosen_on_the_later_half():
    raw, y, ts = _overconfident()
    cal = choose_calibrator(raw, y, ts)
    assert cal.method in ("platt", "isotonic")
    scores = cal.info["later_half_brier"]
    assert scores[cal.method] < scores["none"] * 0.995
    # the winner is refitted on the whole slice
    refit = fit_platt(raw, y) if cal.method == "platt" else fit_isotonic(raw, y)
    np.testing.assert_allclose(cal(raw[:1000]), refit(raw[:1000]))


def test_auto_decides_on_time_not_on_row_order():
    """The later half is later in time: shuffling the rows with their times changes
    nothing."""
    raw, y, ts = _overconfident(60_000)
    perm = np.random.default_rng(2).permutation(len(raw))
    a = choose_calibrator(raw, y, ts)
    b = choose_calibrator(raw[perm], y[perm], ts[perm])
    assert a.method == b.method
    assert a.info["later_half_brier"] == b.info["later_half_brier"]


def test_too_few_outages_to_calibrate_keeps_the_raw_model():
    rng = np.random.default_rng(3)
    raw = rng.uniform(0, 0.01, 5000)
    y = np.zeros(len(raw))
    y[: MIN_CLASS_ROWS] = 1  # all positives in the earlier half: the later half has none
    cal = choose_calibrator(raw, y, np.arange(len(raw)))
    assert cal.method == "none" and "too few" in cal.info["chosen_by"]
    assert fit_every_method(raw, np.zeros(len(raw))) == {}
    assert set(fit_every_method(raw, y)) == {"none", "platt", "isotonic"}


def test_a_named_method_is_fitted_on_the_whole_slice_and_bad_names_are_refused():
    raw, y, ts = _overconfident(20_000)
    cal = choose_calibrator(raw, y, ts, method="isotonic")
    assert cal.method == "isotonic" and cal.info["chosen_by"] == "config"
    with pytest.raises(ValueError, match="unknown calibration 'beta'"):
        choose_calibrator(raw, y, ts, method="beta")
    assert Calibrator()(np.array([0.2])) == pytest.approx([0.2])
