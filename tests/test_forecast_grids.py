"""features/forecast_grids.py on the real forecast grids of the shared data (NDFD CONUS, GFS,
Eta, ERA5, ERA-Interim): values against the raw grids read independently (ecCodes, or xarray
directly), units, longitude conventions, the canonical frame, and clear errors for broken files.
Altered files are written to tmp_path at test time, never into the repository."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import eccodes
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from configs.settings import SettingsError, load_settings
from features import columns as C
from features import forecast_grids as fg
from features.contracts import ContractError

GRIDS = "gridded_weather"
NDFD = f"{GRIDS}/pygrib_sampledata/ds.maxt.bin"
GFS = f"{GRIDS}/pygrib_sampledata/gfs.t12z.pgrbf120.2p5deg.grib2"
ETA = f"{GRIDS}/pygrib_sampledata/eta.grb"
ERA5_UK = f"{GRIDS}/xarray_data/era5-2mt-2019-03-uk.grib"
ERA5_MEMBERS = f"{GRIDS}/cfgrib_sample_data/era5-levels-members.grib"
ERAINT = f"{GRIDS}/xarray_data/eraint_uvz.nc"

LEXINGTON = (38.04, -84.5)


@pytest.fixture(autouse=True)
def _quiet_decoders():
    # cfgrib and xarray warn about future defaults and NetCDF fill values of the sample files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def raw_grib(path: Path, short_name: str) -> list[dict]:
    """Every field of ``short_name`` read with ecCodes alone: values (NaN where missing) on
    the (Ny, Nx) grid in north-up row order, latitudes, longitudes, step range."""
    return raw_grib_fields(path, short_name)[short_name]


def raw_grib_fields(path: Path, *short_names: str) -> dict[str, list[dict]]:
    """``raw_grib`` for several short names in one pass over the file."""
    out: dict[str, list[dict]] = {name: [] for name in short_names}
    eccodes.codes_grib_multi_support_on()
    try:
        with path.open("rb") as fh:
            while (h := eccodes.codes_grib_new_from_file(fh)) is not None:
                try:
                    name = eccodes.codes_get(h, "shortName")
                    if name not in out:
                        continue
                    nx, ny = eccodes.codes_get(h, "Nx"), eccodes.codes_get(h, "Ny")
                    values = eccodes.codes_get_values(h).reshape(ny, nx)
                    values = np.where(values == eccodes.codes_get(h, "missingValue"), np.nan,
                                      values)
                    if eccodes.codes_get(h, "alternativeRowScanning"):
                        # boustrophedonic rows (NDFD): every second row runs east to west
                        values[1::2] = values[1::2, ::-1].copy()
                    out[name].append({
                        "values": values,
                        "lat": eccodes.codes_get_array(h, "latitudes").reshape(ny, nx),
                        "lon": eccodes.codes_get_array(h, "longitudes").reshape(ny, nx),
                        "step": eccodes.codes_get(h, "stepRange"),
                    })
                finally:
                    eccodes.codes_release(h)
    finally:
        eccodes.codes_grib_multi_support_off()
    return out


def areas_at(*points: tuple[str, float, float]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=[C.AREA, C.AREA_LAT, C.AREA_LON])


@pytest.fixture(scope="module")
def ndfd(data_dir: Path) -> xr.Dataset:
    return fg.read_forecast_file(data_dir / NDFD)


@pytest.fixture(scope="module")
def ndfd_raw(data_dir: Path) -> list[dict]:
    return raw_grib(data_dir / NDFD, "tmax")


@pytest.fixture(scope="module")
def gfs(data_dir: Path) -> xr.Dataset:
    return fg.read_forecast_file(data_dir / GFS)


@pytest.fixture(scope="module")
def era5_uk(data_dir: Path) -> xr.Dataset:
    return fg.read_forecast_file(data_dir / ERA5_UK)


@pytest.fixture(scope="module")
def era5_uk_direct(data_dir: Path) -> xr.Dataset:
    """The ERA5 UK file opened with xarray and cfgrib directly, not through the reader."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_dataset(data_dir / ERA5_UK, engine="cfgrib",
                               backend_kwargs={"indexpath": ""}).load()


# ---------------------------------------------------------------- NDFD: Lambert, 2-D lat/lon


def test_ndfd_is_read_as_a_lambert_grid_with_four_leads(ndfd: xr.Dataset) -> None:
    assert list(ndfd.data_vars) == [C.FC_TMAX]
    assert dict(ndfd.sizes) == {"issue_ts": 1, "step": 4, "y": 689, "x": 1073}
    assert ndfd[fg.LAT].dims == ("y", "x")
    assert pd.Timestamp(ndfd.issue_ts.values[0]) == pd.Timestamp("2011-09-29 22:00")
    assert (ndfd.step.values / np.timedelta64(1, "h")).tolist() == [14, 38, 62, 86]
    assert ndfd[C.FC_TMAX].attrs["units"] == "degC"


def test_ndfd_nearest_at_a_grid_point_equals_the_raw_grib_value(ndfd, ndfd_raw) -> None:
    # the raw grid point closest to Lexington, found and read with ecCodes alone
    first = ndfd_raw[0]
    d = (first["lat"] - LEXINGTON[0]) ** 2 + (first["lon"] - (LEXINGTON[1] % 360)) ** 2
    iy, ix = np.unravel_index(np.argmin(d), d.shape)
    point = areas_at(("lex", first["lat"][iy, ix], first["lon"][iy, ix] - 360.0))
    expected = [f["values"][iy, ix] - 273.15 for f in ndfd_raw]
    for method in ("nearest", "bilinear"):
        frame = fg.sample_forecast(ndfd, point, method)
        np.testing.assert_allclose(frame[C.FC_TMAX], expected, atol=1e-4)
    assert [f["step"] for f in ndfd_raw] == ["2-14", "26-38", "50-62", "74-86"]


def test_ndfd_bilinear_at_a_cell_centre_is_the_mean_of_its_corners(ndfd, ndfd_raw) -> None:
    first = ndfd_raw[0]
    # a cell in Kentucky whose four corners all differ (the field is stored to 0.1 K)
    iy, ix = next((y, x) for y in range(340, 360) for x in range(720, 760)
                  if len(set(first["values"][y:y + 2, x:x + 2].ravel().round(2))) == 4)
    corners = [(iy, ix), (iy, ix + 1), (iy + 1, ix), (iy + 1, ix + 1)]
    lat = np.mean([first["lat"][c] for c in corners])
    lon = np.mean([first["lon"][c] for c in corners])
    frame = fg.sample_forecast(ndfd, areas_at(("c", lat, lon)), "bilinear")
    expected = [np.mean([f["values"][c] for c in corners]) - 273.15 for f in ndfd_raw]
    np.testing.assert_allclose(frame[C.FC_TMAX], expected, atol=1e-4)


def test_ndfd_longitude_in_either_convention_samples_the_same(ndfd) -> None:
    west = fg.sample_forecast(ndfd, areas_at(("a", 37.5, -84.5)), "bilinear")
    east = fg.sample_forecast(ndfd, areas_at(("a", 37.5, 275.5)), "bilinear")
    pd.testing.assert_frame_equal(west, east)


# ---------------------------------------------------------------- GFS: global 0-360 grid


def test_gfs_variables_units_and_raw_values(gfs: xr.Dataset, data_dir: Path) -> None:
    assert set(gfs.data_vars) == set(C.FORECAST_COLUMNS) - {C.FC_SNOW}  # GFS has no asnow
    lat0, lon0 = 37.5, 275.0  # a grid point of the 2.5° grid, in Kentucky
    iy, ix = int((90 - lat0) / 2.5), int(lon0 / 2.5)
    frame = fg.sample_forecast(gfs, areas_at(("ky", lat0, lon0 - 360)), "nearest").iloc[0]
    fields = raw_grib_fields(data_dir / GFS, "2t", "tp", "10u", "10v", "gust", "prmsl", "2r")
    raw = {name: found[0]["values"][iy, ix] for name, found in fields.items()}
    assert frame[C.FC_T2M] == pytest.approx(raw["2t"] - 273.15, abs=1e-4)  # K -> °C
    assert frame[C.FC_PRCP] == pytest.approx(raw["tp"], abs=1e-4)  # kg m-2 = mm
    assert frame[C.FC_WIND] == pytest.approx(np.hypot(raw["10u"], raw["10v"]), abs=1e-4)
    assert frame[C.FC_GUST] == pytest.approx(raw["gust"], abs=1e-4)
    assert frame[C.FC_MSLP] == pytest.approx(raw["prmsl"] / 100, abs=1e-3)  # Pa -> hPa
    assert frame[C.FC_RH] == pytest.approx(raw["2r"], abs=1e-4)
    assert frame[C.LEAD_H] == 120.0


def test_gfs_bilinear_at_a_cell_centre_is_the_mean_of_its_corners(gfs, data_dir) -> None:
    raw = raw_grib(data_dir / GFS, "2t")[0]["values"]
    iy, ix = 20, 110  # 40°N, 275°E
    frame = fg.sample_forecast(gfs, areas_at(("c", 40.0 - 1.25, 275.0 + 1.25)), "bilinear")
    expected = raw[iy:iy + 2, ix:ix + 2].mean() - 273.15
    assert frame[C.FC_T2M].iloc[0] == pytest.approx(expected, abs=1e-4)


def test_gfs_longitudes_wrap_and_both_conventions_agree(gfs, data_dir) -> None:
    both = fg.sample_forecast(gfs, areas_at(("w", 38.0, -84.5), ("e", 38.0, 275.5)))
    values = both.drop(columns=[C.AREA]).to_numpy()
    np.testing.assert_array_equal(values[0], values[1])
    # between the last column (357.5°E) and the first (0°): the two columns' mean
    raw = raw_grib(data_dir / GFS, "2t")[0]["values"]
    seam = fg.sample_forecast(gfs, areas_at(("s", 50.0, -1.25)), "bilinear")
    expected = (raw[16, 143] + raw[16, 0]) / 2 - 273.15
    assert seam[C.FC_T2M].iloc[0] == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------- the canonical frame


def test_frame_has_the_canonical_columns_dtypes_and_order(ndfd) -> None:
    areas = areas_at(("21067", 38.04, -84.46), ("21111", 38.19, -85.66))
    frame = fg.sample_forecast(ndfd, areas)
    assert list(frame.columns) == [C.AREA, C.ISSUE_TS, C.TS, C.LEAD_H, C.FC_TMAX]
    assert frame[C.AREA].dtype == "string"
    assert str(frame[C.ISSUE_TS].dtype) == "datetime64[us, UTC]"
    assert str(frame[C.TS].dtype) == "datetime64[us, UTC]"
    assert frame[C.LEAD_H].dtype == "float64" and frame[C.FC_TMAX].dtype == "float64"
    assert len(frame) == 2 * 4
    assert frame[C.AREA].tolist() == ["21067"] * 4 + ["21111"] * 4
    lead = (frame[C.TS] - frame[C.ISSUE_TS]) / pd.Timedelta(hours=1)
    np.testing.assert_array_equal(lead, frame[C.LEAD_H])
    assert frame[C.TS].iloc[0] == pd.Timestamp("2011-09-30 12:00", tz="UTC")
    assert frame[C.FC_TMAX].between(0, 40).all()  # late-September maxima in Kentucky


def test_several_points_per_area_are_averaged(ndfd) -> None:
    a, b = (38.04, -84.46), (37.0, -86.0)
    apart = fg.sample_forecast(ndfd, areas_at(("a", *a), ("b", *b)))
    together = fg.sample_forecast(ndfd, areas_at(("ab", *a), ("ab", *b)))
    expected = (apart[C.FC_TMAX].to_numpy()[:4] + apart[C.FC_TMAX].to_numpy()[4:]) / 2
    np.testing.assert_allclose(together[C.FC_TMAX], expected)
    assert len(together) == 4


def test_area_points_adds_a_ring_around_each_area() -> None:
    areas = areas_at(("a", 38.0, -84.5), ("b", 37.0, -86.0))
    points = fg.area_points(areas, points_per_area=5, radius_km=10.0)
    assert (points[C.AREA].value_counts() == 5).all()
    ring = points[(points[C.AREA] == "a")].iloc[1:]
    km = 6371.0 * np.radians(np.hypot(ring[C.AREA_LAT] - 38.0,
                                      (ring[C.AREA_LON] + 84.5) * np.cos(np.radians(38.0))))
    np.testing.assert_allclose(km, 10.0, rtol=1e-3)


def test_points_outside_the_grid_are_refused_by_name(era5_uk) -> None:
    uk = era5_uk
    with pytest.raises(ContractError, match=r"1 of 2 points lie outside the grid.*38\.040"):
        fg.sample_forecast(uk, areas_at(("london", 51.5, -0.1), ("lex", *LEXINGTON)))


def tiny_grid(values: list[list[float]]) -> xr.Dataset:
    """A 2 x 2 regular grid at 38/39 °N, 275/276 °E with one issue and one step."""
    return xr.Dataset(
        {"v": (("issue_ts", "step", "y", "x"), np.array(values, dtype="float64")[None, None])},
        coords={"issue_ts": pd.to_datetime(["2024-01-01"]),
                "step": pd.to_timedelta([3], "h"),
                fg.LAT: ("y", [38.0, 39.0]), fg.LON: ("x", [275.0, 276.0])})


def test_bilinear_by_hand_and_beside_a_missing_corner() -> None:
    grid = tiny_grid([[0.0, 10.0], [20.0, 30.0]])
    # a quarter of the way north and three quarters of the way east (275.75 °E = -84.25)
    frame = fg.sample_forecast(grid, areas_at(("p", 38.25, -84.25)), "bilinear")
    by_hand = (0.75 * 0.25 * 0.0 + 0.75 * 0.75 * 10.0 + 0.25 * 0.25 * 20.0 + 0.25 * 0.75 * 30.0)
    assert frame["v"].iloc[0] == pytest.approx(by_hand) == pytest.approx(12.5)
    assert fg.sample_forecast(grid, areas_at(("p", 38.25, -84.25)), "nearest")["v"].iloc[0] == 10
    # a masked corner (sea, outside a regional model) drops out and the others are reweighted
    masked = tiny_grid([[np.nan, 10.0], [20.0, 30.0]])
    frame = fg.sample_forecast(masked, areas_at(("p", 38.5, -84.5)), "bilinear")
    assert frame["v"].iloc[0] == pytest.approx(20.0)
    assert frame[C.TS].iloc[0] == pd.Timestamp("2024-01-01 03:00", tz="UTC")


def test_netcdf_with_valid_times_and_a_reference_time_gets_leads(era5_uk_direct,
                                                                 tmp_path) -> None:
    def with_reference(ds):
        return ds.isel(time=slice(6, 12)).assign_coords(
            forecast_reference_time=np.datetime64("2019-03-01T00:00", "ns"))

    path = uk_copy(era5_uk_direct, tmp_path / "t2m_valid_times.nc", with_reference)
    grid = fg.read_forecast_file(path, [fg.DEFAULT_VARIABLES[C.FC_T2M]])
    frame = fg.sample_forecast(grid, areas_at(("p", 52.0, 0.0)))
    assert frame[C.LEAD_H].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert (frame[C.ISSUE_TS] == pd.Timestamp("2019-03-01", tz="UTC")).all()


# ---------------------------------------------------------------- Eta, ERA5, ERA-Interim


def test_eta_lambert_grid_point_equals_raw(data_dir) -> None:
    grid = fg.read_forecast_file(data_dir / ETA, [fg.DEFAULT_VARIABLES[C.FC_T2M]])
    raw = raw_grib(data_dir / ETA, "2t")[0]
    iy, ix = 30, 60
    frame = fg.sample_forecast(grid, areas_at(("p", raw["lat"][iy, ix], raw["lon"][iy, ix])),
                               "bilinear")
    assert frame[C.FC_T2M].iloc[0] == pytest.approx(raw["values"][iy, ix] - 273.15, abs=1e-4)
    assert frame[C.LEAD_H].iloc[0] == 24.0


def test_era5_hourly_analyses_are_issues_with_lead_zero(era5_uk, era5_uk_direct) -> None:
    grid, direct = era5_uk, era5_uk_direct
    frame = fg.sample_forecast(grid, areas_at(("p", 51.5, -1.0), ("q", 51.5, 359.0)), "nearest")
    assert frame[C.ISSUE_TS].nunique() == 744 and (frame[C.LEAD_H] == 0).all()
    expected = direct.t2m.sel(latitude=51.5, longitude=-1.0).values - 273.15
    np.testing.assert_allclose(frame.loc[frame[C.AREA] == "p", C.FC_T2M], expected, atol=1e-4)
    np.testing.assert_allclose(frame.loc[frame[C.AREA] == "q", C.FC_T2M], expected, atol=1e-4)


def test_era5_ensemble_members_are_averaged_at_the_chosen_level(data_dir) -> None:
    t850 = fg.GridVariable("t850_c", "degC", ("t",), -90, 60, level=850)
    grid = fg.read_forecast_file(data_dir / ERA5_MEMBERS, [t850])
    direct = xr.open_dataset(data_dir / ERA5_MEMBERS, engine="cfgrib",
                             backend_kwargs={"indexpath": ""})
    frame = fg.sample_forecast(grid, areas_at(("p", 45.0, 9.0)), "nearest")
    members = direct.t.sel(isobaricInhPa=850, latitude=45.0, longitude=9.0)
    np.testing.assert_allclose(frame["t850_c"], members.mean("number").values - 273.15,
                               atol=1e-4)
    assert frame[C.ISSUE_TS].nunique() == 4
    # without a level the reader says which to choose
    with pytest.raises(ContractError, match=r"(?s)several levels.*overrides\.t_c\.level"):
        fg.read_forecast_file(data_dir / ERA5_MEMBERS,
                              [fg.GridVariable("t_c", "degC", ("t",), -90, 60)])


def test_eraint_climatology_without_a_time_axis_is_refused(data_dir) -> None:
    wind850 = fg.GridVariable("wind850_ms", "m/s", (), 0, 120, components=(("u", "v"),),
                              level=850)
    with pytest.raises(ContractError, match=r"(?s)eraint_uvz\.nc.*no time coordinate.*month"):
        fg.read_forecast_file(data_dir / ERAINT, [wind850])


def test_eraint_netcdf_with_a_time_axis_minus180_longitudes(data_dir, tmp_path) -> None:
    # the real values, with the two climatological months given dates
    src = xr.open_dataset(data_dir / ERAINT)
    dated = src.rename(month="time").assign_coords(
        time=pd.to_datetime(["2017-01-01", "2017-07-01"]))
    path = tmp_path / "eraint_dated.nc"
    dated.to_netcdf(path)
    wind850 = fg.GridVariable("wind850_ms", "m/s", (), 0, 120, components=(("u", "v"),),
                              level=850)
    grid = fg.read_forecast_file(path, [wind850])
    assert float(grid[fg.LON].min()) == -180.0
    frame = fg.sample_forecast(grid, areas_at(("w", 38.25, -84.75), ("e", 38.25, 275.25)),
                               "nearest")
    raw = src.sel(level=850, latitude=38.25, longitude=-84.75)
    expected = np.hypot(raw.u.values, raw.v.values)
    np.testing.assert_allclose(frame.loc[frame[C.AREA] == "w", "wind850_ms"], expected,
                               rtol=1e-6)
    np.testing.assert_allclose(frame.loc[frame[C.AREA] == "e", "wind850_ms"], expected,
                               rtol=1e-6)


# ---------------------------------------------------------------- units and accumulations


@pytest.mark.parametrize(
    ("value", "units", "unit", "expected"),
    [
        (300.0, "K", "degC", 26.85),
        (50.0, "degF", "degC", 10.0),
        (0.0125, "m", "mm", 12.5),
        (7.0, "kg m**-2", "mm", 7.0),
        (10.0, "knots", "m/s", 5.14444),
        (36.0, "km/h", "m/s", 10.0),
        (101325.0, "Pa", "hPa", 1013.25),
        (0.5, "(0 - 1)", "%", 50.0),
    ],
)
def test_unit_conversions(value, units, unit, expected) -> None:
    out = fg.convert_units(xr.DataArray([value]), units, unit, source="f", variable="v")
    assert float(out[0]) == pytest.approx(expected, rel=1e-5)
    assert out.attrs["units"] == unit


def test_unknown_units_name_file_variable_and_rule() -> None:
    with pytest.raises(ContractError, match=r"(?s)file\.nc: variable 'tp' has units 'furlongs'.*"
                                            r"units_known"):
        fg.convert_units(xr.DataArray([1.0]), "furlongs", "mm", source="file.nc", variable="tp")


def uk_copy(direct: xr.Dataset, path: Path, transform) -> Path:
    """The real ERA5 UK 2 m temperature (first 48 hours) written as NetCDF after ``transform``."""
    ds = direct.isel(time=slice(0, 48))[["t2m"]].drop_vars(["number", "step", "surface",
                                                          "valid_time"])
    transform(ds).to_netcdf(path)
    return path


def test_implausible_values_are_refused_with_the_range_rule(era5_uk_direct, tmp_path) -> None:
    # values already in °C but labelled K: -263 °C everywhere
    def celsius_labelled_kelvin(ds):
        return ds.assign(t2m=(ds.t2m - 273.15).assign_attrs(units="K"))

    path = uk_copy(era5_uk_direct, tmp_path / "t2m_celsius_as_kelvin.nc",
                   celsius_labelled_kelvin)
    with pytest.raises(ContractError) as err:
        fg.read_forecast_file(path, [fg.DEFAULT_VARIABLES[C.FC_T2M]])
    message = str(err.value)
    assert "t2m_celsius_as_kelvin.nc" in message and "fc_t2m_c (from 't2m'" in message
    assert "values_between(min=-90, max=60)" in message
    assert "check the units" in message


def test_missing_units_and_coordinates_are_named(era5_uk_direct, tmp_path) -> None:
    no_units = uk_copy(era5_uk_direct, tmp_path / "no_units.nc",
                       lambda ds: ds.assign(t2m=ds.t2m.assign_attrs(units="unknown")))
    with pytest.raises(ContractError, match=r"'t2m' for fc_t2m_c states no units"):
        fg.read_forecast_file(no_units, [fg.DEFAULT_VARIABLES[C.FC_T2M]])
    overridden = fg.read_forecast_file(
        no_units, [fg.GridVariable(C.FC_T2M, "degC", ("t2m",), -90, 60, source_units="K")])
    assert float(overridden[C.FC_T2M].max()) < 30

    no_coords = uk_copy(era5_uk_direct, tmp_path / "no_coords.nc",
                        lambda ds: ds.drop_vars(["latitude", "longitude"]))
    with pytest.raises(ContractError, match=r"(?s)no_coords\.nc.*no latitude/longitude.*"
                                            r"coordinates_present"):
        fg.read_forecast_file(no_coords, [fg.DEFAULT_VARIABLES[C.FC_T2M]])


def test_running_totals_are_split_into_step_amounts(era5_uk_direct, tmp_path) -> None:
    """Precipitation accumulated from the issue time (ECMWF style, 'm') becomes mm per step."""
    steps_mm = np.array([1.0, 0.0, 2.5, 4.0])

    def running_totals(ds):
        lat, lon = ds.latitude.values, ds.longitude.values
        total = np.cumsum(steps_mm) / 1000.0  # m
        tp = np.broadcast_to(total[None, :, None, None], (1, 4, len(lat), len(lon)))
        return xr.Dataset(
            {"tp": (("time", "step", "latitude", "longitude"), tp.copy(), {"units": "m"})},
            coords={"time": ds.time.values[:1], "step": pd.to_timedelta([6, 12, 18, 24], "h"),
                    "latitude": lat, "longitude": lon})

    path = uk_copy(era5_uk_direct, tmp_path / "tp_running.nc", running_totals)
    grid = fg.read_forecast_file(path, [fg.DEFAULT_VARIABLES[C.FC_PRCP]])
    frame = fg.sample_forecast(grid, areas_at(("p", 52.0, 0.0)))
    np.testing.assert_allclose(frame[C.FC_PRCP], steps_mm, atol=1e-9)
    assert frame[C.LEAD_H].tolist() == [6.0, 12.0, 18.0, 24.0]


def test_grib_accumulation_windows_are_split_by_their_start_step(data_dir, tmp_path) -> None:
    """GFS-style buckets in GRIB: 0-6 h, then 0-12 h (subtract), then 12-18 h (already a step)."""
    path = tmp_path / "tp_buckets.grib2"
    with (data_dir / GFS).open("rb") as fh, path.open("wb") as out:
        while (h := eccodes.codes_grib_new_from_file(fh)) is not None:
            if eccodes.codes_get(h, "shortName") == "tp":
                base = eccodes.codes_get_values(h)
                for window, scale in (("0-6", 1.0), ("0-12", 3.0), ("12-18", 0.5)):
                    clone = eccodes.codes_clone(h)
                    eccodes.codes_set(clone, "stepRange", window)
                    eccodes.codes_set_values(clone, base * scale)
                    eccodes.codes_write(clone, out)
                    eccodes.codes_release(clone)
            eccodes.codes_release(h)
    grid = fg.read_forecast_file(path, [fg.DEFAULT_VARIABLES[C.FC_PRCP]])
    assert (grid.step.values / np.timedelta64(1, "h")).tolist() == [6, 12, 18]
    raw = raw_grib(data_dir / GFS, "tp")[0]["values"]
    wet = np.unravel_index(np.nanargmax(raw), raw.shape)
    frame = fg.sample_forecast(
        grid, areas_at(("wet", 90 - 2.5 * wet[0], 2.5 * wet[1])), "nearest")
    np.testing.assert_allclose(frame[C.FC_PRCP], raw[wet] * np.array([1.0, 2.0, 0.5]),
                               rtol=1e-3)


# ---------------------------------------------------------------- broken files


def test_truncated_grib_is_refused_not_silently_shortened(data_dir, tmp_path) -> None:
    broken = tmp_path / "ds.maxt.bin"
    broken.write_bytes((data_dir / NDFD).read_bytes()[:500_000])
    with pytest.raises(ContractError, match=r"(?s)ds\.maxt\.bin: GRIB message 2 cannot be read.*"
                                            r"file_readable.*truncated"):
        fg.read_forecast_file(broken)


def test_truncated_netcdf_is_refused(data_dir, tmp_path) -> None:
    broken = tmp_path / "eraint_uvz.nc"
    broken.write_bytes((data_dir / ERAINT).read_bytes()[:2_000_000])
    with pytest.raises(ContractError, match=r"(?s)eraint_uvz\.nc: 2,000,000 bytes.*file_complete"):
        fg.read_forecast_file(broken)


def test_files_that_are_not_grids_are_refused(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a forecast")
    with pytest.raises(ContractError, match=r"notes\.txt: neither GRIB nor NetCDF"):
        fg.read_forecast_file(text)
    junk = tmp_path / "junk.grib2"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ContractError, match=r"junk\.grib2: no GRIB messages"):
        fg.read_forecast_file(junk)
    with pytest.raises(ContractError, match="forecast file not found"):
        fg.read_forecast_file(tmp_path / "absent.grib2")


def test_a_file_without_the_required_variables_says_what_it_has(data_dir) -> None:
    with pytest.raises(ContractError, match=r"(?s)variables not found: fc_gust_ms.*"
                                            r"the file has: tmax@surface:0"):
        fg.read_forecast_file(data_dir / NDFD, required=[C.FC_GUST])


# ---------------------------------------------------------------- several files, settings


def test_two_issue_times_are_merged_on_one_grid(data_dir, tmp_path) -> None:
    later = tmp_path / "eta_next_day.grb"
    with (data_dir / ETA).open("rb") as fh, later.open("wb") as out:
        while (h := eccodes.codes_grib_new_from_file(fh)) is not None:
            eccodes.codes_set(h, "dataDate", 20041209)
            eccodes.codes_write(h, out)
            eccodes.codes_release(h)
    t2m = [fg.DEFAULT_VARIABLES[C.FC_T2M]]
    grid = fg.read_forecast_grids([data_dir / ETA, later], t2m)
    frame = fg.sample_forecast(grid, areas_at(("lex", *LEXINGTON)))
    assert frame[C.ISSUE_TS].dt.strftime("%Y-%m-%d %H").tolist() == ["2004-12-08 12",
                                                                      "2004-12-09 12"]
    assert frame[C.TS].iloc[1] - frame[C.TS].iloc[0] == pd.Timedelta(days=1)
    assert frame[C.FC_T2M].iloc[0] == frame[C.FC_T2M].iloc[1]  # same field, copied


def test_settings_drive_the_reader(data_dir, tmp_path) -> None:
    cfg = load_settings(environ={"FOREWARN_DATA_DIR": str(data_dir)})
    assert cfg.forecast.method == "bilinear"
    grid = fg.load_forecast(cfg.forecast, cfg.paths.data_dir)
    assert list(grid.data_vars) == [C.FC_TMAX]
    frame = fg.forecast_for_areas(grid, areas_at(("lex", *LEXINGTON)), cfg.forecast)
    assert len(frame) == 4

    wind = tmp_path / "wind.yaml"
    wind.write_text("forecast:\n  overrides:\n    fc_wind_ms: {sources: [wspd], min: 0}\n")
    specs = fg.variables_from_settings(load_settings(wind, environ={}).forecast)
    by_column = {s.column: s for s in specs}
    assert by_column[C.FC_WIND].sources == ("wspd",)
    assert by_column[C.FC_WIND].max == 120  # default kept where not overridden

    stray = tmp_path / "stray.yaml"
    stray.write_text("forecast:\n  variables: [fc_t2m_c]\n  overrides:\n"
                     "    fc_gust_ms: {sources: [gust]}\n")
    with pytest.raises(SettingsError, match="forecast: .*overrides for columns not in"):
        load_settings(stray, environ={})


def test_copy_of_the_real_file_reads_identically(data_dir, tmp_path, ndfd) -> None:
    """Nothing is written beside the data (cfgrib index files): a copy reads the same."""
    copy = tmp_path / "ds.maxt.bin"
    shutil.copy(data_dir / NDFD, copy)
    again = fg.read_forecast_file(copy)
    xr.testing.assert_identical(again.drop_attrs(), ndfd.drop_attrs())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.maxt.bin"]
