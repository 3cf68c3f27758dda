"""Outage history: a generic event schema and the LG&E/KU outage-map adapter.

Generic schema (one row per physical outage record, see ``features.columns``): EV_ID, EV_SOURCE_ID,
EV_START and EV_END (UTC), EV_LAT/EV_LON (degrees WGS84), EV_COUNTY (5-digit FIPS or None),
EV_CUSTOMERS (count; EV_CUSTOMERS_FLOOR marks the map's "1-4" floor), EV_CAUSE, EV_PLANNED,
EV_CLUSTER, EV_N_OUTAGES (outages in a map cluster) and EV_DUPLICATE_OF (a re-issued id of an
earlier record; such rows are kept for audit but never counted twice).

The LG&E/KU map was scraped every ~15 min and committed only on change, so quiet nights show
6-12 h without a scrape; longer gaps are scraper outages and the hours inside them are
unobserved (see :func:`observed_hours`).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from configs.settings import OutageSettings
from features import columns as C
from features.contracts import ContractError, ContractResult, Rule, Suite, check

log = logging.getLogger(__name__)

ISO_HINT = "times must be ISO-8601 in UTC, e.g. 2021-03-01T12:00:00Z"

LGEKU_EVENTS_SUITE = Suite(
    name="lgeku_events",
    required_columns=(
        "record_key",
        "is_cluster",
        "reported_start_time",
        "reported_start_time_last",
        "first_seen_utc",
        "removed_seen_utc",
        "cause_first",
        "cause_last",
        "cust_affected_max",
        "number_out_max",
        "lat",
        "lon",
        "county_fips_derived",
    ),
    rules=(
        Rule("record_key", "not_null", hint="every record needs its outage id or cluster key"),
        Rule("record_key", "unique", hint="the events file has one row per record_key"),
        Rule("_first_seen", "not_null", hint=ISO_HINT + " (first_seen_utc)"),
        Rule("_start_any", "not_null", hint=ISO_HINT + " (reported_start_time)"),
        Rule("lat", "between", min=-90, max=90, hint="latitude in degrees WGS84"),
        Rule("lon", "between", min=-180, max=180, hint="longitude in degrees WGS84"),
        Rule("lat", "not_null", hint="records need a position to be placed in an area"),
        Rule("cust_affected_max", "between", min=0, max=2_000_000, hint="customers is a count"),
        Rule("_end_ok", "in_set", values=(True,), hint="restoration seen before the outage began"),
        Rule("_end_parsed", "in_set", values=(True,), hint=ISO_HINT + " (removed_seen_utc)"),
    ),
)

LGEKU_SNAPSHOTS_SUITE = Suite(
    name="lgeku_snapshots",
    required_columns=("scrape_time_utc", "parse_ok"),
    rules=(
        Rule("_scrape_time", "not_null", hint=ISO_HINT + " (scrape_time_utc)"),
        Rule("parse_ok", "in_set", values=(0, 1), hint="parse_ok is 0 or 1"),
    ),
)


@dataclass(frozen=True)
class OutageHistory:
    """Events in the generic schema, plus the hours the source could see."""

    events: pd.DataFrame
    scrape_times: pd.Series  # UTC times of successful scrapes, sorted
    contracts: tuple[ContractResult, ...]
    source_files: tuple[Path, ...]

    @property
    def start(self) -> pd.Timestamp:
        return self.scrape_times.iloc[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.scrape_times.iloc[-1]


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")


def _read_csv(path: Path, **kwargs: object) -> pd.DataFrame:
    if not path.is_file():
        raise ContractError(f"input file not found: {path} (check FOREWARN_DATA_DIR / the profile)")
    try:
        return pd.read_csv(path, low_memory=False, **kwargs)
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError) as exc:
        raise ContractError(f"cannot read {path}: {exc}") from exc


def read_lgeku_events(
    path: Path, cfg: OutageSettings, quarantine_dir: Path | None = None
) -> tuple[pd.DataFrame, ContractResult]:
    """Read the LG&E/KU events file, check its contract and map it to the generic schema."""
    raw = _read_csv(
        path, dtype={"record_key": "string", "outage_id": "string", "is_cluster": "string"}
    )
    suite = replace(LGEKU_EVENTS_SUITE, max_quarantine_share=cfg.max_quarantine_share)
    missing = [c for c in ("reported_start_time", "reported_start_time_last", "first_seen_utc",
                           "removed_seen_utc") if c not in raw.columns]
    if missing:  # let the contract name every missing file column at once (not the derived ones)
        check(raw, replace(suite, rules=()), source=path, quarantine_dir=quarantine_dir)
    starts = pd.concat(
        [_utc(raw["reported_start_time"]), _utc(raw["reported_start_time_last"]),
         _utc(raw["first_seen_utc"])],
        axis=1,
    )
    checked = raw.assign(
        _first_seen=_utc(raw["first_seen_utc"]),
        _start_any=_utc(raw["reported_start_time"]).fillna(_utc(raw["reported_start_time_last"])),
        _start=starts.min(axis=1),
        _end=_utc(raw["removed_seen_utc"]),
    )
    checked["_end_ok"] = ~(checked["_end"] < checked["_start"])
    checked["_end_parsed"] = raw["removed_seen_utc"].isna() | checked["_end"].notna()
    good, result = check(checked, suite, source=path, quarantine_dir=quarantine_dir)
    return lgeku_to_generic(good, cfg), result


def lgeku_to_generic(frame: pd.DataFrame, cfg: OutageSettings) -> pd.DataFrame:
    """Map checked LG&E/KU rows (with the parsed ``_start``/``_end``) to the generic schema.

    Quirks handled: the start is the earliest of the reported starts and the first sighting
    (the utility sometimes revised a start to after the outage was already on the map);
    ``Scheduled maintenance`` (first or last cause) is planned; ``cust_affected`` of the floor
    value means "1-4"; clusters count ``number_out_max`` outages; re-issued ids at the same
    point starting within ``duplicate_window_min`` are marked as duplicates of the first.
    """
    planned = frame["cause_last"].isin(cfg.planned_causes) | frame["cause_first"].isin(
        cfg.planned_causes
    )
    cause = frame["cause_last"].where(
        frame["cause_last"].notna() & (frame["cause_last"] != "Working to determine cause"),
        frame["cause_first"],
    )
    customers = frame["cust_affected_max"].fillna(cfg.small_outage_floor).astype("int64")
    county = frame["county_fips_derived"]
    out = pd.DataFrame(
        {
            C.EV_ID: "lgeku:" + frame["record_key"].astype(str),
            C.EV_SOURCE_ID: frame["record_key"].astype(str),
            C.EV_START: frame["_start"],
            C.EV_END: frame["_end"],
            C.EV_LAT: frame["lat"].astype("float64"),
            C.EV_LON: frame["lon"].astype("float64"),
            C.EV_COUNTY: county.astype("Int64").astype("string").str.zfill(5),
            C.EV_CUSTOMERS: customers,
            C.EV_CUSTOMERS_FLOOR: customers <= cfg.small_outage_floor,
            C.EV_CAUSE: cause.fillna("unknown").astype(str),
            C.EV_PLANNED: planned.to_numpy(),
            C.EV_CLUSTER: frame["is_cluster"].fillna("False").str.lower().eq("true").to_numpy(),
            C.EV_N_OUTAGES: frame["number_out_max"].fillna(1).clip(lower=1).astype("int64"),
        }
    )
    out = out.assign(**_first_report(frame, customers))
    out[C.EV_DUPLICATE_OF] = mark_reissued(out, cfg.duplicate_window_min)
    return out.sort_values([C.EV_START, C.EV_ID], kind="stable").reset_index(drop=True)


def _first_report(frame: pd.DataFrame, customers: pd.Series) -> dict[str, pd.Series]:
    """What the map said when the record first appeared, and how exactly its end is known
    (``removal_gap_min``: minutes between the last sighting and the first scrape without
    it; ~15 while the scraper ran, hours to weeks across a scraper outage)."""
    def optional(name: str) -> pd.Series:
        return frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)

    etr_first = optional("etr_first").where(optional("etr_first") != "ETR-NULL")
    etr_last = optional("etr_last").where(optional("etr_last") != "ETR-NULL")
    first_customers = optional("cust_affected_first").fillna(customers).astype("int64")
    return {
        C.EV_FIRST_SEEN: frame["_first_seen"].to_numpy(),
        C.EV_CAUSE_FIRST: frame["cause_first"].fillna("unknown").astype(str).to_numpy(),
        C.EV_CUSTOMERS_FIRST: first_customers.to_numpy(),
        C.EV_ETR_FIRST: _utc(etr_first).to_numpy(),
        C.EV_ETR_LAST: _utc(etr_last).to_numpy(),
        C.EV_END_UNCERTAINTY_MIN: optional("removal_gap_min").astype("float64").to_numpy(),
    }


def mark_reissued(events: pd.DataFrame, window_min: float) -> pd.Series:
    """For each event, the EV_ID of an earlier record at the same point (5 decimals, ~1 m)
    that started at most ``window_min`` minutes before it, else None: the utility re-issues
    ids, so one physical incident can appear as several records."""
    key = events[C.EV_LAT].round(5).astype(str) + "," + events[C.EV_LON].round(5).astype(str)
    order = events.assign(_key=key).sort_values(["_key", C.EV_START, C.EV_ID], kind="stable")
    gap_min = order.groupby("_key")[C.EV_START].diff().dt.total_seconds() / 60
    is_dup = gap_min.le(window_min).to_numpy()
    # chain to the first record of the run of duplicates
    run_start = np.where(~is_dup, np.arange(len(order)), 0)
    run_start = np.maximum.accumulate(run_start)
    first_ids = order[C.EV_ID].to_numpy()[run_start]
    dup_of = pd.Series(np.where(is_dup, first_ids, None), index=order.index, dtype="object")
    return dup_of.reindex(events.index)


def read_scrape_times(
    path: Path,
    quarantine_dir: Path | None = None,
    max_quarantine_share: float = LGEKU_SNAPSHOTS_SUITE.max_quarantine_share,
) -> tuple[pd.Series, ContractResult]:
    """Times (UTC, sorted) at which the scraper read the map successfully."""
    suite = replace(LGEKU_SNAPSHOTS_SUITE, max_quarantine_share=max_quarantine_share)
    raw = _read_csv(path, dtype={"source_commit": "string"})
    if "scrape_time_utc" in raw.columns:
        raw = raw.assign(_scrape_time=_utc(raw["scrape_time_utc"]))
    good, result = check(raw, suite, source=path, quarantine_dir=quarantine_dir)
    times = good.loc[good["parse_ok"] == 1, "_scrape_time"].sort_values(ignore_index=True)
    if times.empty:
        raise ContractError(f"{path}: no successful scrape (parse_ok == 1) in the file")
    return times, result


def load_outage_history(
    cfg: OutageSettings, data_dir: Path, quarantine_dir: Path | None = None
) -> OutageHistory:
    """Read the configured outage source (events and scraper coverage)."""
    events_path = data_dir / cfg.events_file
    snaps_path = data_dir / cfg.snapshots_file
    events, ev_result = read_lgeku_events(events_path, cfg, quarantine_dir)
    scrape_times, snap_result = read_scrape_times(
        snaps_path, quarantine_dir, cfg.max_quarantine_share
    )
    log.info(
        "outages: %d events (%d planned, %d re-issued), %d scrapes",
        len(events), int(events[C.EV_PLANNED].sum()), int(events[C.EV_DUPLICATE_OF].notna().sum()),
        len(scrape_times),
    )
    return OutageHistory(events, scrape_times, (ev_result, snap_result), (events_path, snaps_path))


def observed_hours(
    scrape_times: pd.Series, start: pd.Timestamp, end: pd.Timestamp, max_gap_h: float
) -> pd.Series:
    """Boolean per UTC hour in [start, end): True where the source was watching.

    An hour is unobserved when any part of it lies inside a gap of more than ``max_gap_h``
    hours between successful scrapes, before the first scrape or after the last one.
    """
    hours = pd.date_range(start, end, freq="h", inclusive="left", tz="UTC")
    observed = pd.Series(True, index=hours)
    times = scrape_times.sort_values(ignore_index=True)
    gap_h = times.diff().dt.total_seconds() / 3600
    blind = [(start - pd.Timedelta(hours=1), times.iloc[0]), (times.iloc[-1], end)]
    for i in np.flatnonzero(gap_h.to_numpy() > max_gap_h):
        blind.append((times.iloc[i - 1], times.iloc[i]))
    for lo, hi in blind:
        # hours overlapping the open interval (lo, hi)
        observed[(hours + pd.Timedelta(hours=1) > lo) & (hours < hi)] = False
    observed.index.name = C.TS
    return observed
