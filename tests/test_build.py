"""Feature rows: leads, the no-future rule, weather alignment and climatology."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.settings import FeatureSettings
from features import columns as C
from features.build import (
    Climatology,
    feature_names,
    make_rows,
    sample_labelled_rows,
    scoring_rows,
    weather_by_hour,
)
from features.labels import HourlyPanel

FEAT = FeatureSettings()
START = pd.Timestamp("2022-01-01", tz="UTC")


def _panel(n_areas: int = 3, days: int = 60, extra: int = 72, seed: int = 0) -> HourlyPanel:
    rng = np.random.default_rng(seed)
    hours = pd.date_range(START, periods=days * 24 + extra, freq="h")
    counts = (rng.random((n_areas, len(hours))) < 0.05).astype(float)
    counts[:, days * 24:] = 0
    observed = np.ones(len(hours), dtype=bool)
    observed[days * 24:] = False
    return HourlyPanel(np.array([f"A{i}" for i in range(n_areas)], dtype=object), hours, counts,
                       counts * 7, observed, START + pd.Timedelta(days=days))


def _areas(panel: HourlyPanel) -> pd.DataFrame:
    return pd.DataFrame({C.AREA: panel.area_ids, C.CUSTOMERS_SERVED: [1000, 5000, 200],
                         C.AREA_LAT: [38.0, 37.5, 37.0], C.AREA_LON: [-85.0, -84.0, -83.0]})


def _daily(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.date_range("2021-12-25", "2022-03-15", freq="D")
    return pd.DataFrame({C.WX_DATE: days, C.WX_TMAX: rng.normal(10, 8, len(days)),
                         C.WX_TMIN: rng.normal(0, 6, len(days)),
                         C.WX_PRCP: rng.gamma(0.5, 8, len(days)),
                         C.WX_SNOW: np.where(rng.random(len(days)) < 0.1, 30.0, 0.0)})


def _rows(panel, daily, clim, a, t, lead):
    wx = weather_by_hour(daily, panel.hours, "America/New_York", FEAT)
    return make_rows(panel, _areas(panel), wx, clim, a, t, lead, FEAT)


def test_history_features_count_only_outages_before_issue_time():
    panel = _panel()
    clim = Climatology.fit(panel, end=panel.history_end)
    t = 30 * 24 + 5
    rows = _rows(panel, _daily(), clim, np.array([1]), np.array([t]), np.array([10]))
    issue = t - 9
    assert rows[C.ISSUE_TS].iloc[0] == panel.hours[issue]
    assert rows["hist_n_24h"].iloc[0] == panel.counts[1, issue - 24:issue].sum()
    assert rows["hist_n_720h"].iloc[0] == panel.counts[1, max(issue - 720, 0):issue].sum()
    assert rows["hist_terr_n_72h"].iloc[0] == panel.counts[:, issue - 72:issue].sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_feature_sees_after_its_issue_time(seed):
    """Rewrite every outage and observation from the issue time on, and all weather after the
    target's local day: no feature of the row may change. Then change one hour before the
    issue time and check that the test would have noticed."""
    rng = np.random.default_rng(seed)
    panel = _panel(seed=seed)
    daily = _daily(seed)
    clim = Climatology.fit(panel, end=panel.history_end)
    a = rng.integers(0, 3, 40)
    lead = rng.integers(1, 73, 40)
    t = rng.integers(40 * 24, 60 * 24, 40)
    names = feature_names(FEAT)
    before = _rows(panel, daily, clim, a, t, lead)
    for i in range(len(a)):
        issue = t[i] - (lead[i] - 1)
        counts = panel.counts.copy()
        counts[:, issue:] = rng.integers(0, 5, counts[:, issue:].shape)
        observed = panel.observed.copy()
        observed[issue:] = rng.random(len(observed) - issue) < 0.5
        future = HourlyPanel(panel.area_ids, panel.hours, counts, counts * 3, observed,
                             panel.history_end)
        target_day = panel.hours[t[i]].tz_convert("America/New_York").tz_localize(None).normalize()
        wx = daily.copy()
        later = wx[C.WX_DATE] > target_day
        wx.loc[later, list(C.WEATHER_COLUMNS)] = rng.normal(50, 30, (later.sum(), 4))
        after = _rows(future, wx, clim, a[i:i + 1], t[i:i + 1], lead[i:i + 1])
        pd.testing.assert_series_equal(before.loc[i, names], after.loc[0, names],
                                       check_names=False)
    # the same check notices a change one hour before the issue time
    issue = t[0] - (lead[0] - 1)
    counts = panel.counts.copy()
    counts[a[0], issue - 1] += 3
    past = HourlyPanel(panel.area_ids, panel.hours, counts, counts, panel.observed,
                       panel.history_end)
    changed = _rows(past, daily, clim, a[:1], t[:1], lead[:1])
    assert changed["hist_n_24h"].iloc[0] == before["hist_n_24h"].iloc[0] + 3


def test_weather_hour_takes_its_local_day():
    daily = _daily()
    hours = pd.DatetimeIndex([pd.Timestamp("2022-01-10 04:00", tz="UTC"),  # 23:00 EST Jan 9
                              pd.Timestamp("2022-01-10 05:00", tz="UTC")])  # 00:00 EST Jan 10
    wx = weather_by_hour(daily, hours, "America/New_York", FEAT)
    by_day = daily.set_index(C.WX_DATE)
    assert wx["wx_prcp_mm"].iloc[0] == pytest.approx(by_day.loc["2022-01-09", C.WX_PRCP])
    assert wx["wx_prcp_mm"].iloc[1] == pytest.approx(by_day.loc["2022-01-10", C.WX_PRCP])
    prev3 = by_day.loc["2022-01-07":"2022-01-09", C.WX_PRCP].sum()
    assert wx["wx_prcp_prev3d_mm"].iloc[1] == pytest.approx(prev3)


def test_weather_flags_follow_thresholds_and_stay_missing_when_unknown():
    days = pd.date_range("2022-02-01", periods=3, freq="D")
    daily = pd.DataFrame({C.WX_DATE: days, C.WX_TMAX: [2.0, 35.0, np.nan],
                          C.WX_TMIN: [-3.0, 20.0, 1.0], C.WX_PRCP: [30.0, 0.0, np.nan],
                          C.WX_SNOW: [0.0, 0.0, 0.0]})
    hours = pd.DatetimeIndex([d.tz_localize("America/New_York").tz_convert("UTC")
                              + pd.Timedelta(hours=12) for d in days])
    wx = weather_by_hour(daily, hours, "America/New_York", FEAT)
    assert wx["wx_heavy_rain"].tolist()[:2] == [1.0, 0.0]
    assert wx["wx_freezing_precip"].tolist()[:2] == [1.0, 0.0]
    assert wx["wx_hot"].tolist()[:2] == [0.0, 1.0]
    assert np.isnan(wx["wx_heavy_rain"].iloc[2]) and np.isnan(wx["wx_hot"].iloc[2])


def test_training_rows_skip_unobserved_hours_and_draw_all_leads():
    panel = _panel(days=40, extra=0)
    observed = panel.observed.copy()
    observed[100:200] = False
    masked = HourlyPanel(panel.area_ids, panel.hours, panel.counts, panel.customers, observed,
                         panel.history_end)
    a, t, lead = sample_labelled_rows(masked, panel.hours[0], panel.history_end, 72, seed=3)
    assert not np.isin(t, np.arange(100, 200)).any()
    assert lead.min() == 1 and lead.max() == 72
    assert (t - (lead - 1) >= 0).all()
    assert len(a) == len(t) == len(lead)
    again = sample_labelled_rows(masked, panel.hours[0], panel.history_end, 72, seed=3)
    assert np.array_equal(again[2], lead)


def test_scoring_rows_cover_every_area_and_hour_of_the_horizon():
    panel = _panel()
    as_of = panel.hours[50 * 24]
    a, t, lead = scoring_rows(panel, as_of, 72)
    assert len(a) == 3 * 72
    assert set(lead) == set(range(1, 73))
    assert panel.hours[t.min()] == as_of
    assert panel.hours[t.max()] == as_of + pd.Timedelta(hours=71)


def test_climatology_is_learned_before_its_end_only():
    panel = _panel(days=60, extra=0)
    counts = panel.counts.copy()
    counts[0, 30 * 24:] = 1.0  # area A0 always out after day 30
    p2 = HourlyPanel(panel.area_ids, panel.hours, counts, counts, panel.observed,
                     panel.history_end)
    end = panel.hours[30 * 24]
    clim_before = Climatology.fit(panel, end=end)
    clim_changed_future = Climatology.fit(p2, end=end)
    pd.testing.assert_frame_equal(clim_before.table, clim_changed_future.table)
    clim_all = Climatology.fit(p2, end=panel.history_end)
    assert clim_all.area_rate["A0"] > clim_before.area_rate["A0"] + 0.3
    rates = clim_before.rates(np.array(["A1", "unknown"], dtype=object),
                              pd.DatetimeIndex([START, START]))
    assert 0 < rates[0] < 1
    assert rates[1] == pytest.approx(clim_before.global_rate)


def _events(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = START + pd.to_timedelta(rng.uniform(0, 50 * 24, n), unit="h")
    end = start + pd.to_timedelta(rng.exponential(6, n), unit="h")
    return pd.DataFrame({
        C.AREA: rng.choice(["A0", "A1", "A2"], n), C.EV_START: start, C.EV_END: end,
        C.EV_PLANNED: False, C.EV_DUPLICATE_OF: None,
        C.EV_N_OUTAGES: 1, C.EV_CUSTOMERS: rng.integers(4, 400, n)})


def test_map_state_at_issue_time_ignores_what_happens_after_it():
    """Outages open at t0 (started before, restored after) are known at t0. Adding outages
    that start later, or moving restorations that happen after t0, must change nothing."""
    from features.labels import build_panel

    rng = np.random.default_rng(5)
    ev = _events(3000, seed=5)
    hours = pd.date_range(START, periods=50 * 24, freq="h")
    observed = pd.Series(True, index=hours)
    areas = np.array(["A0", "A1", "A2"], dtype=object)
    panel = build_panel(ev, areas, observed, extra_hours=72)
    clim = Climatology.fit(panel, end=panel.history_end)
    t0_idx = 30 * 24
    t0 = panel.hours[t0_idx]
    a, t, lead = np.array([0, 1, 2]), np.array([t0_idx + 5] * 3), np.array([6, 6, 6])
    names = feature_names(FEAT)
    before = _rows(panel, _daily(), clim, a, t, lead)
    later = ev[C.EV_END] > t0
    moved = ev.copy()
    moved.loc[later, C.EV_END] = t0 + pd.to_timedelta(rng.uniform(0.1, 200, later.sum()), "h")
    extra = _events(500, seed=9)
    extra = extra[extra[C.EV_START] >= t0]
    future = build_panel(pd.concat([moved, extra], ignore_index=True), areas, observed,
                         extra_hours=72)
    after = _rows(future, _daily(), clim, a, t, lead)
    pd.testing.assert_frame_equal(before[names], after[names])
    opened = ((ev[C.EV_START] < t0) & (ev[C.EV_END] > t0) & (ev[C.AREA] == "A1")).sum()
    assert before["hist_open_now"].iloc[1] == opened > 0
    assert before["hist_terr_customers_out"].iloc[0] == ev.loc[
        (ev[C.EV_START] < t0) & (ev[C.EV_END] > t0), C.EV_CUSTOMERS].sum()
    # restoring one of them before t0 is noticed
    closing = ev.index[(ev[C.EV_START] < t0) & (ev[C.EV_END] > t0) & (ev[C.AREA] == "A1")][0]
    early = ev.copy()
    early.loc[closing, C.EV_END] = t0 - pd.Timedelta(minutes=1)
    if early.loc[closing, C.EV_START] >= early.loc[closing, C.EV_END]:
        early.loc[closing, C.EV_START] = early.loc[closing, C.EV_END] - pd.Timedelta(minutes=5)
    changed = _rows(build_panel(early, areas, observed, extra_hours=72), _daily(), clim, a, t, lead)
    assert changed["hist_open_now"].iloc[1] == opened - 1
