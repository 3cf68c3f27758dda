"""Numerical weather forecast grids (GRIB through cfgrib/ecCodes, NetCDF through xarray),
sampled at area locations.

``read_forecast_file`` reads one file into a *forecast grid*: an ``xarray.Dataset`` whose data
variables are the product's own columns (``features.columns.FC_*``) in the product's units
(°C, mm, m/s, hPa, %), each with dims ``(issue_ts, step, y, x)``:

- ``issue_ts``: the model run (reference time), UTC;
- ``step``: lead time (timedelta); the value is valid at ``issue_ts + step``. Fields over a
  period (precipitation, maximum, minimum) belong to the period that *ends* at that time;
  accumulated precipitation is de-accumulated to the amount of each step;
- ``y``, ``x``: grid rows and columns, with coordinates ``latitude``/``longitude`` in degrees,
  1-D (regular lat/lon grid) or 2-D (projected grids such as the NDFD Lambert grid). Longitudes
  are kept as the file has them (0–360 or −180–180); points are matched in either convention.

Ensemble members are averaged (ensemble mean); a vertical level is selected when the variable
names one. ``read_forecast_grids`` merges several files (several issue times, or several
variables of one run) onto one grid. ``sample_forecast`` is the one function that turns a
forecast grid into the canonical long frame ``(area_id, issue_ts, ts, lead_h, <FC_* columns>)``,
by nearest-neighbour or bilinear sampling at one or several points per area (averaged).

Contracts: every failure raises ``ContractError`` naming the file, the variable and the rule:
unreadable or truncated files, missing coordinates, unknown units, accumulations that cannot be
split into steps, and values outside a physically plausible range per variable
(``GridVariable.min``/``max``, checked with numpy over the whole converted grid; Great
Expectations is not used here because a grid of millions of cells is not a table, and the
canonical frame built from it has no rows to set aside: a grid is right or wrong as a whole).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from cfgrib import messages as cfgrib_messages

from configs.settings import ForecastSettings
from features import columns as C
from features.contracts import ContractError, Rule

log = logging.getLogger(__name__)

Method = Literal["nearest", "bilinear"]
Kind = Literal["instant", "accum", "max", "min", "avg"]

GRIB_SUFFIXES = (".grib", ".grib1", ".grib2", ".grb", ".grb1", ".grb2", ".bin")
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF")
ISSUE = "issue_ts"
STEP = "step"
LAT = "latitude"
LON = "longitude"
_LAT_NAMES = ("latitude", "lat", "nav_lat", "XLAT")
_LON_NAMES = ("longitude", "lon", "nav_lon", "XLONG")
_ENSEMBLE_DIMS = ("number", "member", "realization", "ensemble")
_EARTH_RADIUS_KM = 6371.0
_NEGATIVE_PRECIP_TOLERANCE_MM = 0.1  # packing noise after de-accumulation; clipped to 0


# ---------------------------------------------------------------- variables and units


@dataclass(frozen=True)
class GridVariable:
    """How one product column is found in a forecast file and what values it may take.

    ``sources`` are names to look for, in order: GRIB ``shortName`` (e.g. ``2t``) or the name
    of a variable in the dataset (e.g. ``t2m``). ``components`` are (u, v) name pairs used when
    no source is present: the column is then the speed ``hypot(u, v)``. ``level`` selects a
    vertical level (hPa or m, as the file counts them) when the source has several.
    ``source_units`` replaces the units the file states (for files without units).
    ``accumulated_from`` says, for accumulated fields of files that do not record where each
    accumulation starts (NetCDF), whether values run from the issue time ("issue") or from the
    previous step ("previous_step"). ``min``/``max`` bound plausible values, in ``unit``.
    """

    column: str
    unit: Literal["degC", "mm", "m/s", "hPa", "%"]
    sources: tuple[str, ...]
    min: float
    max: float
    kind: Kind = "instant"
    components: tuple[tuple[str, str], ...] = ()
    level: float | None = None
    source_units: str | None = None
    accumulated_from: Literal["issue", "previous_step"] = "issue"

    @property
    def rule(self) -> Rule:
        """The range contract of the column, in the product's unit."""
        return Rule(self.column, "between", min=self.min, max=self.max, quarantine=False,
                    hint=f"values are {self.unit}; check the units the file states")


DEFAULT_VARIABLES: dict[str, GridVariable] = {
    v.column: v
    for v in (
        GridVariable(C.FC_T2M, "degC", ("2t", "t2m", "tas", "TMP_2maboveground"), -90, 60),
        GridVariable(C.FC_TMAX, "degC", ("tmax", "mx2t", "mx2t6", "mx2t3", "tasmax"), -90, 60,
                     kind="max"),
        GridVariable(C.FC_TMIN, "degC", ("tmin", "mn2t", "mn2t6", "mn2t3", "tasmin"), -90, 60,
                     kind="min"),
        GridVariable(C.FC_PRCP, "mm", ("tp", "apcp", "APCP_surface"), 0, 500, kind="accum"),
        # snowfall as depth of new snow (NDFD/HRRR "asnow"), like the station's daily SNOW;
        # ECMWF "sf" is water equivalent, a different quantity, so it is not looked for
        GridVariable(C.FC_SNOW, "mm", ("asnow", "snowfall", "ASNOW_surface"), 0, 2000,
                     kind="accum"),
        GridVariable(C.FC_WIND, "m/s", ("10si", "si10", "wind10", "ws10"), 0, 120,
                     components=(("10u", "10v"), ("u10", "v10"))),
        GridVariable(C.FC_GUST, "m/s", ("gust", "i10fg", "10fg", "fg10", "10fg6", "10fg3"),
                     0, 150),
        GridVariable(C.FC_MSLP, "hPa", ("prmsl", "msl", "mslet", "PRMSL_meansealevel"),
                     850, 1100),
        GridVariable(C.FC_RH, "%", ("2r", "r2", "hurs"), 0, 105),
    )
}

# product unit -> source unit -> (scale, offset): product = source * scale + offset
_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "degC": {
        "K": (1.0, -273.15), "kelvin": (1.0, -273.15), "degK": (1.0, -273.15),
        "degC": (1.0, 0.0), "C": (1.0, 0.0), "°C": (1.0, 0.0), "celsius": (1.0, 0.0),
        "degree_Celsius": (1.0, 0.0),
        "degF": (5.0 / 9.0, -32.0 * 5.0 / 9.0), "F": (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    },
    "mm": {
        "kg m**-2": (1.0, 0.0), "kg m-2": (1.0, 0.0), "kg/m2": (1.0, 0.0),
        "kg m^-2": (1.0, 0.0), "mm": (1.0, 0.0),
        "m": (1000.0, 0.0), "m of water equivalent": (1000.0, 0.0),
        "cm": (10.0, 0.0), "in": (25.4, 0.0), "inch": (25.4, 0.0),
    },
    "m/s": {
        "m s**-1": (1.0, 0.0), "m s-1": (1.0, 0.0), "m/s": (1.0, 0.0), "m s^-1": (1.0, 0.0),
        "km/h": (1.0 / 3.6, 0.0), "km h-1": (1.0 / 3.6, 0.0),
        "knots": (0.514444, 0.0), "knot": (0.514444, 0.0), "kt": (0.514444, 0.0),
        "mph": (0.44704, 0.0),
    },
    "hPa": {"Pa": (0.01, 0.0), "hPa": (1.0, 0.0), "mbar": (1.0, 0.0), "mb": (1.0, 0.0),
            "kPa": (10.0, 0.0)},
    "%": {"%": (1.0, 0.0), "percent": (1.0, 0.0), "1": (100.0, 0.0), "(0 - 1)": (100.0, 0.0)},
}


def convert_units(values: xr.DataArray, from_units: str, to_unit: str, *, source: str,
                  variable: str) -> xr.DataArray:
    """``values`` in ``from_units`` (as the file writes them, e.g. "K", "kg m**-2", "m s**-1",
    "Pa") converted to the product unit ``to_unit``; ContractError for a unit not known."""
    known = _CONVERSIONS[to_unit]
    scale_offset = known.get(from_units.strip())
    if scale_offset is None:
        raise ContractError(
            f"forecast file {source}: variable '{variable}' has units {from_units!r}, which "
            f"cannot be converted to {to_unit}\n  rule: units_known({', '.join(sorted(known))})"
            f"\n  hint: set forecast.variables.<column>.source_units if the file states its "
            f"units wrongly or not at all"
        )
    scale, offset = scale_offset
    out = values * scale + offset if (scale, offset) != (1.0, 0.0) else values
    return out.assign_attrs(units=to_unit)


def variables_from_settings(cfg: ForecastSettings) -> tuple[GridVariable, ...]:
    """The GridVariables of ``cfg.variables`` with the overrides of ``cfg.overrides`` applied."""
    unknown = sorted(set(cfg.variables) - set(DEFAULT_VARIABLES))
    if unknown:
        raise ValueError(f"forecast.variables: unknown columns {unknown}; "
                         f"known: {sorted(DEFAULT_VARIABLES)}")
    out = []
    for column in cfg.variables:
        spec = DEFAULT_VARIABLES[column]
        over = cfg.overrides.get(column)
        if over is not None:
            changes = {k: v for k, v in over.model_dump().items() if v is not None}
            if "components" in changes:
                changes["components"] = tuple(tuple(pair) for pair in changes["components"])
            spec = replace(spec, **changes)
        out.append(spec)
    return tuple(out)


# ---------------------------------------------------------------- reading


def read_forecast_file(
    path: str | Path,
    variables: Iterable[GridVariable] | None = None,
    *,
    required: Iterable[str] = (),
) -> xr.Dataset:
    """One GRIB or NetCDF file as a forecast grid (see the module docstring) holding the
    ``variables`` the file has (default: all of ``DEFAULT_VARIABLES``); the columns named in
    ``required`` must be found. Values are loaded into memory and range-checked."""
    path = Path(path)
    specs = tuple(DEFAULT_VARIABLES.values() if variables is None else variables)
    source = str(path)
    if not path.is_file():
        raise ContractError(f"forecast file not found: {source}")
    fmt = _file_format(path)
    reader = _GribFile(path) if fmt == "grib" else _NetcdfFile(path)
    arrays: dict[str, xr.DataArray] = {}
    for spec in specs:
        da = reader.read(spec)
        if da is None:
            continue
        arrays[spec.column] = _check_range(da, spec, source)
    missing = [c for c in required if c not in arrays] or (
        [] if arrays else [s.column for s in specs])
    if missing:
        looked_for = "; ".join(f"{s.column}: {', '.join(s.sources + _flat(s.components))}"
                               for s in specs if s.column in missing)
        raise ContractError(
            f"forecast file {source}: variables not found: {', '.join(missing)}\n"
            f"  rule: variables_present\n  names looked for: {looked_for}\n"
            f"  the file has: {', '.join(reader.names()) or '(nothing readable)'}\n"
            "  hint: map the file's names with forecast.overrides.<column>.sources"
        )
    try:
        grid = xr.merge(list(arrays.values()), join="outer", compat="no_conflicts")
    except (ValueError, xr.MergeError) as exc:
        raise ContractError(f"forecast file {source}: variables are not on one grid: {exc}"
                            ) from exc
    return grid.assign_attrs(sources=source)


def read_forecast_grids(
    paths: Sequence[str | Path],
    variables: Iterable[GridVariable] | None = None,
    *,
    required: Iterable[str] = (),
) -> xr.Dataset:
    """Several files (issue times, or variables of one run) merged onto one forecast grid;
    steps or issue times one file lacks are NaN. Files must share the grid."""
    if not paths:
        raise ContractError("no forecast files given")
    specs = tuple(DEFAULT_VARIABLES.values() if variables is None else variables)
    grids = [read_forecast_file(p, specs) for p in paths]
    try:
        grid = xr.merge(grids, join="outer", compat="no_conflicts", combine_attrs="drop")
    except (ValueError, xr.MergeError) as exc:
        raise ContractError(
            f"forecast files {', '.join(str(p) for p in paths)} cannot be combined (different "
            f"grids, or different values for the same issue time and step): {exc}"
        ) from exc
    missing = [c for c in required if c not in grid.data_vars]
    if missing:
        raise ContractError(f"forecast files {', '.join(str(p) for p in paths)}: variables "
                            f"not found: {', '.join(missing)}\n  rule: variables_present")
    return grid.assign_attrs(sources=";".join(str(p) for p in paths))


def load_forecast(cfg: ForecastSettings, data_dir: Path) -> xr.Dataset:
    """The forecast grid of every file matching ``cfg.file_glob`` under ``cfg.directory``
    (relative to ``data_dir`` unless absolute), with the variables of ``cfg``."""
    directory = Path(cfg.directory)
    if not directory.is_absolute():
        directory = data_dir / directory
    files = sorted(directory.glob(cfg.file_glob))
    if not files:
        raise ContractError(f"no forecast files match {cfg.file_glob!r} in {directory}")
    return read_forecast_grids(files, variables_from_settings(cfg))


def _flat(pairs: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    return tuple(f"{u}+{v}" for u, v in pairs)


def _file_format(path: Path) -> Literal["grib", "netcdf"]:
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(NETCDF_MAGIC):
        return "netcdf"
    if head.startswith(b"GRIB") or path.suffix.lower() in GRIB_SUFFIXES:
        return "grib"
    raise ContractError(
        f"forecast file {path}: neither GRIB nor NetCDF (starts with {head!r})\n"
        "  rule: file_format(GRIB, NetCDF)"
    )


class _GribFile:
    """A GRIB file read through cfgrib, one variable at a time (``filter_by_keys``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inventory = _grib_inventory(path)

    def names(self) -> list[str]:
        return sorted({f"{m['shortName']}@{m['typeOfLevel']}:{m['level']}"
                       for m in self.inventory})

    def read(self, spec: GridVariable) -> xr.DataArray | None:
        for name in spec.sources:
            da = self._open(name, spec)
            if da is not None:
                return _to_product(da, spec, str(self.path), name, self._kind(name, spec))
        for u_name, v_name in spec.components:
            u = self._open(u_name, spec)
            v = self._open(v_name, spec)
            if u is not None and v is not None:
                return _speed(u, v, spec, str(self.path), f"{u_name}+{v_name}")
        return None

    def _kind(self, name: str, spec: GridVariable) -> str:
        kinds = {m["stepType"] for m in self.inventory if m["shortName"] == name}
        return kinds.pop() if len(kinds) == 1 else spec.kind

    def _open(self, name: str, spec: GridVariable) -> xr.DataArray | None:
        messages = [m for m in self.inventory if m["shortName"] == name]
        if spec.level is not None:
            messages = [m for m in messages if m["level"] == spec.level]
        if not messages:
            return None
        levels = sorted({(m["typeOfLevel"], m["level"]) for m in messages})
        if len(levels) > 1:
            raise ContractError(
                f"forecast file {self.path}: variable '{name}' for {spec.column} comes on "
                f"several levels {levels}\n  rule: one_level\n  hint: set "
                f"forecast.overrides.{spec.column}.level"
            )
        accum = any(m["stepType"] == "accum" for m in messages)
        kwargs: dict[str, object] = {"errors": "raise"}
        if accum:
            kwargs["extra_coords"] = {"startStep": "step"}
        try:
            # cfgrib opens a list of messages (a "fieldset") as it opens a file; handing it
            # only this variable's messages avoids re-indexing the whole file per variable
            stream = cfgrib_messages.FileStream(str(self.path), errors="raise")
            fieldset = [stream[m["offset"]] for m in messages]
            ds = xr.open_dataset(fieldset, engine="cfgrib",  # type: ignore[arg-type]
                                 backend_kwargs=kwargs, decode_timedelta=True).load()
        except (OSError, ValueError, EOFError, KeyError, RuntimeError) as exc:
            raise ContractError(f"forecast file {self.path}: cannot read variable '{name}' "
                                f"({type(exc).__name__}: {exc})\n  rule: file_readable") from exc
        picked = [v for v in ds.data_vars if ds[v].attrs.get("GRIB_shortName") == name]
        if not picked:
            return None
        return ds[picked[0]]


def _grib_inventory(path: Path) -> list[dict]:
    """shortName, typeOfLevel, level, stepType, units and offset (cfgrib's: byte offset, or
    (byte offset, field number) for the later fields of a multi-field GRIB2 message) of every
    field in the file. A truncated or corrupt message raises
    ContractError: cfgrib alone would skip it with a warning and return fewer steps."""
    import eccodes

    found: list[dict] = []
    previous_offset, field_in_message = -1, 0
    eccodes.codes_grib_multi_support_on()
    try:
        with path.open("rb") as fh:
            while True:
                handle = eccodes.codes_grib_new_from_file(fh, headers_only=True)
                if handle is None:
                    break
                try:
                    keys = {k: eccodes.codes_get(handle, k) for k in
                            ("shortName", "typeOfLevel", "level", "stepType", "units", "offset")}
                finally:
                    eccodes.codes_release(handle)
                # fields packed in one message share its offset; cfgrib counts them
                offset = int(keys["offset"])
                field_in_message = field_in_message + 1 if offset == previous_offset else 0
                previous_offset = offset
                keys["offset"] = (offset, field_in_message) if field_in_message else offset
                found.append(keys)
    except eccodes.GribInternalError as exc:
        raise ContractError(
            f"forecast file {path}: GRIB message {len(found) + 1} cannot be read "
            f"({type(exc).__name__}: {exc})\n  rule: file_readable\n"
            "  hint: the file is truncated or corrupt; download it again"
        ) from exc
    finally:
        eccodes.codes_grib_multi_support_off()
    if not found:
        raise ContractError(f"forecast file {path}: no GRIB messages\n  rule: file_readable")
    return found


class _NetcdfFile:
    """A NetCDF file read through xarray (netCDF4 or h5netcdf)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.ds = xr.open_dataset(path, decode_timedelta=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ContractError(f"forecast file {path}: cannot be opened as NetCDF "
                                f"({type(exc).__name__}: {exc})\n  rule: file_readable"
                                ) from exc
        _check_classic_size(path, self.ds)

    def names(self) -> list[str]:
        return sorted(str(v) for v in self.ds.data_vars)

    def read(self, spec: GridVariable) -> xr.DataArray | None:
        for name in spec.sources:
            if name in self.ds.data_vars:
                da = self.ds[name].load()
                return _to_product(da, spec, str(self.path), name, spec.kind)
        for u_name, v_name in spec.components:
            if u_name in self.ds.data_vars and v_name in self.ds.data_vars:
                return _speed(self.ds[u_name].load(), self.ds[v_name].load(), spec,
                              str(self.path), f"{u_name}+{v_name}")
        return None


def _check_classic_size(path: Path, ds: xr.Dataset) -> None:
    """A classic (netCDF-3) file shorter than the data its header declares is truncated; the
    netCDF library would read the missing part as zeros without a word."""
    with path.open("rb") as fh:
        if not fh.read(4).startswith(b"CDF"):
            return
    declared = sum(np.dtype(v.encoding.get("dtype", v.dtype)).itemsize * v.size
                   for v in ds.variables.values())
    size = os.path.getsize(path)
    if size < declared:
        raise ContractError(
            f"forecast file {path}: {size:,} bytes, but its header declares at least "
            f"{declared:,} bytes of data\n  rule: file_complete\n"
            "  hint: the file is truncated; download it again"
        )


# ---------------------------------------------------------------- one variable -> product form


def _to_product(da: xr.DataArray, spec: GridVariable, source: str, name: str,
                kind: str) -> xr.DataArray:
    """A source variable in product form: dims (issue_ts, step, y, x), product units,
    accumulations split into steps."""
    da = _standard_dims(da, spec, source, name)
    units = spec.source_units or da.attrs.get("units")
    if not units or units == "unknown":
        raise ContractError(
            f"forecast file {source}: variable '{name}' for {spec.column} states no units\n"
            f"  rule: units_known\n  hint: set forecast.overrides.{spec.column}.source_units"
        )
    out = convert_units(da, str(units), spec.unit, source=source, variable=name)
    if kind == "accum":
        out = _deaccumulate(out, spec, source, name)
        out = out.where(~((out < 0) & (out >= -_NEGATIVE_PRECIP_TOLERANCE_MM)), 0.0)
    return out.rename(spec.column).assign_attrs(source_variable=name, kind=kind, units=spec.unit)


def _speed(u: xr.DataArray, v: xr.DataArray, spec: GridVariable, source: str,
           name: str) -> xr.DataArray:
    """Wind speed from its components (grid-relative components, as on the Eta Lambert grid,
    give the same speed)."""
    u2 = _to_product(u, replace(spec, kind="instant"), source, name.split("+")[0], "instant")
    v2 = _to_product(v, replace(spec, kind="instant"), source, name.split("+")[1], "instant")
    speed = xr.apply_ufunc(np.hypot, u2, v2, keep_attrs=False)
    return speed.rename(spec.column).assign_attrs(source_variable=name, kind="instant",
                                                  units=spec.unit)


def _standard_dims(da: xr.DataArray, spec: GridVariable, source: str,
                   name: str) -> xr.DataArray:
    """Rename and add dims to (issue_ts, step, y, x); average ensemble members; select the
    vertical level."""
    lat_name = next((n for n in _LAT_NAMES if n in da.coords), None)
    lon_name = next((n for n in _LON_NAMES if n in da.coords), None)
    if lat_name is None or lon_name is None:
        raise ContractError(
            f"forecast file {source}: variable '{name}' has no latitude/longitude coordinates "
            f"(coordinates: {', '.join(str(c) for c in da.coords) or 'none'})\n"
            "  rule: coordinates_present(latitude, longitude)"
        )
    lat, lon = da[lat_name], da[lon_name]
    lat_coord: tuple[str | tuple[str, str], np.ndarray]
    lon_coord: tuple[str | tuple[str, str], np.ndarray]
    if lat.ndim == 1 and lon.ndim == 1 and lat.dims != lon.dims:
        dims = {lat.dims[0]: "y", lon.dims[0]: "x"}
        lat_coord, lon_coord = ("y", lat.values), ("x", lon.values)
    elif lat.ndim == 2 and lat.dims == lon.dims:
        dims = {lat.dims[0]: "y", lat.dims[1]: "x"}
        lat_coord, lon_coord = (("y", "x"), lat.values), (("y", "x"), lon.values)
    else:
        raise ContractError(f"forecast file {source}: variable '{name}': latitude and "
                            "longitude are neither 1-D axes nor one 2-D grid\n"
                            "  rule: coordinates_present(latitude, longitude)")
    da = da.drop_vars([lat_name, lon_name]).rename(dims)
    da = da.drop_vars([d for d in ("y", "x") if d in da.coords])
    da = da.assign_coords({LAT: lat_coord, LON: lon_coord})
    da = da.reset_coords(
        [c for c in da.coords if c not in (LAT, LON, "time", "step", "valid_time",
                                           "forecast_reference_time", "startStep")
         and c not in da.dims], drop=True)
    da = _issue_and_step(da, source, name)
    for dim in [d for d in da.dims if d in _ENSEMBLE_DIMS]:
        da = da.mean(dim, keep_attrs=True)
    extra = [str(d) for d in da.dims if d not in (ISSUE, STEP, "y", "x")]
    for dim in extra:
        if spec.level is not None and dim in da.coords:
            try:
                da = da.sel({dim: spec.level})
            except KeyError as exc:
                raise ContractError(
                    f"forecast file {source}: variable '{name}' has no level {spec.level} "
                    f"(levels: {da[dim].values.tolist()})\n  rule: level_present") from exc
        elif da.sizes[dim] == 1:
            da = da.isel({dim: 0})
        else:
            raise ContractError(
                f"forecast file {source}: variable '{name}' for {spec.column} has dimension "
                f"'{dim}' of size {da.sizes[dim]}\n  rule: one_level\n  hint: set "
                f"forecast.overrides.{spec.column}.level"
            )
        da = da.drop_vars(dim, errors="ignore")
    return da.transpose(ISSUE, STEP, "y", "x")


def _issue_and_step(da: xr.DataArray, source: str, name: str) -> xr.DataArray:
    """Issue time and lead as dims ISSUE and STEP. A file with ``time`` and ``step``
    (cfgrib) gives both; one with only valid times (``time`` or ``valid_time``) counts each
    time as its own issue with lead 0, unless a ``forecast_reference_time`` says otherwise."""
    if "step" not in da.coords and "forecast_reference_time" in da.coords:
        ref = da["forecast_reference_time"]
        valid_name = "time" if "time" in da.coords else "valid_time"
        if valid_name not in da.coords or ref.ndim != 0:
            raise ContractError(f"forecast file {source}: variable '{name}' has a "
                                "forecast_reference_time but no valid time axis\n"
                                "  rule: coordinates_present(time)")
        da = da.drop_vars("forecast_reference_time")
        da = da.rename({valid_name: STEP}) if valid_name in da.dims else da.expand_dims(STEP)
        da = da.assign_coords({STEP: da[STEP] - ref.values}).expand_dims({ISSUE: [ref.values]})
        return da
    issue_name = "time" if "time" in da.coords else (
        "valid_time" if "valid_time" in da.coords else None)
    if issue_name is None:
        raise ContractError(
            f"forecast file {source}: variable '{name}' has no time coordinate (dims: "
            f"{', '.join(str(d) for d in da.dims)})\n  rule: coordinates_present(time)\n"
            "  hint: a forecast needs its issue time (time) and lead (step) or valid time"
        )
    if issue_name == "valid_time" and "step" in da.coords:
        raise ContractError(f"forecast file {source}: variable '{name}' has a step but no "
                            "issue time\n  rule: coordinates_present(time)")
    if not np.issubdtype(da[issue_name].dtype, np.datetime64):
        raise ContractError(f"forecast file {source}: time coordinate of '{name}' is not a "
                            f"date-time ({da[issue_name].dtype})\n  rule: time_decodable")
    if "step" not in da.coords:
        da = da.assign_coords(step=np.timedelta64(0, "ns"))
    da = da.drop_vars([c for c in ("valid_time",) if c in da.coords and c != issue_name])
    da = da.rename({issue_name: ISSUE})
    for dim in (ISSUE, STEP):
        if dim not in da.dims:
            da = da.expand_dims(dim)
    if "startStep" in da.coords and "startStep" not in da.dims:
        if da["startStep"].ndim == 0:
            da = da.assign_coords(startStep=(STEP, np.atleast_1d(da["startStep"].values)))
    return da


def _deaccumulate(da: xr.DataArray, spec: GridVariable, source: str,
                  name: str) -> xr.DataArray:
    """Amounts over each step (from the previous step to this one) from accumulations.

    Where the file records where each accumulation starts (GRIB ``startStep``), a value over
    [start, end] minus the value over [start, previous end] gives the amount of the step; a
    value that starts at the previous end is already per step (bucket files such as GFS mix
    both). Otherwise ``spec.accumulated_from`` says whether values run from the issue time."""
    da = da.sortby(STEP)
    end_h = da[STEP].values / np.timedelta64(1, "h")
    if "startStep" in da.coords:
        start_h = np.asarray(da["startStep"].values, dtype="float64")
        da = da.drop_vars("startStep")
    elif spec.accumulated_from == "issue":
        start_h = np.zeros_like(end_h)
    else:
        start_h = np.concatenate([[end_h[0]], end_h[:-1]]) if len(end_h) else end_h
        if len(end_h):
            start_h[0] = 0.0
    by_window = {(s, e): i for i, (s, e) in enumerate(zip(start_h, end_h, strict=True))}
    values = da.transpose(ISSUE, STEP, ...).values
    amounts = values.copy()
    for i, (s, e) in enumerate(zip(start_h, end_h, strict=True)):
        prev_end = end_h[i - 1] if i > 0 else s
        if s >= prev_end:
            continue  # a bucket of its own (or the first step)
        j = by_window.get((s, prev_end))
        if j is None:
            raise ContractError(
                f"forecast file {source}: '{name}' accumulates over {s:g}-{e:g} h but there is "
                f"no {s:g}-{prev_end:g} h value to subtract, so the amount of step "
                f"{prev_end:g}-{e:g} h is unknown\n  rule: accumulations_split_into_steps"
            )
        amounts[:, i] = values[:, i] - values[:, j]
    return da.transpose(ISSUE, STEP, ...).copy(data=amounts)


def _check_range(da: xr.DataArray, spec: GridVariable, source: str) -> xr.DataArray:
    """The range contract on the whole converted grid: ContractError naming the file, the
    variable, the rule and a few offending cells."""
    values = da.values
    finite = np.isfinite(values)
    if not finite.any():
        raise ContractError(f"forecast file {source}: {spec.column} "
                            f"('{da.attrs.get('source_variable')}') has no values\n"
                            "  rule: values_not_null(mostly>0)")
    bad = finite & ((values < spec.min) | (values > spec.max))
    if bad.any():
        where = np.argwhere(bad)[:3]
        lat, lon = da[LAT].values, da[LON].values
        examples = []
        for i, s, y, x in where:
            la = lat[y, x] if lat.ndim == 2 else lat[y]
            lo = lon[y, x] if lon.ndim == 2 else lon[x]
            examples.append(f"{{issue {str(da[ISSUE].values[i])[:16]}, step "
                            f"{da[STEP].values[s] / np.timedelta64(1, 'h'):g} h, lat {la:.2f}, "
                            f"lon {lo:.2f}: {values[i, s, y, x]:.6g}}}")
        raise ContractError(
            f"forecast file {source}: {spec.column} (from '{da.attrs.get('source_variable')}', "
            f"{spec.unit}) rule {spec.rule.describe()}: {int(bad.sum())} of {values.size} "
            f"grid values fail, e.g. {', '.join(examples)}\n  hint: {spec.rule.hint}"
        )
    return da


# ---------------------------------------------------------------- sampling


@dataclass(frozen=True)
class GridIndex:
    """Fractional grid positions (row ``fy``, column ``fx``) of points on one grid;
    ``periodic`` when the columns wrap around the globe."""

    fy: np.ndarray
    fx: np.ndarray
    ny: int
    nx: int
    periodic: bool = False


def area_points(areas: pd.DataFrame, points_per_area: int = 1,
                radius_km: float = 10.0) -> pd.DataFrame:
    """Points to sample per area (AREA, AREA_LAT, AREA_LON; several rows per area allowed):
    each given point, plus, when ``points_per_area`` > 1, ``points_per_area - 1`` points on a
    circle of ``radius_km`` around each area's first point (evenly spaced, starting north)."""
    base = areas[[C.AREA, C.AREA_LAT, C.AREA_LON]]
    if points_per_area <= 1:
        return base.reset_index(drop=True)
    centres = base.drop_duplicates(C.AREA)
    n = points_per_area - 1
    bearings = np.arange(n) * 2 * np.pi / n
    dlat = np.degrees(radius_km / _EARTH_RADIUS_KM) * np.cos(bearings)
    rings = []
    for k in range(n):
        coslat = np.cos(np.radians(centres[C.AREA_LAT].to_numpy()))
        dlon = np.degrees(radius_km / _EARTH_RADIUS_KM) * np.sin(bearings[k]) / coslat
        rings.append(centres.assign(**{C.AREA_LAT: centres[C.AREA_LAT] + dlat[k],
                                       C.AREA_LON: centres[C.AREA_LON] + dlon}))
    return pd.concat([base, *rings], ignore_index=True)


def grid_index(grid: xr.Dataset | xr.DataArray, lat: np.ndarray, lon: np.ndarray) -> GridIndex:
    """Fractional (row, column) of each point (degrees; longitudes in either convention).
    Raises ContractError for points outside the grid."""
    glat = np.asarray(grid[LAT].values, dtype="float64")
    glon = np.asarray(grid[LON].values, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    lon = np.asarray(lon, dtype="float64")
    if glat.ndim == 1:
        index = _regular_index(glat, glon, lat, lon)
    else:
        index = _curvilinear_index(glat, glon, lat, lon)
    outside = ~((index.fy >= -0.5) & (index.fy <= index.ny - 0.5)
                & (index.periodic | ((index.fx >= -0.5) & (index.fx <= index.nx - 0.5))))
    outside |= ~np.isfinite(index.fy) | ~np.isfinite(index.fx)
    if outside.any():
        shown = ", ".join(f"({a:.3f}, {b:.3f})" for a, b in
                          zip(lat[outside][:3], lon[outside][:3], strict=True))
        raise ContractError(
            f"forecast grid {grid.attrs.get('sources', '')}: {int(outside.sum())} of {len(lat)} "
            f"points lie outside the grid (lat {np.nanmin(glat):.2f}..{np.nanmax(glat):.2f}, "
            f"lon {np.nanmin(glon):.2f}..{np.nanmax(glon):.2f}), e.g. {shown}\n"
            "  rule: points_inside_grid"
        )
    return index


def _to_convention(lon: np.ndarray, grid_lon: np.ndarray) -> np.ndarray:
    """Longitudes in the grid's convention: 0–360 when the grid goes past 180°, else −180–180."""
    if np.nanmax(grid_lon) > 180.0:
        return np.mod(lon, 360.0)
    return np.mod(lon + 180.0, 360.0) - 180.0


def _axis_position(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fractional index of values along a monotonic axis, extended linearly past its ends
    (so that ``grid_index`` can tell "half a cell beyond the edge" from "off the grid")."""
    if len(axis) == 1:
        return np.where(np.isclose(values, axis[0]), 0.0, np.nan)
    idx = np.arange(len(axis), dtype="float64")
    if axis[0] > axis[-1]:
        axis, idx = axis[::-1], idx[::-1]
    pos = np.interp(values, axis, idx)
    below, above = values < axis[0], values > axis[-1]
    pos[below] = idx[0] + (values[below] - axis[0]) * (idx[1] - idx[0]) / (axis[1] - axis[0])
    pos[above] = idx[-1] + (values[above] - axis[-1]) * (idx[-1] - idx[-2]) / (
        axis[-1] - axis[-2])
    return pos


def _regular_index(glat: np.ndarray, glon: np.ndarray, lat: np.ndarray,
                   lon: np.ndarray) -> GridIndex:
    ny, nx = len(glat), len(glon)
    lon = _to_convention(lon, glon)
    step = (glon[-1] - glon[0]) / (nx - 1) if nx > 1 else 0.0
    periodic = nx > 1 and math.isclose(abs(step) * nx, 360.0, rel_tol=1e-6)
    fx = np.mod((lon - glon[0]) / step, nx) if periodic else _axis_position(glon, lon)
    return GridIndex(_axis_position(glat, lat), fx, ny, nx, periodic)


def _xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _curvilinear_index(glat: np.ndarray, glon: np.ndarray, lat: np.ndarray,
                       lon: np.ndarray) -> GridIndex:
    """Fractional indices on a grid with 2-D latitude/longitude: a first guess from the
    nearest point of a thinned grid (k-d tree on the unit sphere), then Newton steps that
    invert the grid's bilinear map in a local plane around each point. Points the steps
    cannot reach (off the grid) get NaN."""
    from scipy.spatial import cKDTree

    ny, nx = glat.shape
    stride = max(1, int(math.sqrt(ny * nx / 20_000)))
    sub_lat, sub_lon = glat[::stride, ::stride], glon[::stride, ::stride]
    ok = (np.isfinite(sub_lat) & np.isfinite(sub_lon)).ravel()
    tree = cKDTree(_xyz(sub_lat.ravel()[ok], sub_lon.ravel()[ok]))
    _, k = tree.query(_xyz(lat, lon))
    iy, ix = np.unravel_index(np.flatnonzero(ok)[k], sub_lat.shape)
    fy, fx = (iy * stride).astype("float64"), (ix * stride).astype("float64")
    coslat = np.cos(np.radians(lat))

    def local(yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dlon = np.mod(glon[yy, xx] - lon + 180.0, 360.0) - 180.0
        return dlon * coslat, glat[yy, xx] - lat

    residual = np.full(len(lat), np.inf)
    for _ in range(30):
        y0 = np.clip(np.floor(fy), 0, ny - 2).astype(int)
        x0 = np.clip(np.floor(fx), 0, nx - 2).astype(int)
        ty, tx = fy - y0, fx - x0
        (x00, y00), (x01, y01) = local(y0, x0), local(y0, x0 + 1)
        (x10, y10), (x11, y11) = local(y0 + 1, x0), local(y0 + 1, x0 + 1)
        px = x00 * (1 - ty) * (1 - tx) + x01 * (1 - ty) * tx + x10 * ty * (1 - tx) + x11 * ty * tx
        py = y00 * (1 - ty) * (1 - tx) + y01 * (1 - ty) * tx + y10 * ty * (1 - tx) + y11 * ty * tx
        residual = np.hypot(px, py)  # degrees between the point and where (fy, fx) maps
        dpx_dty = (x10 - x00) * (1 - tx) + (x11 - x01) * tx
        dpx_dtx = (x01 - x00) * (1 - ty) + (x11 - x10) * ty
        dpy_dty = (y10 - y00) * (1 - tx) + (y11 - y01) * tx
        dpy_dtx = (y01 - y00) * (1 - ty) + (y11 - y10) * ty
        det = dpx_dty * dpy_dtx - dpx_dtx * dpy_dty
        with np.errstate(divide="ignore", invalid="ignore"):
            d_ty = (px * dpy_dtx - py * dpx_dtx) / det
            d_tx = (py * dpx_dty - px * dpy_dty) / det
        # at most a few cells per step, so a far first guess walks rather than jumps
        fy = y0 + ty - np.clip(d_ty, -stride, stride)
        fx = x0 + tx - np.clip(d_tx, -stride, stride)
        if np.nanmax(np.abs(np.concatenate([d_ty, d_tx])), initial=0.0) < 1e-10:
            break
    lost = ~(residual < 1e-6)
    return GridIndex(np.where(lost, np.nan, fy), np.where(lost, np.nan, fx), ny, nx, False)


def _sample(values: np.ndarray, index: GridIndex, method: Method) -> np.ndarray:
    """Values (..., ny, nx) at the points: (..., n_points). Bilinear weights are renormalised
    over the corners that have values, so a point beside a masked cell still gets one."""
    if method == "nearest":
        iy = np.clip(np.rint(index.fy), 0, index.ny - 1).astype(int)
        ix = np.rint(index.fx).astype(int)
        ix = np.mod(ix, index.nx) if index.periodic else np.clip(ix, 0, index.nx - 1)
        return values[..., iy, ix]
    if method != "bilinear":
        raise ValueError(f"sampling method must be 'nearest' or 'bilinear', got {method!r}")
    fy = np.clip(index.fy, 0, index.ny - 1)
    y0 = np.clip(np.floor(fy), 0, max(index.ny - 2, 0)).astype(int)
    y1 = np.minimum(y0 + 1, index.ny - 1)
    ty = fy - y0
    if index.periodic:
        x0 = np.mod(np.floor(index.fx), index.nx).astype(int)
        x1 = np.mod(x0 + 1, index.nx)
        tx = index.fx - np.floor(index.fx)
    else:
        fx = np.clip(index.fx, 0, index.nx - 1)
        x0 = np.clip(np.floor(fx), 0, max(index.nx - 2, 0)).astype(int)
        x1 = np.minimum(x0 + 1, index.nx - 1)
        tx = fx - x0
    corners = [(y0, x0, (1 - ty) * (1 - tx)), (y0, x1, (1 - ty) * tx),
               (y1, x0, ty * (1 - tx)), (y1, x1, ty * tx)]
    total = np.zeros(values.shape[:-2] + (len(fy),), dtype="float64")
    weight = np.zeros_like(total)
    for yy, xx, w in corners:
        v = values[..., yy, xx].astype("float64")
        has = np.isfinite(v)
        total += np.where(has, v, 0.0) * w
        weight += has * w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def sample_forecast(
    grid: xr.Dataset,
    areas: pd.DataFrame,
    method: Method = "bilinear",
) -> pd.DataFrame:
    """The canonical forecast frame: one row per (AREA, ISSUE_TS, TS) with LEAD_H (hours ahead,
    float64), ISSUE_TS and TS (UTC), AREA (string) and one float64 column per variable of the
    grid (FC_* columns, product units; NaN where the grid has no value for that step).

    ``areas`` has AREA, AREA_LAT, AREA_LON (degrees; longitudes −180–180 or 0–360); an area
    with several rows is sampled at each point and the points are averaged (see
    ``area_points``). ``method``: "nearest" grid point, or "bilinear" between the four
    surrounding points. Rows are sorted by area, issue time and target time."""
    missing = [c for c in (C.AREA, C.AREA_LAT, C.AREA_LON) if c not in areas.columns]
    if missing:
        raise ContractError(f"areas lack columns {missing}\n  rule: columns_present")
    if areas.empty:
        raise ContractError("no areas to sample the forecast at")
    variables = [str(v) for v in grid.data_vars]
    index = grid_index(grid, areas[C.AREA_LAT].to_numpy(), areas[C.AREA_LON].to_numpy())
    codes, area_ids = pd.factorize(areas[C.AREA].astype("string"), sort=True)
    n_areas = len(area_ids)
    n_issue, n_step = grid.sizes[ISSUE], grid.sizes[STEP]
    out: dict[str, np.ndarray] = {}
    for name in variables:
        at_points = _sample(grid[name].transpose(ISSUE, STEP, "y", "x").values, index, method)
        has = np.isfinite(at_points)
        sums = np.zeros((n_issue, n_step, n_areas))
        counts = np.zeros_like(sums)
        # sum the points of each area: move points first, add at area codes, move back
        np.add.at(sums.transpose(2, 0, 1), codes, np.where(has, at_points, 0.0).transpose(2, 0, 1))
        np.add.at(counts.transpose(2, 0, 1), codes, has.transpose(2, 0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / counts, np.nan)
        out[name] = mean.transpose(2, 0, 1).ravel()  # (area, issue, step)
    # grid times are naive UTC (cfgrib, CF decoding)
    issue = np.asarray(grid[ISSUE].values, dtype="datetime64[us]")
    lead = np.asarray(grid[STEP].values, dtype="timedelta64[us]")
    issue_rows = np.repeat(np.tile(issue, n_areas), n_step)
    lead_rows = np.tile(lead, n_areas * n_issue)
    frame = pd.DataFrame({
        C.AREA: pd.array(np.repeat(np.asarray(area_ids), n_issue * n_step), dtype="string"),
        C.ISSUE_TS: pd.DatetimeIndex(issue_rows).tz_localize("UTC"),
        C.TS: pd.DatetimeIndex(issue_rows + lead_rows).tz_localize("UTC"),
        C.LEAD_H: lead_rows / np.timedelta64(1, "h"),
    })
    for name in variables:
        frame[name] = out[name].astype("float64")
    return frame.sort_values([C.AREA, C.ISSUE_TS, C.TS], kind="stable").reset_index(drop=True)


def forecast_for_areas(grid: xr.Dataset, areas: pd.DataFrame, cfg: ForecastSettings,
                       ) -> pd.DataFrame:
    """``sample_forecast`` with the points and method of ``cfg``."""
    points = area_points(areas, cfg.points_per_area, cfg.point_radius_km)
    return sample_forecast(grid, points, cfg.method)


__all__ = [
    "DEFAULT_VARIABLES", "GridIndex", "GridVariable", "area_points",
    "convert_units", "forecast_for_areas", "grid_index", "load_forecast",
    "read_forecast_file", "read_forecast_grids", "sample_forecast", "variables_from_settings",
]
