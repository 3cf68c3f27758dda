"""Metrics, training, explanations and risk windows."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from configs.settings import WindowSettings, load_settings
from features import columns as C
from features.build import WEATHER, Climatology
from features.labels import HourlyPanel
from models.explain import Explanations, describe, top_drivers
from models.metrics import compare, evaluate, scores
from models.train import PER_AREA, POOLED, customers_per_outage_hour, train_risk_model
from models.windows import build_windows


def test_scores_and_brier_skill_against_the_baseline():
    y = np.array([0, 0, 1, 1, 0, 1])
    perfect = compare(y, y.astype(float), np.full(6, 0.5))
    assert perfect["model_roc_auc"] == 1.0
    assert perfect["model_brier"] == 0.0
    assert perfect["brier_skill"] == 1.0
    assert perfect["climatology_brier"] == pytest.approx(0.25)
    same = compare(y, np.full(6, 0.5), np.full(6, 0.5))
    assert same["brier_skill"] == pytest.approx(0.0)
    worse = compare(y, 1 - y.astype(float), np.full(6, 0.5))
    assert worse["brier_skill"] < 0 and worse["model_roc_auc"] == 0.0
    assert perfect["pr_auc_over_prevalence"] == pytest.approx(1 / 0.5)
    assert np.isnan(scores(np.zeros(3), np.full(3, 0.1))["roc_auc"])


def test_evaluate_splits_by_lead_bucket_and_ignores_unlabelled_rows():
    rows = pd.DataFrame({"y": [1, 0, 1, 0, np.nan, 1, 0],
                         "p": [0.9, 0.1, 0.8, 0.2, 0.5, 0.6, 0.4],
                         "b": [0.5] * 7, "lead": [1, 2, 30, 31, 40, 60, 70]})
    out = evaluate(rows, "y", "p", "b", "lead")
    assert out["overall"]["n"] == 6
    assert set(out["by_lead"]) == {"0-24h", "24-48h", "48-72h"}
    assert out["by_lead"]["0-24h"]["n"] == 2
    assert out["by_lead"]["48-72h"]["model_roc_auc"] == 1.0


def _synthetic_rows(n_hours: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Two areas; outage odds rise with rain; area B has a twist only its own model learns."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2021-01-01", periods=n_hours, freq="h", tz="UTC")
    frames = []
    for area, twist in (("A", 0.0), ("B", 2.5)):
        rain = rng.gamma(0.6, 10, n_hours)
        odd = rng.integers(0, 2, n_hours).astype(float)
        logit = -3.5 + 0.08 * rain + twist * odd
        y = (rng.random(n_hours) < 1 / (1 + np.exp(-logit))).astype(float)
        frames.append(pd.DataFrame({C.AREA: area, C.TS: ts, C.LABEL: y, "rain": rain,
                                    "odd": odd}))
    # no area attribute among the features: the pooled model cannot learn B's twist
    return pd.concat(frames, ignore_index=True), ["rain", "odd"]


def _cfg(**model):
    base = {"train_start": "2021-01-01T00:00:00Z", "train_end": "2021-05-01T00:00:00Z",
            "test_start": "2021-05-01T00:00:00Z", "test_end": "2021-06-01T00:00:00Z",
            "valid_hours": 600, "min_positive_hours": 50, "num_boost_round": 60}
    return load_settings(overrides={"model": base | model}).model


def test_training_picks_per_area_models_only_where_they_win_on_validation():
    rows, names = _synthetic_rows()
    panel_clim = Climatology(pd.DataFrame(columns=[C.AREA, "month", "hour", "rate"]),
                             pd.Series(dtype=float), 0.1)
    model = train_risk_model(rows, names, panel_clim, pd.Series({"A": 4.0, "B": 9.0}), _cfg())
    assert model.info["rows_train"] + model.info["rows_valid"] == len(rows)
    assert "B" in model.per_area, model.info["per_area_decisions"]
    kinds = model.kinds(np.array(["A", "B", "C"], dtype=object))
    assert kinds[1] == PER_AREA and kinds[2] == POOLED
    p = model.predict(rows)
    assert p.shape == (len(rows),) and ((p > 0) & (p < 1)).all()
    wet = rows.iloc[:50].assign(rain=80.0)
    dry = rows.iloc[:50].assign(rain=0.0)
    assert model.predict(wet).mean() > model.predict(dry).mean()
    contrib = model.contributions(rows.iloc[:10])
    assert list(contrib.columns) == names
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict(rows.iloc[:100]), p[:100])


def test_no_per_area_model_below_the_positive_hours_threshold():
    rows, names = _synthetic_rows()
    clim = Climatology(pd.DataFrame(columns=[C.AREA, "month", "hour", "rate"]),
                       pd.Series(dtype=float), 0.1)
    model = train_risk_model(rows, names, clim, pd.Series(dtype=float),
                             _cfg(min_positive_hours=10_000))
    assert model.per_area == {}
    assert model.info["per_area_candidates"] == 0


def test_customers_per_outage_hour_uses_only_outage_hours_in_the_training_span():
    counts = np.array([[1, 0, 2, 1], [0, 0, 0, 0]], dtype=float)
    customers = np.array([[10, 0, 30, 500], [0, 0, 0, 0]], dtype=float)
    use = np.array([True, True, True, False])
    out = customers_per_outage_hour(customers, counts, np.array(["A", "B"]), use)
    assert out["A"] == pytest.approx(20.0)
    assert out["B"] == pytest.approx(20.0)  # no outage hours: the median of the others


def test_drivers_prefer_weather_and_history_over_background():
    contrib = pd.Series({"clim_rate": 2.0, "wx_prcp_mm": 0.5, "hist_n_24h": 0.3,
                         "wx_heavy_rain": 0.2, "lead_h": 0.9, "hist_n_72h": 0.4})
    values = pd.Series({"clim_rate": 0.1, "wx_prcp_mm": 38.2, "hist_n_24h": 5.0,
                        "wx_heavy_rain": 1.0, "lead_h": 3.0, "hist_n_72h": 0.0})
    drivers = top_drivers(contrib, values, 3)
    assert [d["text_en"] for d in drivers] == [
        "daily rain 38 mm", "5 outages in this area in the last 24 h", "heavy rain"]
    assert drivers[0]["text_zh"] == "日降雨量 38 毫米"
    only_background = top_drivers(pd.Series({"clim_rate": 1.0, "wx_tmax_c": -0.5}),
                                  pd.Series({"clim_rate": 0.2, "wx_tmax_c": 30.0}), 3)
    assert [d["feature"] for d in only_background] == ["clim_rate"]
    assert describe("wx_freezing_precip", 0.0) is None
    assert describe("wx_freezing_precip", 1.0) == ("freezing rain or ice", "冻雨或结冰")


def _hourly(probs: dict[str, list[float]], clim: float = 0.05, per_hour: float = 100.0):
    t0 = pd.Timestamp("2023-06-25 00:00", tz="UTC")
    rows = []
    for area, ps in probs.items():
        for k, p in enumerate(ps):
            rows.append({C.AREA: area, C.TS: t0 + pd.Timedelta(hours=k), C.ISSUE_TS: t0,
                         C.PROB: p, C.CLIMATOLOGY: clim, C.EXPECTED_CUSTOMERS: p * per_hour})
    hourly = pd.DataFrame(rows)
    values = pd.DataFrame({"wx_prcp_mm": 30.0}, index=hourly.index)
    return hourly, Explanations(values, lambda r: pd.DataFrame({"wx_prcp_mm": 0.4}, index=r.index))


AREAS = pd.DataFrame({C.AREA: ["X", "Y"], C.AREA_NAME: ["X County", "Y County"],
                      C.CUSTOMERS_SERVED: [50, 10_000]})
META = {"model_version": "3", "run_id": "r1", "weather_source": "replay"}


def test_windows_merge_short_gaps_rank_by_customers_and_cap_at_customers_served():
    hourly, expl = _hourly({
        "X": [0.1, 0.6, 0.7, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9],
        "Y": [0.1, 0.1, 0.3, 0.35, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
    })
    cfg = WindowSettings(min_probability=0.2, min_lift=1.5, max_gap_h=2)
    w = build_windows(hourly, AREAS, expl, cfg, META)
    x = w[w[C.AREA] == "X"].sort_values("start")
    assert list(x["hours"]) == [5, 1]  # hours 1-5 merged across a 2-hour gap; hour 11 apart
    assert x["end"].iloc[0] - x["start"].iloc[0] == pd.Timedelta(hours=5)
    assert x["peak_prob"].iloc[0] == pytest.approx(0.8)
    assert (w[C.EXPECTED_CUSTOMERS] <= w[C.CUSTOMERS_SERVED]).all()
    assert x[C.EXPECTED_CUSTOMERS].iloc[0] == 50  # 0.6+0.7+0.1+0.1+0.8 = 2.3 x 100 capped at 50
    assert list(w["rank"]) == list(range(1, len(w) + 1))
    assert w[C.EXPECTED_CUSTOMERS].is_monotonic_decreasing
    assert w["drivers"].iloc[0][0]["text_en"] == "daily rain 30 mm"
    assert w["window_id"].is_unique
    again = build_windows(hourly, AREAS, expl, cfg, META)
    assert list(again["window_id"]) == list(w["window_id"])


def test_windows_need_risk_above_the_usual_rate_too():
    hourly, expl = _hourly({"Y": [0.5, 0.5, 0.5]}, clim=0.45)
    cfg = WindowSettings(min_probability=0.2, min_lift=1.5)
    none = build_windows(hourly, AREAS, expl, cfg, META)
    assert none.empty and str(none["start"].dtype) == "datetime64[ns, UTC]"
    from serving.advisories import decide_advisories

    policy = load_settings().advisories
    customers = pd.DataFrame({"customer_id": ["c1"], C.AREA: ["Y"], "segment": ["critical"],
                              "channels": [("sms",)], "language": ["en"],
                              C.TIMEZONE: ["America/New_York"], "synthetic": [True]})
    assert decide_advisories(none, customers, None, policy, pd.Timestamp("2023-06-25", tz="UTC")) == []
    cfg_no_lift = WindowSettings(min_probability=0.2, min_lift=0.0)
    w = build_windows(hourly, AREAS, expl, cfg_no_lift, META)
    assert len(w) == 1 and w["hours"].iloc[0] == 3


def test_panel_labels_mask_unobserved_hours_and_the_future():
    hours = pd.date_range("2023-01-01", periods=6, freq="h", tz="UTC")
    counts = np.array([[0, 2, 0, 1, 0, 0]], dtype=float)
    observed = np.array([True, True, False, True, True, False])
    panel = HourlyPanel(np.array(["A"], dtype=object), hours, counts, counts, observed,
                        hours[4])
    lab = panel.labels[0]
    assert lab[0] == 0 and lab[1] == 1 and lab[3] == 1
    assert np.isnan(lab[2]) and np.isnan(lab[4]) and np.isnan(lab[5])


def test_default_issue_time_leaves_a_whole_horizon_of_history_and_weather():
    from models.scoring import default_issue_time, resolve_issue_time

    end = pd.Timestamp("2024-01-01", tz="UTC")
    weather = pd.DataFrame({C.WX_DATE: pd.date_range("2023-12-01", "2023-12-31", freq="D"),
                            C.WX_TMAX: 5.0, C.WX_TMIN: 0.0, C.WX_PRCP: 1.0, C.WX_SNOW: 0.0})
    weather.loc[weather[C.WX_DATE] > "2023-12-29", list(C.WEATHER_COLUMNS)] = np.nan
    # weather ends with local day 29 Dec (EST): 30 Dec 05:00 UTC; minus 72 h
    assert default_issue_time(end, weather, "America/New_York", 72) == pd.Timestamp(
        "2023-12-27 05:00", tz="UTC")
    hours = pd.date_range("2023-11-01", "2023-12-31 23:00", freq="h", tz="UTC")
    panel = HourlyPanel(np.array(["A"], dtype=object), hours, np.zeros((1, len(hours))),
                        np.zeros((1, len(hours))), np.ones(len(hours), bool), end)
    assert resolve_issue_time("2023-12-01T06:00:00", panel, weather, 72, "UTC") == pd.Timestamp(
        "2023-12-01 06:00", tz="UTC")
    with pytest.raises(ValueError, match="outside the outage history"):
        resolve_issue_time("2023-11-03T00:00:00Z", panel, weather, 72, "UTC")
    with pytest.raises(ValueError, match="on the hour"):
        resolve_issue_time("2023-12-01T06:30:00Z", panel, weather, 72, "UTC")


def test_a_test_period_after_the_history_fails_before_training():
    from features.dataset import Dataset
    from models.experiment import fit_and_evaluate

    hours = pd.date_range(pd.Timestamp("2021-01-01", tz="UTC"), periods=24 * 200, freq="h")
    counts = np.zeros((1, len(hours)))
    counts[0, ::50] = 1
    panel = HourlyPanel(np.array(["A"], dtype=object), hours, counts, counts,
                        np.ones(len(hours), bool), hours[-1] + pd.Timedelta(hours=1))
    areas = pd.DataFrame({C.AREA: ["A"], C.CUSTOMERS_SERVED: [100], C.AREA_LAT: [38.0],
                          C.AREA_LON: [-85.0]})
    wx = pd.DataFrame(index=hours, columns=list(WEATHER), dtype=float)
    data = Dataset(areas, panel, wx, pd.DataFrame())
    cfg = _cfg(test_start="2030-01-01T00:00:00Z", test_end="2031-01-01T00:00:00Z")
    with pytest.raises(ValueError, match=r"test period 2030-01-01\.\.2031-01-01: the outage "
                                         r"history ends 2021-07-20"):
        fit_and_evaluate(data, load_settings(environ={}).features, cfg)
