"""features/telemetry.py on the real ETTh1 file (read as published; any altered copy lives in
memory or tmp_path only, as the CC BY-ND licence requires).

The anomalies asserted here were found by reading the raw file (runs of identical values,
one-hour jumps), not by running the detector: ETTh1 repeats one value for the whole day on
the 31st of most months, has an all-zero load dropout on 5-8 December 2016, a low-voltage load
stuck for 141 hours in July 2017, and oil temperature stuck at exactly 0.000 °C for hours in
January 2018.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import TelemetryAssetSettings, TelemetrySettings, load_settings
from features import columns as C
from features import telemetry as T
from features.contracts import ContractError

ETT_FILE = "ett_transformer/ETTh1.csv"
ZONE = "Asia/Shanghai"
ASSET = TelemetryAssetSettings(asset_id="ett-h1", area_id="21067", timezone=ZONE)
T0 = pd.Timestamp("2017-09-15 00:00", tz="UTC")  # after the oil model's first year


@pytest.fixture(scope="module")
def cfg() -> TelemetrySettings:
    base = load_settings().telemetry
    return base.model_copy(update={"assets": (ASSET,)})


@pytest.fixture(scope="module")
def raw(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / ETT_FILE, parse_dates=["date"])


@pytest.fixture(scope="module")
def long(data_dir: Path) -> pd.DataFrame:
    return T.read_ett(data_dir / ETT_FILE, ASSET)


@pytest.fixture(scope="module")
def run(long, cfg, tmp_path_factory) -> T.TelemetryRun:
    quarantine = tmp_path_factory.mktemp("quarantine")
    return T.build_telemetry(long, cfg, source=ETT_FILE, quarantine_dir=quarantine)


def _utc(local: str) -> pd.Timestamp:
    return pd.Timestamp(local).tz_localize(ZONE).tz_convert("UTC")


def _run_rows(runs: list[tuple[str, int]], hours: int) -> set[pd.Timestamp]:
    """The hours a trailing flat-line rule flags in runs given as (local start, length)."""
    out: set[pd.Timestamp] = set()
    for start, n in runs:
        first = _utc(start)
        out |= {first + pd.Timedelta(hours=i) for i in range(hours - 1, n)}
    return out


def _flagged(run: T.TelemetryRun, signal: str, rule: str) -> set[pd.Timestamp]:
    tab = run.anomalies.table
    return set(tab.loc[(tab[C.TEL_SIGNAL] == signal) & (tab["rule"] == rule), C.TS])


# ------------------------------------------------------------------ reading and units


def test_ett_adapter_reads_the_file_as_published(long, raw):
    assert len(long) == 17420 * 7
    assert set(long[C.TEL_SIGNAL]) == set(T.ETT_SIGNALS.values())
    oil = long[long[C.TEL_SIGNAL] == "oil_temp"].reset_index(drop=True)
    assert (oil[C.TEL_UNIT] == "degC").all()
    assert set(long.loc[long[C.TEL_SIGNAL] != "oil_temp", C.TEL_UNIT]) == {"ett"}
    # local China time (UTC+8, no DST) becomes UTC; values are untouched
    assert oil[C.TS].iloc[0] == pd.Timestamp("2016-06-30 16:00", tz="UTC")
    np.testing.assert_array_equal(oil[C.TEL_VALUE].to_numpy(), raw["OT"].to_numpy())
    hufl = long[long[C.TEL_SIGNAL] == "load_hufl"]
    assert hufl[C.TEL_VALUE].iloc[0] == pytest.approx(5.827000141143799)


def test_real_file_passes_the_row_contract(run):
    assert run.contract.rows_in == 17420 * 7
    assert run.contract.rows_quarantined == 0
    assert run.contract.failures == []


def test_units_are_converted_to_celsius_and_mw(long, cfg):
    oil = long[long[C.TEL_SIGNAL] == "oil_temp"].head(200)
    as_f = oil.assign(**{C.TEL_VALUE: oil[C.TEL_VALUE] * 9 / 5 + 32, C.TEL_UNIT: "degF"})
    as_k = oil.assign(**{C.TEL_VALUE: oil[C.TEL_VALUE] + 273.15, C.TEL_UNIT: "K"})
    load_kw = pd.DataFrame({C.TEL_ASSET: "ett-h1", C.TS: oil[C.TS].to_numpy(),
                            C.TEL_SIGNAL: "load", C.TEL_VALUE: 1500.0, C.TEL_UNIT: "kW"})
    for frame in (as_f, as_k):
        out, result = T.check_telemetry(pd.concat([frame, load_kw]), cfg, source="mem")
        got = out[out[C.TEL_SIGNAL] == "oil_temp"][C.TEL_VALUE].to_numpy()
        np.testing.assert_allclose(got, oil[C.TEL_VALUE].to_numpy(), atol=1e-9)
        assert set(out.loc[out[C.TEL_SIGNAL] == "oil_temp", C.TEL_UNIT]) == {"degC"}
        assert result.rows_quarantined == 0
    loads = out[out[C.TEL_SIGNAL] == "load"]
    assert (loads[C.TEL_VALUE] == 1.5).all() and set(loads[C.TEL_UNIT]) == {"MW"}


def test_unknown_unit_is_quarantined_with_the_rule_named(long, cfg, tmp_path):
    frame = long.head(1000).copy()
    frame.loc[frame.index[:3], C.TEL_UNIT] = "furlongs"
    out, result = T.check_telemetry(frame, cfg, source="mem.csv", quarantine_dir=tmp_path)
    assert len(out) == 997 and result.rows_quarantined == 3
    (failure,) = result.failures
    assert failure["column"] == "signal_unit" and failure["rule"] == "values_in_set"
    assert failure["examples"][0][C.TEL_UNIT] == "furlongs"
    assert len(pd.read_csv(tmp_path / "telemetry.csv")) == 3


def test_oil_temperature_in_kelvin_labelled_celsius_stops_the_run(long, cfg):
    wrong = long.copy()
    oil = wrong[C.TEL_SIGNAL] == "oil_temp"
    wrong.loc[oil, C.TEL_VALUE] = wrong.loc[oil, C.TEL_VALUE] + 273.15  # still says degC
    with pytest.raises(ContractError) as err:
        T.check_telemetry(wrong, cfg, source="ETTh1-in-kelvin")
    message = str(err.value)
    assert "oil_temp_c" in message and "values_between" in message
    assert "wrong unit" in message and "ETTh1-in-kelvin" in message


def test_mixed_units_for_one_signal_stop_the_run(long, cfg):
    frame = long[long[C.TEL_SIGNAL] == "load_hufl"].head(48).copy()
    frame[C.TEL_SIGNAL] = "load"
    frame[C.TEL_UNIT] = ["MW"] * 24 + ["A"] * 24
    with pytest.raises(ContractError, match="cannot be converted"):
        T.check_telemetry(frame, cfg, source="mem")


# ------------------------------------------------------------------ anomalies in the real data


def test_no_gaps_in_the_real_file_and_gaps_found_where_hours_are_missing(run, long, cfg):
    assert run.anomalies.counts()[T.GAP] == 0
    hours = sorted(long[C.TS].unique())
    cut = {hours[1000], hours[1001], hours[5000]}
    holed = long[~long[C.TS].isin(cut)]
    clean, _ = T.check_telemetry(holed, cfg, source="mem")
    found = T.detect_anomalies(T.hourly_wide(clean), cfg)
    gaps = found.table[found.table["rule"] == T.GAP]
    assert set(gaps[C.TS]) == cut
    assert len(gaps) == 3 * 7  # every signal of those hours


HUFL_RUNS = [  # (local start, hours) of identical HUFL values, read off the raw file
    ("2016-07-31 00:00", 24), ("2016-08-31 00:00", 24), ("2016-10-31 00:00", 24),
    ("2016-12-05 09:00", 58), ("2016-12-31 00:00", 24), ("2017-01-31 00:00", 24),
    ("2017-03-31 00:00", 24), ("2017-05-31 00:00", 24), ("2017-07-31 00:00", 24),
    ("2017-08-31 00:00", 24), ("2017-10-30 23:00", 25), ("2017-12-31 00:00", 24),
    ("2018-01-31 00:00", 24), ("2018-03-31 00:00", 24), ("2018-05-31 00:00", 24),
]
OT_RUNS = [
    ("2016-07-31 00:00", 24), ("2016-08-31 00:00", 24), ("2016-10-31 00:00", 24),
    ("2016-12-31 00:00", 24), ("2017-01-31 00:00", 24), ("2017-03-31 00:00", 24),
    ("2017-05-31 00:00", 24), ("2017-07-31 00:00", 24), ("2017-08-31 00:00", 24),
    ("2017-10-31 00:00", 24), ("2017-12-31 00:00", 24),
    ("2018-01-05 00:00", 9), ("2018-01-07 10:00", 6), ("2018-01-24 08:00", 7),  # 0.000 °C
    ("2018-01-26 13:00", 6), ("2018-01-26 21:00", 6), ("2018-01-27 19:00", 6),
    ("2018-01-31 00:00", 24), ("2018-03-31 00:00", 24), ("2018-05-31 00:00", 24),
]


def test_flat_lines_found_exactly_where_the_raw_values_repeat(run, raw, cfg):
    assert cfg.flat_line_h == 6
    assert _flagged(run, "load_hufl", T.FLAT_LINE) == _run_rows(HUFL_RUNS, 6)
    assert _flagged(run, "oil_temp", T.FLAT_LINE) == _run_rows(OT_RUNS, 6)
    # the runs are real: e.g. OT reads exactly 0.000 for 9 hours on 5 January 2018
    day = raw.set_index("date").loc["2018-01-05 00:00":"2018-01-05 08:00", "OT"]
    assert len(day) == 9 and (day == 0).all()
    # the 141-hour stuck low-voltage load in July 2017 (LUFL 8.285, LULL 0.000)
    stuck = _run_rows([("2017-07-23 21:00", 141)], 6)
    assert stuck <= _flagged(run, "load_lufl", T.FLAT_LINE)
    assert stuck <= _flagged(run, "load_lull", T.FLAT_LINE)


def test_spikes_found_where_the_raw_data_jump(run, raw, cfg):
    assert cfg.spike_k == 12
    series = raw.set_index("date")
    # OT falls from 11.6 to 2.3 °C within two hours on 15 March 2018: oil cannot cool so fast
    assert _flagged(run, "oil_temp", T.SPIKE) == {_utc("2018-03-15 20:00")}
    assert series.loc["2018-03-15 18:00", "OT"] - series.loc["2018-03-15 20:00", "OT"] > 9
    # MULL jumps from 1.07 to 4.90 at noon on 13 May 2017
    assert _flagged(run, "load_mull", T.SPIKE) == {_utc("2017-05-13 12:00")}
    assert series.loc["2017-05-13 12:00", "MULL"] - series.loc["2017-05-13 11:00", "MULL"] > 3.5
    # a one-hour LULL spike: 1.71 -> 3.05 -> 1.77 on 8 July 2016
    assert _utc("2016-07-08 23:00") in _flagged(run, "load_lull", T.SPIKE)
    assert series.loc["2016-07-08 23:00", "LULL"] == pytest.approx(3.046)
    # nothing is flagged twice: spikes are looked for after flat-lines are masked
    tab = run.anomalies.table
    assert not tab.duplicated([C.TEL_SIGNAL, C.TS]).any()


def test_flagged_values_are_masked_reported_and_quarantined_not_dropped(run, long):
    masked = run.anomalies.masked["ett-h1"]
    hit = _utc("2018-01-05 08:00")
    assert np.isnan(masked.loc[hit, "oil_temp"])
    assert masked.loc[hit, "load_hufl"] == pytest.approx(
        long[(long[C.TEL_SIGNAL] == "load_hufl") & (long[C.TS] == hit)][C.TEL_VALUE].item())
    assert len(masked) == 17420  # every hour kept
    entry = next(e for e in run.summary["anomalies"]["by_signal"]
                 if e["signal"] == "oil_temp" and e["rule"] == T.FLAT_LINE)
    assert entry["file"] == ETT_FILE and entry["n"] == len(_run_rows(OT_RUNS, 6))
    assert entry["examples"][0] == {"ts": _utc("2016-07-31 05:00").isoformat(),
                                    "value": pytest.approx(38.269, abs=1e-3)}
    counts = run.anomalies.counts()
    assert sum(counts.values()) == len(run.anomalies.table)


def test_anomaly_file_lists_every_flag(run, tmp_path, long, cfg):
    clean, _ = T.check_telemetry(long, cfg, source="mem")
    found = T.detect_anomalies(T.hourly_wide(clean), cfg, source="ETTh1.csv",
                               quarantine_dir=tmp_path)
    written = pd.read_csv(tmp_path / "telemetry_anomalies.csv")
    assert len(written) == len(run.anomalies.table) == len(found.table)
    assert set(written["file"]) == {"ETTh1.csv"}
    assert set(written["rule"]) == {T.FLAT_LINE, T.SPIKE}


def test_too_many_flagged_values_stop_the_run(long, cfg):
    stuck = long.copy()
    oil = stuck[C.TEL_SIGNAL] == "oil_temp"
    stuck.loc[oil, C.TEL_VALUE] = 20.0
    clean, _ = T.check_telemetry(stuck, cfg, source="mem")
    with pytest.raises(ContractError, match="oil_temp"):
        T.detect_anomalies(T.hourly_wide(clean), cfg, source="stuck.csv")


# ------------------------------------------------------------------ features


def test_relative_loading_and_high_load_hours_by_hand(run, cfg):
    feats = run.per_asset["ett-h1"]
    masked = run.anomalies.masked["ett-h1"]
    load = np.hypot(masked["load_hufl"], masked["load_hull"])
    t = T0
    past = load[(load.index < t) & (load.index >= t - pd.Timedelta(hours=cfg.normal_window_h))]
    assert feats.loc[t, C.TEL_LOAD_REL] == pytest.approx(load[t] / past.median())
    mark = past.quantile(cfg.load_quantile)
    assert feats.loc[t, C.TEL_LOAD_ROC] == pytest.approx(
        feats.loc[t, C.TEL_LOAD_REL] - feats.loc[t - pd.Timedelta(hours=1), C.TEL_LOAD_REL])
    assert feats.loc[t, C.TEL_OIL_ROC] == pytest.approx(
        masked.loc[t, "oil_temp"] - masked.loc[t - pd.Timedelta(hours=1), "oil_temp"])
    assert 0 <= feats.loc[t, C.TEL_HOURS_HIGH] <= 24
    assert load[t] > mark or feats.loc[t, C.TEL_HOURS_HIGH] < 24
    # missing share: the all-zero dropout of December 2016 is not missing (zeros are values),
    # but the flat-lined hours are
    assert feats.loc[_utc("2016-12-07 18:00"), C.TEL_MISSING] > 0.5
    assert feats.loc[T0, C.TEL_MISSING] == 0.0


def _features(long: pd.DataFrame, cfg: TelemetrySettings) -> pd.DataFrame:
    return T.build_telemetry(long, cfg, source="mem").per_asset["ett-h1"]


def test_features_at_t_use_nothing_after_t(long, cfg, run):
    before = run.per_asset["ett-h1"]
    rng = np.random.default_rng(5)
    future = long[C.TS] > T0
    rewritten = long.copy()
    rewritten.loc[future, C.TEL_VALUE] = rng.normal(50, 30, int(future.sum()))
    rewritten = rewritten.drop(rewritten.index[future][::7])  # and holes after t0
    after = _features(rewritten, cfg)
    upto = before.index <= T0
    pd.testing.assert_frame_equal(after.loc[before.index[upto]], before.loc[upto])
    assert not after.loc[after.index > T0].equals(before.loc[before.index > T0])

    # and a change before t0 is seen at t0
    earlier = long.copy()
    hit = (earlier[C.TS] == T0 - pd.Timedelta(hours=1)) & (earlier[C.TEL_SIGNAL] == "oil_temp")
    earlier.loc[hit, C.TEL_VALUE] += 5.0
    moved = _features(earlier, cfg)
    assert moved.loc[T0, C.TEL_OIL_ROC] == pytest.approx(before.loc[T0, C.TEL_OIL_ROC] - 5.0)


def test_oil_model_learns_on_the_past_only_and_is_reused(run, long, cfg, tmp_path):
    model = run.oil_model
    fit = model.fits["ett-h1"]
    first = long[C.TS].min()
    assert fit.fit_end == first + pd.Timedelta(hours=cfg.oil_fit_hours)
    excess = run.per_asset["ett-h1"][C.TEL_OIL_EXCESS]
    assert excess[excess.index < fit.fit_end].isna().all()  # no in-sample residuals
    assert excess[excess.index >= fit.fit_end].notna().mean() > 0.9

    # rewriting everything from the end of the fit window on leaves the model unchanged
    later = long.copy()
    after = later[C.TS] >= fit.fit_end
    later.loc[after & (later[C.TEL_SIGNAL] == "oil_temp"), C.TEL_VALUE] += 10.0
    refit = T.build_telemetry(later, cfg, source="mem").oil_model.fits["ett-h1"]
    np.testing.assert_allclose(refit.coef, fit.coef)
    assert refit.intercept == pytest.approx(fit.intercept)
    # ...while a change inside the window changes it
    inside = long.copy()
    window = (inside[C.TS] < fit.fit_end) & (inside[C.TEL_SIGNAL] == "oil_temp")
    inside.loc[window, C.TEL_VALUE] *= 1.1
    changed = T.build_telemetry(inside, cfg, source="mem").oil_model.fits["ett-h1"]
    assert changed.intercept != pytest.approx(fit.intercept)

    # the saved object gives the same residuals when scoring
    path = model.save(tmp_path / "oil.pkl")
    again = T.OilTemperatureModel.load(path)
    masked = run.anomalies.masked["ett-h1"]
    pd.testing.assert_series_equal(again.excess("ett-h1", masked), excess, check_names=False)
    # the model explains most of the variance in its window (sanity of the fit)
    assert fit.rmse_c < np.nanstd(masked["oil_temp"][masked.index < fit.fit_end])


def test_area_without_telemetry_gets_nan_and_nothing_breaks(run):
    hours = pd.date_range(T0 - pd.Timedelta(hours=2), T0, freq="h", tz="UTC", name=C.TS)
    panel = pd.DataFrame({C.AREA: np.repeat(["21067", "21111"], len(hours)),
                          C.TS: np.tile(hours, 2)})
    joined = T.join_telemetry(panel, run.area)
    assert len(joined) == len(panel)
    with_tel = joined[joined[C.AREA] == "21067"]
    without = joined[joined[C.AREA] == "21111"]
    assert with_tel[C.TEL_LOAD_REL].notna().all()
    assert with_tel[C.TEL_LOAD_REL].iloc[-1] == pytest.approx(
        run.per_asset["ett-h1"].loc[T0, C.TEL_LOAD_REL])
    assert without[list(C.TEL_FEATURES)].isna().all().all()
    # no telemetry at all: the columns still exist, all NaN
    empty = T.area_features({}, ())
    joined = T.join_telemetry(panel, empty)
    assert set(C.TEL_FEATURES) <= set(joined.columns)
    assert joined[list(C.TEL_FEATURES)].isna().all().all()


def test_summary_for_the_run_manifest(run):
    s = run.summary
    assert s["assets"] == [{"asset_id": "ett-h1", "area_id": "21067", "hours": 17420,
                            "first": "2016-06-30T16:00:00+00:00",
                            "last": "2018-06-26T11:00:00+00:00"}]
    assert s["anomalies"]["counts"][T.FLAT_LINE] == len(run.anomalies.table[
        run.anomalies.table["rule"] == T.FLAT_LINE])
    rng = s["feature_ranges"][C.TEL_LOAD_REL]
    assert 0 <= rng["min"] < 1 < rng["max"] and 0.9 < rng["median"] < 1.1
    assert s["oil_model"]["ett-h1"]["rows"] > 8000


def test_nightly_pass_saves_then_reuses_the_oil_model(cfg, data_dir, tmp_path):
    small = cfg.model_copy(update={"file": str(data_dir / ETT_FILE)})
    path = tmp_path / "oil_model.pkl"
    first = T.run_telemetry(small, data_dir, tmp_path / "q", path)
    assert path.is_file() and first.summary["oil_model_reused"] is False
    second = T.run_telemetry(small, data_dir, tmp_path / "q", path)
    assert second.summary["oil_model_reused"] is True
    pd.testing.assert_frame_equal(first.area, second.area)


def test_nightly_task_summarises_the_configured_transformer(tmp_path):
    import json

    from flows.nightly import telemetry_summary

    profile = Path(__file__).resolve().parents[1] / "configs" / "kentucky.yaml"
    cfg = load_settings(profile, overrides={"paths": {"home": str(tmp_path)}})
    summary = telemetry_summary.fn(cfg)
    assert summary["stand_in"] is True and summary["model_input"] is False
    assert summary["assets"][0]["area_id"] == "21067"  # Fayette County, a stand-in
    assert summary["anomalies"]["counts"][T.GAP] == 0
    assert summary["anomalies"]["counts"][T.FLAT_LINE] > 0
    assert (tmp_path / "telemetry" / "oil_model.pkl").is_file()
    assert json.loads(json.dumps(summary)) == summary  # goes into run.json as it is
    off = cfg.model_copy(update={"telemetry": cfg.telemetry.model_copy(update={"enabled": False})})
    assert telemetry_summary.fn(off) == {"enabled": False}
