"""Areas: the unit that is forecast (``area_id``), chosen in config.

``county``: the 5-digit county FIPS, with the county's public customer count as customers served.
``cell``: a square latitude/longitude cell of ``cell_size_deg``; customers served are the
county counts shared out over the county's cells in proportion to where its outages happened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from configs.settings import AreaSettings, CustomerSettings
from features import columns as C
from features.contracts import ContractError

log = logging.getLogger(__name__)


SERVED_SOURCE = "customers_served_source"  # "counts", or "outage history" (a lower bound)


def _estimate_missing_served(
    areas: pd.DataFrame, counted: pd.DataFrame, known: set[str]
) -> pd.DataFrame:
    """Areas whose county has no customer count (absent from the counts file, e.g. Norton
    city VA in MCC.csv, or its row quarantined) get a lower bound instead: the most customers
    their outages affected on one day. Logged, and marked in SERVED_SOURCE."""
    missing = ~areas[C.EV_COUNTY].isin(known)
    out = areas.assign(**{SERVED_SOURCE: np.where(missing, "outage history", "counts")})
    if missing.any():
        daily = counted.assign(_day=counted[C.EV_START].dt.floor("D")).groupby(
            [C.AREA, "_day"])[C.EV_CUSTOMERS].sum().groupby(level=0).max()
        lower = out[C.AREA].map(daily).fillna(1).astype("int64")
        out[C.CUSTOMERS_SERVED] = np.where(missing, lower, out[C.CUSTOMERS_SERVED])
        log.warning("no customer count for areas %s; customers served estimated from their "
                    "outage history (a lower bound)", sorted(out.loc[missing, C.AREA]))
    return out


def read_counties(path: Path) -> pd.DataFrame:
    """County names and centroids (degrees) from the GeoJSON of US counties (Latin-1)."""
    if not path.is_file():
        raise ContractError(f"input file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="latin-1"))
        return pd.DataFrame([_county_row(feat) for feat in doc["features"]])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ContractError(
            f"{path}: not a GeoJSON FeatureCollection of counties with STATE, COUNTY and NAME "
            f"properties and polygon geometry ({type(exc).__name__}: {exc})"
        ) from exc


def _county_row(feat: dict) -> dict:
    props = feat["properties"]
    ring = np.asarray(_outer_ring(feat["geometry"]), dtype="float64")
    return {
        C.EV_COUNTY: props["STATE"] + props["COUNTY"],
        C.AREA_NAME: f"{props['NAME']} {props.get('LSAD', '')}".strip(),
        C.AREA_LAT: float(ring[:, 1].mean()),
        C.AREA_LON: float(ring[:, 0].mean()),
    }


def _outer_ring(geometry: dict) -> list:
    if geometry["type"] == "Polygon":
        return geometry["coordinates"][0]
    # MultiPolygon: the largest outer ring stands for the county
    return max((poly[0] for poly in geometry["coordinates"]), key=len)


@dataclass(frozen=True)
class AreaShape:
    """Outline of one area for maps: its polygons, each a list of rings of (lon, lat) degrees
    (the first ring outer, the others holes)."""

    area_id: str
    name: str
    polygons: tuple[tuple[tuple[tuple[float, float], ...], ...], ...]


def read_area_shapes(path: Path, area_ids: Iterable[str]) -> dict[str, AreaShape]:
    """Outlines of the given areas: a county id (5-digit FIPS) gets its county's polygons
    from the GeoJSON of US counties, a cell id (``cell:<size>:<i>:<j>``) its square. Ids
    found in neither are left out."""
    wanted = {str(a) for a in area_ids}
    shapes: dict[str, AreaShape] = {}
    for area in wanted:
        if area.startswith("cell:"):
            _, size, i, j = area.split(":")
            lat0, lon0, d = int(i) * float(size), int(j) * float(size), float(size)
            ring = ((lon0, lat0), (lon0 + d, lat0), (lon0 + d, lat0 + d), (lon0, lat0 + d))
            shapes[area] = AreaShape(area, area, ((ring,),))
    if wanted - shapes.keys():
        if not path.is_file():
            raise ContractError(f"input file not found: {path}")
        doc = json.loads(path.read_text(encoding="latin-1"))
        for feat in doc["features"]:
            props = feat["properties"]
            county = props["STATE"] + props["COUNTY"]
            if county not in wanted:
                continue
            geometry = feat["geometry"]
            polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                        else geometry["coordinates"])
            shapes[county] = AreaShape(
                county, f"{props['NAME']} {props.get('LSAD', '')}".strip(),
                tuple(tuple(tuple((float(x), float(y)) for x, y, *_ in ring) for ring in poly)
                      for poly in polygons))
    return shapes


def cell_id(lat: pd.Series, lon: pd.Series, size_deg: float) -> pd.Series:
    """Stable id of the lat/lon cell holding each point, e.g. ``cell:0.25:152:-340``."""
    i = np.floor(lat.to_numpy() / size_deg).astype("int64")
    j = np.floor(lon.to_numpy() / size_deg).astype("int64")
    return pd.Series([f"cell:{size_deg:g}:{a}:{b}" for a, b in zip(i, j, strict=True)],
                     index=lat.index, dtype="string")


def assign_areas(events: pd.DataFrame, cfg: AreaSettings) -> pd.DataFrame:
    """Events with their AREA column (new frame)."""
    if cfg.kind == "county":
        area = events[C.EV_COUNTY].astype("string")
    else:
        area = cell_id(events[C.EV_LAT], events[C.EV_LON], cfg.cell_size_deg)
    return events.assign(**{C.AREA: area})


def build_areas(
    events: pd.DataFrame,
    counties: pd.DataFrame,
    counts: pd.DataFrame,
    cfg: AreaSettings,
    customers_cfg: CustomerSettings,
) -> pd.DataFrame:
    """The area table: AREA, AREA_NAME, AREA_LAT, AREA_LON, CUSTOMERS_SERVED, TIMEZONE,
    ``n_events`` (unplanned, de-duplicated events in the history given).

    ``events`` must carry AREA (see :func:`assign_areas`); ``counts`` has EV_COUNTY and
    CUSTOMERS_SERVED. Areas outside ``cfg.states`` or with fewer than ``cfg.min_events``
    events are left out.
    """
    counted = events[~events[C.EV_PLANNED] & events[C.EV_DUPLICATE_OF].isna()]
    if cfg.states:
        counted = counted[counted[C.EV_COUNTY].str[:2].isin(cfg.states)]
    if counted.empty:
        raise ContractError(
            "no unplanned outage events to forecast from (all planned, re-issued, or outside "
            f"areas.states {list(cfg.states)})"
        )
    per_area = (
        counted.groupby([C.AREA, C.EV_COUNTY]).size().rename("n").reset_index()
    )
    served = counts.set_index(C.EV_COUNTY)[C.CUSTOMERS_SERVED]
    county_total = per_area.groupby(C.EV_COUNTY)["n"].transform("sum")
    per_area["share"] = per_area["n"] / county_total
    per_area[C.CUSTOMERS_SERVED] = per_area[C.EV_COUNTY].map(served).fillna(0) * per_area["share"]
    main_county = per_area.sort_values("n", ascending=False).drop_duplicates(C.AREA)
    areas = per_area.groupby(C.AREA).agg(
        n_events=("n", "sum"), **{C.CUSTOMERS_SERVED: (C.CUSTOMERS_SERVED, "sum")}
    )
    areas[C.EV_COUNTY] = main_county.set_index(C.AREA)[C.EV_COUNTY]
    areas = areas.reset_index()
    names = counties.set_index(C.EV_COUNTY)
    if cfg.kind == "county":
        areas[C.AREA_NAME] = areas[C.EV_COUNTY].map(names[C.AREA_NAME]).fillna(areas[C.AREA])
        areas[C.AREA_LAT] = areas[C.EV_COUNTY].map(names[C.AREA_LAT])
        areas[C.AREA_LON] = areas[C.EV_COUNTY].map(names[C.AREA_LON])
    else:
        centre = counted.groupby(C.AREA)[[C.EV_LAT, C.EV_LON]].mean()
        areas[C.AREA_LAT] = areas[C.AREA].map(centre[C.EV_LAT])
        areas[C.AREA_LON] = areas[C.AREA].map(centre[C.EV_LON])
        county_name = areas[C.EV_COUNTY].map(names[C.AREA_NAME]).fillna("")
        areas[C.AREA_NAME] = county_name + " (" + areas[C.AREA].astype(str) + ")"
    areas[C.CUSTOMERS_SERVED] = areas[C.CUSTOMERS_SERVED].round().astype("int64")
    # a plain lookup: Series.map({}) on a "string" column gives all-NaN doubles that reject
    # fillna with a string, so an empty timezone_by_area used to crash here
    tz_by_county, default_tz = customers_cfg.timezone_by_area, customers_cfg.default_timezone
    areas[C.TIMEZONE] = [tz_by_county.get(str(c), default_tz) for c in areas[C.EV_COUNTY]]
    areas = areas[areas["n_events"] >= cfg.min_events]
    areas = _estimate_missing_served(areas, counted, set(counts[C.EV_COUNTY]))
    cols = [C.AREA, C.AREA_NAME, C.AREA_LAT, C.AREA_LON, C.CUSTOMERS_SERVED, C.TIMEZONE,
            C.EV_COUNTY, "n_events", SERVED_SOURCE]
    return areas[cols].sort_values(C.AREA).reset_index(drop=True)
