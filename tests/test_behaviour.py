"""Behavioural tests of the risk model trained on a real slice of the Kentucky data: more rain,
snow or freezing precipitation never lowers risk with everything else equal; area ids are
labels, not information; the 2 July 2023 storm day ranks above a calm day."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import columns as C

REPO = Path(__file__).resolve().parents[1]
AREAS = ["21111", "21067", "21185", "21013"]  # Jefferson, Fayette, Oldham, Bell
STORM_EVE = pd.Timestamp("2023-07-01T00:00:00Z")  # 45,828 customers out on 2 July 2023
CALM_EVE = pd.Timestamp("2023-07-21T00:00:00Z")  # 22 July: dry, 42 customers out at most
TZ = "America/New_York"
MONOTONE = ("wx_prcp_mm", "wx_prcp_prev3d_mm", "wx_heavy_rain", "wx_snow_mm", "wx_heavy_snow",
            "wx_freezing_precip")


@pytest.fixture(scope="module")
def real(real_history, data_dir, tmp_path_factory):
    """The real flow's loaders (their functions, no Prefect API) on four counties; a model
    trained from mid-2021 through 2022 and its test rows of June-July 2023."""
    from conftest import four_county_data

    from models.experiment import fit_and_predict

    cfg, data = four_county_data(data_dir, real_history, tmp_path_factory.mktemp("home"),
                                 AREAS, num_boost_round=80)
    model, rows, _ = fit_and_predict(data, cfg.features, cfg.model)
    return cfg, data, model, rows


def test_monotone_constraints_are_set_on_the_weather_that_can_only_add_risk(real):
    _, _, model, _ = real
    assert set(model.info["monotone_features"]) == set(MONOTONE)
    params = model.pooled.params
    assert params["monotone_constraints_method"] == "intermediate"
    wanted = [1 if f in MONOTONE else 0 for f in model.feature_names]
    assert [int(v) for v in params["monotone_constraints"]] == wanted


@pytest.mark.parametrize("feature,change", [
    ("wx_prcp_mm", lambda v: v + 25.0),
    ("wx_prcp_prev3d_mm", lambda v: v * 2 + 10.0),
    ("wx_heavy_rain", lambda v: np.ones_like(v)),
    ("wx_snow_mm", lambda v: v + 50.0),
    ("wx_freezing_precip", lambda v: np.ones_like(v)),
])
def test_more_rain_snow_or_freezing_precipitation_never_lowers_risk(real, feature, change):
    _, _, model, rows = real
    rows = rows[rows[feature].notna()]  # LightGBM's constraints order values, not missing ones
    assert len(rows) > 1000
    more = rows.copy()
    more[feature] = change(rows[feature].to_numpy("float64"))
    base, after = model.predict(rows), model.predict(more)
    assert (after >= base - 1e-12).all()
    # and the change matters somewhere: the constraint is not a model that ignores weather
    if feature in ("wx_prcp_mm", "wx_prcp_prev3d_mm"):
        assert (after > base + 1e-6).mean() > 0.05


def test_area_ids_are_labels_not_information(real):
    """Renaming every area (keeping their order) gives the same model and the same risk; and
    the risk of a row does not depend on which other rows are scored with it."""
    from models.experiment import fit_and_predict

    cfg, data, model, rows = real
    rename = {a: f"area-{i:02d}" for i, a in enumerate(sorted(data.areas[C.AREA]))}
    panel = replace(data.panel, area_ids=np.array([rename[a] for a in data.panel.area_ids],
                                                  dtype=object))
    areas = data.areas.assign(**{C.AREA: data.areas[C.AREA].map(rename)})
    renamed = replace(data, panel=panel, areas=areas)
    again_model, again_rows, _ = fit_and_predict(renamed, cfg.features, cfg.model)
    assert again_rows[C.AREA].map({v: k for k, v in rename.items()}).tolist() == \
        rows[C.AREA].tolist()
    np.testing.assert_array_equal(again_rows[C.PROB].to_numpy(), rows[C.PROB].to_numpy())
    assert sorted(rename[a] for a in model.per_area) == sorted(again_model.per_area)
    shuffled = rows.sample(frac=1.0, random_state=3)
    np.testing.assert_array_equal(model.predict(shuffled),
                                  pd.Series(model.predict(rows), rows.index)[shuffled.index])


def test_the_2_july_2023_storm_day_ranks_above_a_calm_day(real):
    from models.scoring import score_horizon

    cfg, data, model, _ = real

    def day_risk(eve: pd.Timestamp) -> pd.Series:
        """Expected area-hours with an outage start on the local day after the eve, by area,
        from a forecast issued on the eve (24-48 h ahead)."""
        hourly, _ = score_horizon(model, data.panel, data.areas, data.weather_hourly, eve,
                                  cfg.features)
        day = hourly[C.TS].dt.tz_convert(TZ).dt.date == (eve + pd.Timedelta(days=1)).date()
        return hourly[day].groupby(C.AREA)[C.PROB].sum()

    storm, calm = day_risk(STORM_EVE), day_risk(CALM_EVE)
    assert storm.sum() > 1.15 * calm.sum()
    assert (storm > calm).all()


def test_a_model_pickled_before_calibration_existed_still_scores(real):
    """Champions saved by v0.1 (no calibrator, no rejected per-area models, no area rule)
    load with those fields' defaults and score as raw boosters."""
    _, _, model, rows = real
    state = dict(model.__dict__)
    for name in ("calibrator", "rejected", "candidates", "area_mode"):
        state.pop(name)
    old = object.__new__(type(model))
    old.__setstate__(state)
    loaded = pickle.loads(pickle.dumps(old))
    np.testing.assert_allclose(loaded.predict(rows.head(500)),
                               model.predict_raw(rows.head(500), "hybrid"))
