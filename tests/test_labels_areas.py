"""Areas (county and cell) and the hourly panel of labels: unit tests on tiny generic-schema
frames, plus the real county GeoJSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import AreaSettings, CustomerSettings
from features import columns as C
from features.areas import assign_areas, build_areas, cell_id, read_counties
from features.labels import build_panel, to_long

COUNTIES_FILE = Path("reference_geo") / "geojson-counties-fips.json"
T0 = pd.Timestamp("2023-03-03T00:00:00Z")


def _events(rows: list[dict]) -> pd.DataFrame:
    """Generic-schema events; each row gives start (hours after T0 or a timestamp) and overrides."""
    out = []
    for i, r in enumerate(rows):
        start = r.get("start", 0.0)
        start = T0 + pd.Timedelta(hours=start) if isinstance(start, float | int) else start
        out.append({
            C.EV_ID: f"lgeku:{i}", C.EV_SOURCE_ID: str(i), C.EV_START: pd.Timestamp(start),
            C.EV_END: pd.Timestamp(start) + pd.Timedelta(hours=2),
            C.EV_LAT: r.get("lat", 38.04), C.EV_LON: r.get("lon", -84.46),
            C.EV_COUNTY: r.get("county", "21067"), C.EV_CUSTOMERS: r.get("customers", 4),
            C.EV_CUSTOMERS_FLOOR: r.get("customers", 4) <= 4, C.EV_CAUSE: "Weather-related",
            C.EV_PLANNED: r.get("planned", False), C.EV_CLUSTER: r.get("n", 1) > 1,
            C.EV_N_OUTAGES: r.get("n", 1), C.EV_DUPLICATE_OF: r.get("dup"),
            C.AREA: r.get("area", "A"),
        })
    frame = pd.DataFrame(out)
    frame[C.EV_START] = pd.to_datetime(frame[C.EV_START], utc=True)
    frame[C.EV_COUNTY] = frame[C.EV_COUNTY].astype("string")
    frame[C.AREA] = frame[C.AREA].astype("string")
    return frame


def _observed(hours: int, blind: tuple[int, ...] = ()) -> pd.Series:
    idx = pd.date_range(T0, periods=hours, freq="h", name=C.TS)
    obs = pd.Series(True, index=idx)
    obs.iloc[list(blind)] = False
    return obs


# --- the hourly panel ---------------------------------------------------------------------------


@pytest.fixture()
def panel_events() -> pd.DataFrame:
    return _events([
        {"start": 0.1, "customers": 10},                      # A, hour 0
        {"start": 0.9, "customers": 4},                       # A, hour 0 again
        {"start": 1.0, "planned": True, "customers": 500},    # planned: never counted
        {"start": 2.0, "dup": "lgeku:0", "customers": 99},    # re-issue: never counted
        {"start": pd.Timestamp("2023-03-03T02:59:59Z"), "area": "B", "n": 3, "customers": 30},
        {"start": pd.Timestamp("2023-03-02T21:30:00-05:00"), "area": "B"},  # = 02:30 UTC
        {"start": 3.5, "customers": 7},                       # unobserved hour 3
        {"start": 4.2, "area": "Z"},                          # area not in the panel
        {"start": -0.5},                                      # before the history
        {"start": 6.5},                                       # after the history (scoring hours)
    ])


def test_panel_counts_unplanned_first_records_in_their_utc_hour(panel_events) -> None:
    panel = build_panel(panel_events, np.array(["A", "B"]), _observed(6, blind=(3,)),
                        extra_hours=2)
    assert len(panel.hours) == 8 and panel.hours[0] == T0
    assert panel.history_end == T0 + pd.Timedelta(hours=6)
    np.testing.assert_array_equal(panel.counts, [
        [2, 0, 0, 1, 0, 0, 0, 0],
        [0, 0, 4, 0, 0, 0, 0, 0],   # a 3-outage cluster and a single outage, both hour 2 UTC
    ])
    np.testing.assert_array_equal(panel.customers, [
        [14, 0, 0, 7, 0, 0, 0, 0],
        [0, 0, 34, 0, 0, 0, 0, 0],
    ])
    np.testing.assert_array_equal(panel.observed, [1, 1, 1, 0, 1, 1, 0, 0])


def test_labels_are_nan_where_unobserved_and_after_the_history(panel_events) -> None:
    panel = build_panel(panel_events, np.array(["A", "B"]), _observed(6, blind=(3,)),
                        extra_hours=2)
    nan = np.nan
    np.testing.assert_array_equal(panel.labels, [
        [1, 0, 0, nan, 0, 0, nan, nan],
        [0, 0, 1, nan, 0, 0, nan, nan],
    ])
    assert list(panel.hour_index(pd.Timestamp("2023-03-03T05:00Z"))) == [5]
    with pytest.raises(ValueError, match="outside the panel"):
        panel.hour_index(pd.Timestamp("2023-03-04T00:00Z"))


def test_panel_does_not_change_its_inputs(panel_events) -> None:
    before = panel_events.copy()
    obs = _observed(6, blind=(3,))
    build_panel(panel_events, np.array(["A", "B"]), obs)
    pd.testing.assert_frame_equal(panel_events, before)
    assert int(obs.sum()) == 5


def test_to_long_round_trips_to_the_panel(panel_events) -> None:
    panel = build_panel(panel_events, np.array(["A", "B"]), _observed(6, blind=(3,)),
                        extra_hours=2)
    long = to_long(panel)
    assert len(long) == 2 * 8
    assert list(long.columns[:4]) == [C.AREA, C.TS, C.LABEL, C.OBSERVED]
    assert not long.duplicated([C.AREA, C.TS]).any()
    for column, array in (("n_outages", panel.counts), ("customers_out", panel.customers),
                          (C.LABEL, panel.labels)):
        wide = long.pivot(index=C.AREA, columns=C.TS, values=column)
        assert list(wide.index) == ["A", "B"] and list(wide.columns) == list(panel.hours)
        np.testing.assert_array_equal(wide.to_numpy(), array)
    per_hour = long.drop_duplicates(C.TS).set_index(C.TS)[C.OBSERVED]
    np.testing.assert_array_equal(per_hour.to_numpy(), panel.observed)
    row = long[(long[C.AREA] == "B") & (long[C.TS] == T0 + pd.Timedelta(hours=2))].iloc[0]
    assert (row[C.LABEL], row["n_outages"], row["customers_out"]) == (1.0, 4.0, 34.0)


# --- areas --------------------------------------------------------------------------------------


def test_cell_ids_are_stable_and_floor_negative_longitudes() -> None:
    lat = pd.Series([38.04, 38.10, 38.0, 37.99])
    lon = pd.Series([-84.46, -84.30, -84.25, -84.46])
    ids = cell_id(lat, lon, 0.25)
    # -84.46 / 0.25 = -337.84 -> -338; 38.0 lies on a boundary and belongs to the cell above it
    assert list(ids) == ["cell:0.25:152:-338", "cell:0.25:152:-338", "cell:0.25:152:-337",
                         "cell:0.25:151:-338"]
    assert list(cell_id(lat, lon, 0.25)) == list(ids)
    assert cell_id(lat[:1], lon[:1], 0.1).iloc[0] == "cell:0.1:380:-845"


def test_assign_areas_for_county_and_cell_kinds() -> None:
    ev = _events([{"county": "21067", "lat": 38.04, "lon": -84.46},
                  {"county": "21111", "lat": 38.25, "lon": -85.76}]).drop(columns=[C.AREA])
    by_county = assign_areas(ev, AreaSettings(kind="county"))
    by_cell = assign_areas(ev, AreaSettings(kind="cell", cell_size_deg=0.5))
    assert list(by_county[C.AREA]) == ["21067", "21111"]
    assert list(by_cell[C.AREA]) == ["cell:0.5:76:-169", "cell:0.5:76:-172"]
    assert C.AREA not in ev.columns  # a new frame, the input is unchanged


COUNTIES = pd.DataFrame({
    C.EV_COUNTY: ["21067", "21111", "51195", "47013"],
    C.AREA_NAME: ["Fayette County", "Jefferson County", "Wise County", "Campbell County"],
    C.AREA_LAT: [38.04, 38.19, 36.98, 36.40],
    C.AREA_LON: [-84.46, -85.66, -82.62, -84.15],
})
COUNTS = pd.DataFrame({C.EV_COUNTY: ["21067", "21111", "51195", "47013"],
                       C.CUSTOMERS_SERVED: [160_000, 400_000, 20_000, 9_000]})


def _county_events() -> pd.DataFrame:
    rows = (
        [{"county": "21067"}] * 5
        + [{"county": "21067", "planned": True}] * 4
        + [{"county": "21067", "dup": "lgeku:0"}] * 3
        + [{"county": "21111", "lat": 38.25, "lon": -85.76}] * 3
        + [{"county": "51195", "lat": 36.98, "lon": -82.62}] * 2
        + [{"county": "47013", "lat": 36.40, "lon": -84.15}] * 6
    )
    return assign_areas(_events(rows).drop(columns=[C.AREA]), AreaSettings(kind="county"))


def test_county_areas_count_unplanned_first_records_and_apply_filters() -> None:
    events = _county_events()
    cfg = AreaSettings(kind="county", min_events=3, states=("21", "51"))
    customers = CustomerSettings(counts_file="x.csv",
                                 timezone_by_area={"21111": "America/Chicago"})
    areas = build_areas(events, COUNTIES, COUNTS, cfg, customers)
    # Tennessee is outside the states; Wise (2 events) is below min_events
    assert list(areas[C.AREA]) == ["21067", "21111"]
    assert list(areas["n_events"]) == [5, 3]  # 4 planned and 3 re-issues not counted
    assert list(areas[C.CUSTOMERS_SERVED]) == [160_000, 400_000]
    assert list(areas[C.AREA_NAME]) == ["Fayette County", "Jefferson County"]
    assert list(areas[C.AREA_LAT]) == [38.04, 38.19]
    assert list(areas[C.TIMEZONE]) == ["America/New_York", "America/Chicago"]

    everything = build_areas(events, COUNTIES, COUNTS, AreaSettings(kind="county", min_events=0),
                             CustomerSettings(counts_file="x.csv"))
    assert list(everything[C.AREA]) == ["21067", "21111", "47013", "51195"]
    assert list(everything["n_events"]) == [5, 3, 6, 2]


def test_cell_areas_split_county_customers_in_proportion_to_events() -> None:
    fayette_a = {"county": "21067", "lat": 38.04, "lon": -84.46}   # cell 152:-338
    fayette_b = {"county": "21067", "lat": 38.30, "lon": -84.46}   # cell 153:-338
    # a cell on the county line: 1 Fayette event and 2 Jefferson events
    line_f = {"county": "21067", "lat": 38.10, "lon": -85.20}      # cell 152:-341
    line_j = {"county": "21111", "lat": 38.20, "lon": -85.10}      # cell 152:-341
    rows = ([fayette_a] * 5 + [fayette_b] * 2 + [line_f] + [line_j] * 2
            + [{**fayette_b, "planned": True}] * 10)
    cfg = AreaSettings(kind="cell", cell_size_deg=0.25, min_events=0)
    events = assign_areas(_events(rows).drop(columns=[C.AREA]), cfg)
    customers = CustomerSettings(counts_file="x.csv",
                                 timezone_by_area={"21111": "America/Chicago"})
    areas = build_areas(events, COUNTIES, COUNTS, cfg, customers).set_index(C.AREA)

    assert sorted(areas.index) == ["cell:0.25:152:-338", "cell:0.25:152:-341",
                                   "cell:0.25:153:-338"]
    served = areas[C.CUSTOMERS_SERVED].to_dict()
    # Fayette's 8 unplanned events: 5, 2 and 1 per cell; all of Jefferson's are on the line
    assert served == {"cell:0.25:152:-338": 100_000, "cell:0.25:153:-338": 40_000,
                      "cell:0.25:152:-341": 20_000 + 400_000}
    assert sum(served.values()) == 160_000 + 400_000
    line = areas.loc["cell:0.25:152:-341"]
    assert line[C.EV_COUNTY] == "21111"  # the county with most of the cell's events
    assert line[C.AREA_NAME] == "Jefferson County (cell:0.25:152:-341)"
    assert line[C.TIMEZONE] == "America/Chicago"
    assert line[C.AREA_LAT] == pytest.approx((38.10 + 2 * 38.20) / 3)
    assert line[C.AREA_LON] == pytest.approx((-85.20 + 2 * -85.10) / 3)
    assert areas.loc["cell:0.25:153:-338", "n_events"] == 2  # planned not counted

    few = build_areas(events, COUNTIES, COUNTS, cfg.model_copy(update={"min_events": 3}),
                      customers)
    assert list(few[C.AREA]) == ["cell:0.25:152:-338", "cell:0.25:152:-341"]
    # cell ids do not depend on which other events are present
    again = assign_areas(events.iloc[::-1].drop(columns=[C.AREA]), cfg)
    assert again[C.AREA].iloc[::-1].tolist() == events[C.AREA].tolist()


# --- the real county polygons -------------------------------------------------------------------


@pytest.fixture(scope="module")
def counties(data_dir: Path) -> pd.DataFrame:
    return read_counties(data_dir / COUNTIES_FILE)


def test_real_counties_keys_and_fayette_centroid(counties: pd.DataFrame) -> None:
    assert len(counties) == 3221
    assert counties[C.EV_COUNTY].is_unique
    assert counties[C.EV_COUNTY].str.fullmatch(r"\d{5}").all()
    fayette = counties.set_index(C.EV_COUNTY).loc["21067"]
    assert fayette[C.AREA_NAME] == "Fayette County"
    assert fayette[C.AREA_LAT] == pytest.approx(38.04, abs=0.15)
    assert fayette[C.AREA_LON] == pytest.approx(-84.46, abs=0.15)
    ky = counties[counties[C.EV_COUNTY].str.startswith("21")]
    assert len(ky) == 120
    assert ky[C.AREA_LAT].between(36.4, 39.2).all() and ky[C.AREA_LON].between(-89.6, -81.9).all()


def test_real_counties_decode_latin1_names(counties: pd.DataFrame) -> None:
    names = counties.set_index(C.EV_COUNTY)[C.AREA_NAME]
    assert names["35013"] == "Doña Ana County"
    assert names["72097"].startswith("Mayagüez")
    assert not names.str.contains("\ufffd|Ã").any()  # no mojibake or replacement characters


def test_read_counties_missing_file(tmp_path: Path) -> None:
    from features.contracts import ContractError

    with pytest.raises(ContractError, match="input file not found"):
        read_counties(tmp_path / "counties.json")
