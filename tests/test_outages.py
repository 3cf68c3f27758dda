"""The LG&E/KU outage adapter and scraper coverage: unit tests on tiny frames written at test
time, and contract tests on the real events and snapshots files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import OutageSettings
from features import columns as C
from features.contracts import ContractError
from features.outages import observed_hours, read_lgeku_events, read_scrape_times

LGEKU = Path("lgeku_outages_kentucky")
EVENTS_FILE = LGEKU / "lgeku_outage_events_2019-12_2023-12.csv.gz"
SNAPSHOTS_FILE = LGEKU / "lgeku_scrape_snapshots_2019-12_2023-12.csv.gz"

# Every column of the real events file, in its order (README section 1a).
EVENT_COLUMNS = (
    "record_key", "outage_id", "is_cluster", "reported_start_time", "reported_start_time_last",
    "first_seen_utc", "last_seen_utc", "removed_seen_utc", "removal_gap_min",
    "still_open_at_archive_end", "n_appearances", "n_removals", "n_updates", "cause_first",
    "cause_last", "cust_affected_first", "cust_affected_max", "cust_affected_last",
    "number_out_max", "etr_first", "etr_last", "crew_status_last", "comments_last", "lat", "lon",
    "county_fips_derived", "county_name_derived",
)


def _cfg(**overrides: object) -> OutageSettings:
    return OutageSettings(events_file=str(EVENTS_FILE), snapshots_file=str(SNAPSHOTS_FILE),
                          **overrides)


def _row(key: str, start: str = "2021-06-01T12:00:00Z", **fields: object) -> dict:
    """One ordinary, valid record (an unplanned single outage in Fayette County)."""
    row: dict = {c: None for c in EVENT_COLUMNS}
    row.update(
        record_key=key, outage_id=key, is_cluster="False",
        reported_start_time=start, reported_start_time_last=start,
        first_seen_utc=start, last_seen_utc="2021-06-01T13:00:00Z",
        removed_seen_utc="2021-06-01T13:15:00Z", removal_gap_min=15.0,
        still_open_at_archive_end=False, n_appearances=1, n_removals=1, n_updates=1,
        cause_first="Weather-related", cause_last="Weather-related",
        cust_affected_first=12, cust_affected_max=12, cust_affected_last=12, number_out_max=1,
        etr_first="ETR-NULL", etr_last="ETR-NULL", lat=38.04, lon=-84.46,
        county_fips_derived=21067, county_name_derived="Fayette",
    )
    # spread the filler rows apart so that they are never re-issues of each other
    row["lat"] += 0.01 * (sum(map(ord, key)) % 97)
    row.update(fields)
    return row


def _write(tmp_path: Path, rows: list[dict], drop: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "events.csv.gz"
    pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).drop(columns=list(drop)).to_csv(
        path, index=False)
    return path


def _read(tmp_path: Path, rows: list[dict], **cfg: object) -> pd.DataFrame:
    events, _ = read_lgeku_events(_write(tmp_path, rows), _cfg(**cfg))
    return events.set_index(C.EV_SOURCE_ID)


def _filler(n: int) -> list[dict]:
    return [_row(f"ok{i}") for i in range(n)]


# --- the adapter on tiny frames -----------------------------------------------------------------


def test_planned_when_first_or_last_cause_is_scheduled_maintenance(tmp_path: Path) -> None:
    ev = _read(tmp_path, [
        _row("first", cause_first="Scheduled maintenance", cause_last="Weather-related"),
        _row("last", cause_first="Working to determine cause",
             cause_last="Scheduled maintenance"),
        _row("storm"),
        _row("unknown", cause_first=None, cause_last=None),
        _row("tbd", cause_first="Trees or limbs in lines",
             cause_last="Working to determine cause"),
    ])
    assert ev[C.EV_PLANNED].to_dict() == {
        "first": True, "last": True, "storm": False, "unknown": False, "tbd": False}
    # the cause keeps the informative text over the placeholder
    assert ev.loc["tbd", C.EV_CAUSE] == "Trees or limbs in lines"
    assert ev.loc["last", C.EV_CAUSE] == "Scheduled maintenance"
    assert ev.loc["unknown", C.EV_CAUSE] == "unknown"
    assert ev.loc["first", C.EV_ID] == "lgeku:first"


def test_start_is_the_earliest_of_reported_starts_and_first_sighting(tmp_path: Path) -> None:
    ev = _read(tmp_path, [
        # last reported start is the earliest
        _row("earlier_last", reported_start_time="2021-06-01T10:00:00Z",
             reported_start_time_last="2021-06-01T09:30:00.250Z",
             first_seen_utc="2021-06-01T10:15:00Z"),
        # utility revised the start to after the record was already on the map: pulled back
        _row("revised", reported_start_time="2021-06-01T12:00Z",
             reported_start_time_last="2021-06-01T12:30:00Z",
             first_seen_utc="2021-06-01T11:00:07Z"),
        # ordinary: reported start before the first scrape that saw it
        _row("plain", reported_start_time="2021-06-01T08:00:00Z",
             reported_start_time_last="2021-06-01T08:00:00Z",
             first_seen_utc="2021-06-01T08:12:00Z", removed_seen_utc="2021-06-01T09:00:00Z"),
    ])
    ts = pd.Timestamp
    assert ev.loc["earlier_last", C.EV_START] == ts("2021-06-01T09:30:00.250Z")
    assert ev.loc["revised", C.EV_START] == ts("2021-06-01T11:00:07Z")
    assert ev.loc["plain", C.EV_START] == ts("2021-06-01T08:00:00Z")
    assert ev.loc["plain", C.EV_END] == ts("2021-06-01T09:00:00Z")
    assert str(ev[C.EV_START].dt.tz) == "UTC"


def test_floor_flag_clusters_and_county(tmp_path: Path) -> None:
    ev = _read(tmp_path, [
        _row("four", cust_affected_max=4),
        _row("three", cust_affected_max=3),
        _row("five", cust_affected_max=5),
        _row("none", cust_affected_max=None),
        _row("cluster", is_cluster="True", number_out_max=7, cust_affected_max=60),
        _row("old", is_cluster=None, number_out_max=None, county_fips_derived=1001),
    ])
    assert ev[C.EV_CUSTOMERS_FLOOR].to_dict() == {
        "four": True, "three": True, "five": False, "none": True, "cluster": False,
        "old": False}
    assert ev.loc["none", C.EV_CUSTOMERS] == 4  # missing count -> the floor value
    assert ev.loc["cluster", C.EV_N_OUTAGES] == 7
    assert ev.loc["five", C.EV_N_OUTAGES] == 1
    assert ev.loc["old", C.EV_N_OUTAGES] == 1  # missing -> one outage
    assert ev[C.EV_CLUSTER].to_dict() == {
        "four": False, "three": False, "five": False, "none": False, "cluster": True,
        "old": False}
    assert ev.loc["old", C.EV_COUNTY] == "01001"  # zero-padded FIPS
    assert ev.loc["five", C.EV_COUNTY] == "21067"


def test_reissued_ids_chain_to_the_first_record_and_later_records_are_kept(
    tmp_path: Path,
) -> None:
    def at(key: str, t: str, lat: float = 37.5) -> dict:
        return _row(key, start=t, lat=lat, lon=-85.0, removed_seen_utc="2021-06-02T00:00:00Z")

    ev = _read(tmp_path, [
        at("b", "2021-06-01T10:20:00Z"),   # 20 min after a
        at("a", "2021-06-01T10:00:00Z"),
        at("c", "2021-06-01T10:45:00Z"),   # 25 min after b, 45 after a: still a's chain
        at("d", "2021-06-01T12:45:00Z"),   # 2 h after c: a new incident
        at("e", "2021-06-01T13:05:00Z"),   # 20 min after d
        at("f", "2021-06-01T10:05:00Z", lat=37.501),  # ~100 m away: another place
    ], duplicate_window_min=30)
    assert len(ev) == 6  # re-issues are kept for audit
    assert ev[C.EV_DUPLICATE_OF].where(ev[C.EV_DUPLICATE_OF].notna(), None).to_dict() == {
        "a": None, "b": "lgeku:a", "c": "lgeku:a", "d": None, "e": "lgeku:d", "f": None}


def test_duplicate_window_comes_from_settings(tmp_path: Path) -> None:
    rows = [_row("a", lat=37.5, lon=-85.0), _row("b", lat=37.5, lon=-85.0,
                                                start="2021-06-01T12:20:00Z")]
    assert _read(tmp_path, rows, duplicate_window_min=30).loc["b", C.EV_DUPLICATE_OF] == "lgeku:a"
    assert pd.isna(_read(tmp_path, rows, duplicate_window_min=30).loc["a", C.EV_DUPLICATE_OF])
    assert pd.isna(_read(tmp_path, rows, duplicate_window_min=10).loc["b", C.EV_DUPLICATE_OF])


def test_end_before_start_is_quarantined(tmp_path: Path) -> None:
    bad = _row("backwards", reported_start_time="2021-06-01T12:00:00Z",
               first_seen_utc="2021-06-01T12:10:00Z", removed_seen_utc="2021-06-01T11:00:00Z")
    # restored at 11:45 but first seen at 11:40 with a later *reported* start: kept, because the
    # start is pulled back to the first sighting
    ok = _row("revised", reported_start_time="2021-06-01T12:00:00Z",
              first_seen_utc="2021-06-01T11:40:00Z", removed_seen_utc="2021-06-01T11:45:00Z")
    qdir = tmp_path / "quarantine"
    events, result = read_lgeku_events(
        _write(tmp_path, [*_filler(20), bad, ok]), _cfg(), quarantine_dir=qdir)
    assert "backwards" not in set(events[C.EV_SOURCE_ID])
    assert "revised" in set(events[C.EV_SOURCE_ID])
    assert (result.rows_in, result.rows_quarantined) == (22, 1)
    [failure] = result.failures
    assert failure["column"] == "_end_ok"
    assert "restoration seen before the outage began" in failure["hint"]
    q = pd.read_csv(qdir / "lgeku_events.csv")
    assert list(q["record_key"]) == ["backwards"]
    assert list(q["_failed_rules"]) == ["_end_ok:values_in_set"]


def test_unparseable_end_is_quarantined_but_a_missing_end_is_still_open(tmp_path: Path) -> None:
    garbled = _row("garbled", removed_seen_utc="yesterday-ish")
    open_ = _row("open", removed_seen_utc=None)
    events, result = read_lgeku_events(
        _write(tmp_path, [*_filler(30), garbled, open_]), _cfg(), quarantine_dir=tmp_path / "q")
    assert "garbled" not in set(events[C.EV_SOURCE_ID])
    still_open = events[events[C.EV_SOURCE_ID] == "open"]
    assert len(still_open) == 1 and still_open[C.EV_END].isna().all()
    assert [f["column"] for f in result.failures] == ["_end_parsed"]


def test_too_many_quarantined_rows_stop_the_run_at_the_configured_share(tmp_path: Path) -> None:
    bad = _row("backwards", removed_seen_utc="2021-06-01T11:00:00Z")
    path = _write(tmp_path, [*_filler(9), bad])  # 10 % set aside
    with pytest.raises(ContractError) as err:
        read_lgeku_events(path, _cfg())  # default share 5 %
    assert "1 of 10 rows (10.0%) were set aside" in str(err.value)
    events, result = read_lgeku_events(path, _cfg(max_quarantine_share=0.2))
    assert len(events) == 9
    assert result.rows_quarantined == 1


def test_unparseable_times_are_quarantined_naming_the_column(tmp_path: Path) -> None:
    rows = [
        *_filler(40),
        _row("no_start", reported_start_time="yesterday", reported_start_time_last="soon"),
        _row("no_first_seen", first_seen_utc="2021-13-45T99:00:00Z"),
        # one bad reported start is fine while the last reported start parses
        _row("one_bad", reported_start_time="n/a",
             reported_start_time_last="2021-06-01T11:30:00Z"),
    ]
    events, result = read_lgeku_events(_write(tmp_path, rows), _cfg())
    kept = events.set_index(C.EV_SOURCE_ID)
    assert {"no_start", "no_first_seen"}.isdisjoint(kept.index)
    assert kept.loc["one_bad", C.EV_START] == pd.Timestamp("2021-06-01T11:30:00Z")
    assert result.rows_quarantined == 2
    by_column = {f["column"]: f for f in result.failures}
    assert set(by_column) == {"_start_any", "_first_seen"}
    assert "(reported_start_time)" in by_column["_start_any"]["hint"]
    assert "(first_seen_utc)" in by_column["_first_seen"]["hint"]
    # the offending raw value is shown next to the parsed one
    assert by_column["_start_any"]["examples"][0]["reported_start_time"] == "yesterday"


def test_unparseable_times_in_most_rows_raise_with_file_column_and_hint(tmp_path: Path) -> None:
    rows = [_row(f"r{i}", reported_start_time="01/06/2021 12:00 PM",
                 reported_start_time_last="01/06/2021 12:00 PM",
                 first_seen_utc="01/06/2021 12:05 PM") for i in range(8)] + _filler(2)
    path = _write(tmp_path, rows)
    with pytest.raises(ContractError) as err:
        read_lgeku_events(path, _cfg())
    message = str(err.value)
    assert str(path) in message
    assert "column '_first_seen'" in message and "8 of 10 rows fail" in message
    assert "ISO-8601" in message and "(first_seen_utc)" in message
    assert err.value.result is not None and err.value.result.rows_quarantined == 8


@pytest.mark.parametrize("column", ["first_seen_utc", "cause_last", "county_fips_derived"])
def test_missing_column_raises_naming_file_and_column(tmp_path: Path, column: str) -> None:
    path = _write(tmp_path, _filler(3), drop=(column,))
    with pytest.raises(ContractError) as err:
        read_lgeku_events(path, _cfg())
    message = str(err.value)
    assert str(path) in message
    assert f"missing columns: '{column}'" in message
    assert err.value.result is not None
    assert err.value.result.failures[0]["missing"] == [column]


def test_missing_file_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "events.csv.gz"
    with pytest.raises(ContractError, match=r"input file not found: .*nowhere/events\.csv\.gz"):
        read_lgeku_events(path, _cfg())
    with pytest.raises(ContractError, match="input file not found"):
        read_scrape_times(tmp_path / "snapshots.csv.gz")


def test_scrape_times_keep_only_parsed_commits_sorted(tmp_path: Path) -> None:
    path = tmp_path / "snapshots.csv"
    pd.DataFrame({
        "scrape_time_utc": ["2021-01-01T02:00:00Z", "2021-01-01T00:00:00Z",
                            "2021-01-01T01:00:00Z"],
        "source_commit": ["000000000003", "000000000001", "000000000002"],
        "parse_ok": [1, 1, 0],
    }).to_csv(path, index=False)
    times, result = read_scrape_times(path)
    assert list(times) == [pd.Timestamp("2021-01-01T00:00:00Z"),
                           pd.Timestamp("2021-01-01T02:00:00Z")]
    assert result.rows_quarantined == 0

    pd.DataFrame({"scrape_time_utc": ["2021-01-01T00:00:00Z"], "parse_ok": [0]}).to_csv(
        path, index=False)
    with pytest.raises(ContractError, match="no successful scrape"):
        read_scrape_times(path)


def test_observed_hours_on_a_tiny_series() -> None:
    times = pd.Series(pd.to_datetime([
        "2021-01-01T00:00:00Z", "2021-01-01T05:30:00Z",  # 5.5 h quiet gap: watched
        "2021-01-01T06:10:00Z", "2021-01-01T23:40:00Z",  # 17.5 h gap: scraper down
        "2021-01-02T01:00:00Z"], utc=True))
    obs = observed_hours(times, pd.Timestamp("2021-01-01", tz="UTC"),
                         pd.Timestamp("2021-01-02T03:00", tz="UTC"), max_gap_h=15)
    assert len(obs) == 27 and obs.index.name == C.TS
    blind = [ts.strftime("%d %H") for ts in obs.index[~obs.to_numpy()]]
    # 06:00 and 23:00 hold a scrape but also part of the gap; 01:00 on the 2nd holds the last scrape
    assert blind == [f"01 {h:02d}" for h in range(6, 24)] + ["02 01", "02 02"]
    assert obs[pd.Timestamp("2021-01-01T03:00", tz="UTC")]


# --- contract tests on the real files -----------------------------------------------------------


@pytest.fixture(scope="module")
def real_events(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """The adapter's output on the whole events file, and the raw file read independently."""
    events, result = read_lgeku_events(data_dir / EVENTS_FILE, _cfg())
    raw = pd.read_csv(data_dir / EVENTS_FILE, low_memory=False, dtype={"record_key": "string"})
    return events, raw, result


@pytest.fixture(scope="module")
def scrape_times(data_dir: Path) -> pd.Series:
    times, _ = read_scrape_times(data_dir / SNAPSHOTS_FILE)
    return times


def test_real_events_pass_the_contract_whole(real_events) -> None:
    events, raw, result = real_events
    assert len(raw) == 167_793
    assert (result.rows_in, result.rows_quarantined) == (167_793, 0)
    assert len(events) == 167_793
    assert events[C.EV_ID].is_unique


def test_real_planned_events_match_an_independent_count(real_events) -> None:
    events, raw, _ = real_events
    sched = "Scheduled maintenance"
    expected = int(((raw["cause_first"] == sched) | (raw["cause_last"] == sched)).sum())
    assert expected == 16_519
    assert int(events[C.EV_PLANNED].sum()) == expected
    planned_keys = set(raw.loc[(raw["cause_first"] == sched) | (raw["cause_last"] == sched),
                               "record_key"])
    assert set(events.loc[events[C.EV_PLANNED], C.EV_SOURCE_ID]) == planned_keys


def test_real_starts_never_after_first_sighting_and_ends_never_before_start(real_events) -> None:
    events, raw, _ = real_events
    first_seen = pd.to_datetime(raw.set_index("record_key")["first_seen_utc"], format="ISO8601",
                                utc=True)
    reported = pd.to_datetime(raw.set_index("record_key")["reported_start_time"],
                              format="ISO8601", utc=True)
    ev = events.set_index(C.EV_SOURCE_ID)
    assert (ev[C.EV_START] <= first_seen.reindex(ev.index)).all()
    last = pd.to_datetime(raw.set_index("record_key")["reported_start_time_last"],
                          format="ISO8601", utc=True)
    # the 96 records whose reported start is after the first sighting are pulled back to the
    # earlier of the first sighting and the last reported start
    revised = reported.index[reported > first_seen]
    assert len(revised) == 96
    expected = np.minimum(first_seen[revised], last[revised])
    assert (ev.loc[revised, C.EV_START] == expected).all()
    assert (ev.loc[revised, C.EV_START] < reported[revised]).all()
    # 24 raw records are "restored before they began"; none is after the adapter
    assert int((pd.to_datetime(raw["removed_seen_utc"], format="ISO8601", utc=True)
                < pd.to_datetime(raw["reported_start_time"], format="ISO8601", utc=True)).sum()) == 24
    assert not (ev[C.EV_END] < ev[C.EV_START]).any()


def test_real_clusters_floor_and_reissues(real_events) -> None:
    events, raw, _ = real_events
    assert int(events[C.EV_CLUSTER].sum()) == int((raw["is_cluster"] == True).sum()) == 436  # noqa: E712
    assert int(events[C.EV_N_OUTAGES].sum()) == int(raw["number_out_max"].sum())
    assert int(events[C.EV_CUSTOMERS_FLOOR].sum()) == int((raw["cust_affected_max"] <= 4).sum())
    assert events[C.EV_COUNTY].str.fullmatch(r"\d{5}").all()
    # every re-issue points at an original (not itself a re-issue) at the same point, earlier
    dups = events[events[C.EV_DUPLICATE_OF].notna()]
    assert 0 < len(dups) < 0.05 * len(events)
    first = events.set_index(C.EV_ID).loc[dups[C.EV_DUPLICATE_OF]]
    assert first[C.EV_DUPLICATE_OF].isna().all()
    assert np.allclose(first[C.EV_LAT].round(5).to_numpy(), dups[C.EV_LAT].round(5).to_numpy())
    assert np.allclose(first[C.EV_LON].round(5).to_numpy(), dups[C.EV_LON].round(5).to_numpy())
    assert (first[C.EV_START].to_numpy() <= dups[C.EV_START].to_numpy()).all()


def test_real_scraper_outage_of_march_2023_is_unobserved(scrape_times: pd.Series) -> None:
    assert len(scrape_times) == 102_348  # 7 commits did not parse
    obs = observed_hours(scrape_times, pd.Timestamp("2023-03-01", tz="UTC"),
                         pd.Timestamp("2023-03-08", tz="UTC"), max_gap_h=15)
    at = lambda s: bool(obs[pd.Timestamp(s, tz="UTC")])  # noqa: E731
    assert at("2023-03-03T22:00")  # the storm, still scraped
    assert not at("2023-03-03T23:00")  # last scrape 23:38, then nothing
    assert not at("2023-03-04T12:00")
    assert not at("2023-03-05T00:00")
    assert not at("2023-03-06T15:00")  # first scrape back at 15:09
    assert at("2023-03-06T16:00")
    assert int((~obs).sum()) == 1 + 24 + 24 + 16  # 2023-03-03 23:00 .. 03-06 15:00 inclusive


def test_real_quiet_night_stays_observed(scrape_times: pd.Series) -> None:
    gaps_h = scrape_times.diff().dt.total_seconds() / 3600
    # the 12.2 h quiet gap that ends 2021-01-23 16:19 (found in the data, not assumed)
    ends_then = scrape_times.dt.strftime("%Y-%m-%d %H:%M") == "2021-01-23 16:19"
    [i] = np.flatnonzero(ends_then & (gaps_h > 12) & (gaps_h < 12.5))
    assert scrape_times.iloc[i - 1] == pd.Timestamp("2021-01-23T04:05:29Z")
    start, end = pd.Timestamp("2021-01-22", tz="UTC"), pd.Timestamp("2021-01-24", tz="UTC")
    assert observed_hours(scrape_times, start, end, max_gap_h=15).all()
    strict = observed_hours(scrape_times, start, end, max_gap_h=12)
    assert int((~strict).sum()) == 13  # 04:00 .. 16:00 once the gap counts as an outage


def test_real_total_unobserved_hours(scrape_times: pd.Series) -> None:
    start, end = pd.Timestamp("2019-12-01", tz="UTC"), pd.Timestamp("2024-01-01", tz="UTC")
    obs = observed_hours(scrape_times, start, end, max_gap_h=15)
    assert len(obs) == 35_808
    # Independently: every gap longer than 15 h blinds the hours from the one holding its first
    # end to the one holding its second end; add the hours before the first scrape and the hour
    # of the last scrape, and count the union. Measured on this file: 3,168 hours, i.e. the six
    # gaps > 15 h (2019-12-01 15.9 h, the four README outages 2020-10/11, 2021-01/02,
    # 2021-03/05, 2022-11/12 and 2023-03-03..06).
    times = scrape_times.reset_index(drop=True)
    long_gap = np.flatnonzero((times.diff() > pd.Timedelta(hours=15)).to_numpy())
    gaps = [(times[i - 1], times[i]) for i in long_gap]
    assert len(gaps) == 6
    blind: set[pd.Timestamp] = set(pd.date_range(start, times.iloc[0].floor("h"), freq="h"))
    blind |= set(pd.date_range(times.iloc[-1].floor("h"), end, freq="h", inclusive="left"))
    for lo, hi in gaps:
        blind |= set(pd.date_range(lo.floor("h"), hi.ceil("h"), freq="h", inclusive="left"))
    assert len(blind) == 3_168
    assert int((~obs).sum()) == 3_168
    assert set(obs.index[~obs.to_numpy()]) == blind
