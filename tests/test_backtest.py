"""Backtests: rolling-origin folds, the metrics beside baselines, and no fold learning from
its own future."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from configs.settings import FeatureSettings, load_settings
from features import columns as C
from features.build import weather_by_hour
from features.dataset import Dataset
from features.labels import HourlyPanel
from models.backtest import (
    METHODS,
    RECENT,
    run_fold,
    summarise,
    territory_customers_out,
    training_daily_outage_hours,
)
from models.metrics import daily_ranking, event_scores, expected_calibration_error, reliability
from models.split import rolling_origin_folds

START = pd.Timestamp("2022-01-01", tz="UTC")
TZ = "America/New_York"
FEAT = FeatureSettings()


def test_folds_cover_the_period_and_train_on_the_past_only():
    folds = rolling_origin_folds(START, pd.Timestamp("2023-01-01", tz="UTC"),
                                 pd.Timestamp("2024-01-01", tz="UTC"), 91)
    assert len(folds) == 4 and folds[0].start == pd.Timestamp("2023-01-01", tz="UTC")
    assert all(a.end == b.start for a, b in zip(folds, folds[1:], strict=False))
    assert folds[-1].end == pd.Timestamp("2024-01-01", tz="UTC")
    assert (folds[-1].end - folds[-1].start).days == 92  # the one-day remainder joined it
    assert all(f.train_start == START for f in folds)
    # a remainder of half a fold or more is a fold of its own
    folds = rolling_origin_folds(START, pd.Timestamp("2023-01-01", tz="UTC"),
                                 pd.Timestamp("2023-03-17", tz="UTC"), 30)
    assert [(f.end - f.start).days for f in folds] == [30, 30, 15]
    with pytest.raises(ValueError, match="train_start < start < end"):
        rolling_origin_folds(START, START, START + pd.Timedelta(days=3), 1)


def test_calibration_error_tells_calibrated_from_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 200_000)
    y = (rng.random(len(p)) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.003
    assert expected_calibration_error(y, np.clip(2 * p, 0, 1)) == pytest.approx(p.mean(), 0.05)
    table = reliability(y, p, bins=10)
    assert len(table) == 10 and table["n"].sum() == len(p)


def test_daily_ranking_and_event_scores_by_hand():
    rows = pd.DataFrame({
        "day": ["d1"] * 8 + ["d2"] * 8,
        "area": list("ABCDEFGH") * 2,
        "s": [8, 7, 6, 5, 4, 3, 2, 1] * 2,
        "y": [1, 0, 0, 0, 0, 0, 0, 1] + [0, 1, 1, 0, 0, 0, 0, 0],
    })
    r = daily_ranking(rows, "s", "y", "day", "area", k=2)
    # top 25 % = 2 of 8 areas; d1: A in, H out -> 0.5; d2: B in, C out -> 0.5
    assert r["top25_share"] == 0.5 and r["precision_at_2"] == 0.5 and r["days"] == 2
    obs = pd.Series([True, True, False, False], index=list("abcd"))
    fc = pd.Series([True, False, True, False], index=list("abcd"))
    e = event_scores(obs, fc)
    assert (e["pod"], e["far"], e["csi"]) == (0.5, 0.5, pytest.approx(1 / 3))


def _dataset(days: int = 150, seed: int = 0) -> Dataset:
    """Three areas whose outages follow the daily rain, with customers out on the map."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(START, periods=days * 24 + 72, freq="h")
    dates = pd.date_range("2021-12-20", (START + pd.Timedelta(days=days + 5)).tz_localize(None),
                          freq="D")
    daily = pd.DataFrame({C.WX_DATE: dates, C.WX_TMAX: rng.normal(15, 8, len(dates)),
                          C.WX_TMIN: rng.normal(3, 6, len(dates)),
                          C.WX_PRCP: rng.gamma(0.4, 10, len(dates)), C.WX_SNOW: 0.0})
    wx = weather_by_hour(daily, hours, TZ, FEAT)
    rain = np.nan_to_num(wx["wx_prcp_mm"].to_numpy())
    base = np.array([0.02, 0.05, 0.1])[:, None]
    p = np.clip(base * (1 + rain[None, :] / 10), 0, 0.9)
    counts = (rng.random((3, len(hours))) < p).astype(float)
    counts[:, days * 24:] = 0
    observed = np.ones(len(hours), dtype=bool)
    observed[days * 24:] = False
    open_customers = counts * rng.integers(100, 9000, counts.shape)
    panel = HourlyPanel(np.array(["A0", "A1", "A2"], dtype=object), hours, counts,
                        counts * 50, observed, START + pd.Timedelta(days=days),
                        open_outages=counts.copy(), open_customers=open_customers)
    areas = pd.DataFrame({C.AREA: panel.area_ids, C.CUSTOMERS_SERVED: [1000, 5000, 20000],
                          C.AREA_LAT: [38.0, 37.5, 37.0], C.AREA_LON: [-85.0, -84.0, -83.0]})
    return Dataset(areas, panel, wx, pd.DataFrame())


@pytest.fixture(scope="module")
def small():
    cfg = load_settings()
    model = cfg.model.model_copy(update={"num_boost_round": 25, "valid_hours": 240,
                                         "min_positive_hours": 10_000})
    return _dataset(), model


def test_a_fold_never_learns_from_its_own_future(small):
    data, model_cfg = small
    fold = rolling_origin_folds(START, START + pd.Timedelta(days=120),
                                START + pd.Timedelta(days=150), 15)[0]
    result = run_fold(data, FEAT, model_cfg, fold)
    rows = result.rows
    assert rows[C.TS].min() >= fold.start and rows[C.TS].max() < fold.end
    assert set(METHODS) <= set(rows.columns) and rows[RECENT].between(0, 1).all()
    # rewrite every outage from the fold's start on: the predictions must not move
    later = data.panel.hours >= fold.start
    counts = data.panel.counts.copy()
    counts[:, later] = 1 - counts[:, later]
    changed = replace(data, panel=replace(data.panel, counts=counts))
    again = run_fold(changed, FEAT, model_cfg, fold).rows
    # rows issued at or before the fold's start see exactly what they saw before (the model
    # was trained on the past only); later issues rightly see the rewritten outages
    issued = rows[C.TS] - pd.to_timedelta(rows[C.LEAD_H] - 1, unit="h")  # lead 1: the hour itself
    early = (issued <= fold.start).to_numpy()
    assert 100 < early.sum() < len(rows)
    pd.testing.assert_series_equal(rows.loc[early, C.PROB], again.loc[early, C.PROB])
    assert not rows[C.LABEL].equals(again[C.LABEL])
    assert not rows.loc[~early, C.PROB].equals(again.loc[~early, C.PROB])


def test_summary_puts_every_metric_beside_both_baselines(small):
    data, model_cfg = small
    folds = rolling_origin_folds(START, START + pd.Timedelta(days=120),
                                 START + pd.Timedelta(days=150), 15)
    results = [run_fold(data, FEAT, model_cfg, f) for f in folds]
    train_daily = training_daily_outage_hours(data, START, folds[0].start, TZ)
    metrics = summarise(results, territory_customers_out(data), train_daily, 10_000, TZ,
                        top_k=2)
    assert [f["fold"] for f in metrics["folds"]] == [f.name for f in folds]
    for part in (metrics["overall"], *metrics["by_lead"].values()):
        for method in ("model", "climatology", "recent_rate"):
            m = part[method]
            assert 0 <= m["ece"] < 1 and 0 < m["brier"] < 1
            assert m["pr_auc_over_prevalence"] > 0
        assert part["climatology"]["brier_skill_vs_climatology"] == 0
    # rain drives the synthetic outages: the model beats climatology over the folds
    assert metrics["overall"]["model"]["roc_auc"] > metrics["overall"]["climatology"]["roc_auc"]
    assert metrics["overall"]["model"]["brier_skill_vs_climatology"] > 0
    assert set(metrics["by_season"]) <= {"DJF", "MAM", "JJA", "SON"}
    assert 0 <= metrics["ranking"]["model"]["top25_share"] <= 1
    big = metrics["big_days"]
    assert big["model"]["events"] == big["climatology"]["events"] > 0
