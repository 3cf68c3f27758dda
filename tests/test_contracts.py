"""Data contracts: unit tests on tiny frames and a contract test on a slice of the Kentucky events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contracts import ContractError, ContractResult, Rule, Suite, check

REPO = Path(__file__).resolve().parents[1]
LGEKU_EVENTS = Path("lgeku_outages_kentucky") / "lgeku_outage_events_2019-12_2023-12.csv.gz"


def _suite(*rules: Rule, required: tuple[str, ...] = (), share: float = 1.0) -> Suite:
    return Suite(name="tiny", required_columns=required, rules=rules, max_quarantine_share=share)


def _quarantine_csv(result: ContractResult) -> pd.DataFrame:
    assert result.quarantine_file is not None
    return pd.read_csv(result.quarantine_file, index_col="_index")


# --- one test per rule kind: exactly the failing rows are set aside --------------------------------


def test_not_null_sets_aside_null_rows_and_keeps_the_index(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, None], "b": list("wxyz")}, index=[10, 20, 30, 40])
    out, result = check(df, _suite(Rule("a", "not_null")), source="t.csv", quarantine_dir=tmp_path)

    assert list(out.index) == [10, 30]
    assert list(out["b"]) == ["w", "y"]
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (4, 2, 2)
    q = _quarantine_csv(result)
    assert list(q.index) == [20, 40]
    assert list(q["b"]) == ["x", "z"]
    assert set(q["_failed_rules"]) == {"a:values_not_null"}
    assert result.quarantine_file == str(tmp_path / "tiny.csv")


def test_between_is_inclusive_and_ignores_nulls(tmp_path: Path) -> None:
    df = pd.DataFrame({"lat": [36.0, 40.0, 35.99, np.nan, 99.0, 38.5]})
    out, result = check(df, _suite(Rule("lat", "between", min=36, max=40)), source="t.csv")

    assert list(out.index) == [0, 1, 3, 5]
    assert result.rows_quarantined == 2
    [failure] = result.failures
    assert (failure["rule"], failure["column"], failure["n_failed"]) == ("values_between", "lat", 2)
    assert failure["rows"] == [2, 4]
    assert [e["lat"] for e in failure["examples"]] == [35.99, 99.0]


def test_between_with_only_a_lower_bound() -> None:
    df = pd.DataFrame({"n": pd.array([0, 1, 5, None], dtype="Int64")})
    out, result = check(df, _suite(Rule("n", "between", min=1)), source="t.csv")
    assert list(out.index) == [1, 2, 3]
    assert result.failures[0]["rows"] == [0]


def test_in_set_sets_aside_other_values_but_not_nulls() -> None:
    df = pd.DataFrame({"kind": ["planned", "unplanned", "PLANNED", None, "storm"]})
    rule = Rule("kind", "in_set", values=("planned", "unplanned"))
    out, result = check(df, _suite(rule), source="t.csv")
    assert list(out["kind"].fillna("<null>")) == ["planned", "unplanned", "<null>"]
    assert result.failures[0]["rows"] == [2, 4]


def test_unique_sets_aside_every_copy_of_a_duplicate() -> None:
    df = pd.DataFrame({"key": ["k1", "k2", "k1", "k3", "k2", "k4"]}, index=list("abcdef"))
    out, result = check(df, _suite(Rule("key", "unique")), source="t.csv")
    assert list(out.index) == ["d", "f"]
    assert result.failures[0]["rows"] == ["a", "b", "c", "e"]


def test_regex_is_searched_so_anchors_matter() -> None:
    df = pd.DataFrame(
        {"ts": ["2021-03-01T12:00:00Z", "2021-03-01T12:00Z", "x2021-03-01T12:00:00Z", None]}
    )
    rule = Rule("ts", "regex", pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    out, result = check(df, _suite(rule), source="t.csv")
    assert list(out.index) == [0, 3]
    assert result.failures[0]["rows"] == [1, 2]


def test_rows_failing_several_rules_are_set_aside_once_with_all_rule_names(tmp_path: Path) -> None:
    df = pd.DataFrame({"lat": [37.0, 99.0, 38.0], "key": ["a", "b", "b"]})
    rules = (Rule("lat", "between", min=36, max=40), Rule("key", "unique"))
    out, result = check(df, _suite(*rules), source="t.csv", quarantine_dir=tmp_path)
    assert list(out.index) == [0]
    assert result.rows_quarantined == 2
    q = _quarantine_csv(result)
    assert q.loc[1, "_failed_rules"] == "lat:values_between; key:values_unique"
    assert q.loc[2, "_failed_rules"] == "key:values_unique"


# --- dtypes and indexes ------------------------------------------------------------------------------


def test_mixed_dtype_column_sets_aside_text_that_is_not_a_number() -> None:
    df = pd.DataFrame({"lon": [-85.0, "-84.5", "abc", None, "-10"]})  # object column
    out, result = check(df, _suite(Rule("lon", "between", min=-90, max=-81)), source="t.csv")
    assert list(out.index) == [0, 1, 3]
    failure = result.failures[0]
    assert failure["rows"] == [2, 4]
    assert [e["lon"] for e in failure["examples"]] == ["abc", "-10"]  # original values, not coerced


def test_duplicate_index_labels_map_back_to_the_right_rows() -> None:
    df = pd.DataFrame({"v": [1.0, 50.0, 2.0, 3.0]}, index=[7, 7, 8, 8])
    out, result = check(df, _suite(Rule("v", "between", max=10)), source="t.csv")
    assert list(out["v"]) == [1.0, 2.0, 3.0]
    assert list(out.index) == [7, 8, 8]
    assert result.failures[0]["examples"] == [{"v": 50.0}]


def test_named_and_datetime_index_is_kept() -> None:
    idx = pd.date_range("2021-01-01", periods=3, freq="h", tz="UTC", name="ts")
    df = pd.DataFrame({"wind": [5.0, -1.0, 7.0]}, index=idx)
    out, result = check(df, _suite(Rule("wind", "between", min=0)), source="t.csv")
    assert list(out.index) == [idx[0], idx[2]]
    assert out.index.name == "ts"
    assert result.failures[0]["rows"] == ["2021-01-01T01:00:00+00:00"]


def test_input_frame_is_not_mutated_even_when_the_contract_fails(tmp_path: Path) -> None:
    df = pd.DataFrame({"lat": [37.0, 99.0, "x"], "key": ["a", "a", "b"]}, index=[3, 2, 1])
    before = df.copy(deep=True)
    rules = (Rule("lat", "between", min=36, max=40), Rule("key", "unique", quarantine=False))
    with pytest.raises(ContractError):
        check(df, _suite(*rules), source="t.csv", quarantine_dir=tmp_path)
    out, _ = check(df, _suite(rules[0]), source="t.csv", quarantine_dir=tmp_path)
    pd.testing.assert_frame_equal(df, before)
    assert out is not df
    assert list(out.index) == [3]


# --- errors --------------------------------------------------------------------------------------------


def test_blocking_rule_error_names_file_column_rule_value_and_hint() -> None:
    df = pd.DataFrame(
        {"start_raw": ["2021-03-01T12:00:00Z", None, "2021-03-02T00:00:00Z"], "n": [1, 2, 3]},
        index=[100, 230, 811],
    )
    rule = Rule("start_raw", "not_null", quarantine=False, hint="times must be ISO-8601 UTC")
    suite = Suite("lgeku_events", ("start_raw", "n"), (rule,))
    with pytest.raises(ContractError) as err:
        check(df, suite, source=Path("data/x.csv.gz"))

    lines = str(err.value).splitlines()
    assert lines[0] == "data contract 'lgeku_events' failed for data/x.csv.gz"
    assert lines[1].startswith("  column 'start_raw', rule values_not_null: 1 of 3 rows fail")
    assert "row 230: [{'start_raw': None, 'n': 2}]" in lines[1]
    assert lines[2] == "  hint: times must be ISO-8601 UTC"
    assert err.value.result is not None
    assert err.value.result.failures[0]["n_failed"] == 1
    assert err.value.result.rows_quarantined == 0


def test_error_shows_the_offending_value_and_only_show_columns() -> None:
    df = pd.DataFrame({"lat": [37.0, 99.5], "lon": [-85.0, -84.0], "id": ["e1", "e2"], "x": [0, 0]})
    rule = Rule("lat", "between", min=36, max=40, quarantine=False)
    with pytest.raises(ContractError) as err:
        check(df, _suite(rule), source="ev.csv", show_columns=["id", "lat"])
    message = str(err.value)
    assert "column 'lat', rule values_between(min=36, max=40): 1 of 2 rows fail" in message
    assert "[{'id': 'e2', 'lat': 99.5}]" in message
    assert "'lon'" not in message


def test_missing_columns_error_names_file_missing_and_present_columns() -> None:
    df = pd.DataFrame({"lat": [37.0], "lon": [-85.0]})
    suite = Suite("events", ("lat", "record_key"), (Rule("start", "not_null"),))
    with pytest.raises(ContractError) as err:
        check(df, suite, source="in/events.csv")
    assert str(err.value) == (
        "data contract 'events' failed for in/events.csv\n"
        "  missing columns: 'record_key', 'start'\n"
        "  columns present: 'lat', 'lon'"
    )
    assert err.value.result is not None
    assert err.value.result.failures == [
        {"rule": "columns_present", "column": None, "missing": ["record_key", "start"]}
    ]


def test_quarantined_share_above_the_suite_limit_stops_the_run(tmp_path: Path) -> None:
    df = pd.DataFrame({"v": [1.0] * 8 + [50.0, 60.0]})
    rule = Rule("v", "between", max=10, hint="v is in m/s")
    out, result = check(df, _suite(rule, share=0.2), source="t.csv")  # 20 % is allowed
    assert len(out) == 8

    with pytest.raises(ContractError) as err:
        check(df, _suite(rule, share=0.1), source="t.csv", quarantine_dir=tmp_path)
    message = str(err.value)
    assert "2 of 10 rows (20.0%) were set aside, more than the 10.0% the suite allows" in message
    assert "e.g. rows 8, 9" in message
    assert "hint: v is in m/s" in message
    assert err.value.result is not None and err.value.result.rows_quarantined == 2
    assert list(_quarantine_csv(err.value.result).index) == [8, 9]  # written before raising


def test_mostly_tolerates_a_few_failures_of_a_blocking_rule() -> None:
    df = pd.DataFrame({"v": [1.0, 2.0, 3.0, 50.0]})
    lenient = Rule("v", "between", max=10, quarantine=False, mostly=0.75)
    out, result = check(df, _suite(lenient), source="t.csv")
    assert len(out) == 4  # blocking rules never remove rows
    assert result.failures[0]["passed"] is True
    assert result.failures[0]["n_failed"] == 1

    strict = Rule("v", "between", max=10, quarantine=False, mostly=0.9)
    with pytest.raises(ContractError, match="the run stops"):
        check(df, _suite(strict), source="t.csv")


def test_rules_with_impossible_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="needs min or max"):
        Rule("v", "between")
    with pytest.raises(ValueError, match="needs values"):
        Rule("v", "in_set")
    with pytest.raises(ValueError, match="mostly"):
        Rule("v", "not_null", mostly=0.0)


def test_rule_that_cannot_be_evaluated_names_the_dtype() -> None:
    df = pd.DataFrame({"ts": pd.to_datetime(["2021-01-01T00:00Z"], utc=True)})
    with pytest.raises(ContractError) as err:
        check(
            df, _suite(Rule("ts", "between", min=0, hint="bounds must be timestamps")), source="t"
        )
    lines = str(err.value).splitlines()
    assert lines[1].startswith(
        "  column 'ts', rule values_between(min=0) could not be evaluated (dtype datetime64"
    )
    assert lines[2] == "  hint: bounds must be timestamps"


# --- empty frames, files, manifest ---------------------------------------------------------------------


def test_empty_frame_passes_but_still_needs_its_columns() -> None:
    suite = Suite("s", ("a",), (Rule("a", "not_null"), Rule("a", "unique")))
    out, result = check(pd.DataFrame({"a": pd.Series([], dtype="float64")}), suite, source="e.csv")
    assert out.empty and list(out.columns) == ["a"]
    assert (result.rows_in, result.rows_quarantined, result.failures) == (0, 0, [])
    with pytest.raises(ContractError, match="missing columns: 'a'"):
        check(pd.DataFrame(), suite, source="e.csv")


def test_a_clean_run_removes_the_previous_quarantine_file(tmp_path: Path) -> None:
    rule = Rule("v", "not_null")
    _, dirty = check(
        pd.DataFrame({"v": [1.0, None]}), _suite(rule), source="t", quarantine_dir=tmp_path
    )
    assert dirty.quarantine_file is not None and Path(dirty.quarantine_file).exists()
    _, clean = check(
        pd.DataFrame({"v": [1.0, 2.0]}), _suite(rule), source="t", quarantine_dir=tmp_path
    )
    assert clean.quarantine_file is None
    assert not (tmp_path / "tiny.csv").exists()


def test_result_to_dict_is_json_safe() -> None:
    df = pd.DataFrame(
        {
            "v": [np.nan, 2.0],
            "ts": pd.to_datetime(["2021-01-01T00:00Z", None], utc=True),
            "n": np.array([3, 4], dtype=np.int32),
        }
    )
    _, result = check(df, _suite(Rule("v", "not_null")), source=Path("a/b.csv"))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["source"] == "a/b.csv"
    assert data["failures"][0]["examples"] == [
        {"v": None, "ts": "2021-01-01T00:00:00+00:00", "n": 3}
    ]
    assert data["seconds"] >= 0


def test_importing_the_module_does_not_import_great_expectations() -> None:
    code = "import sys, features.contracts; print('great_expectations' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


# --- contract test on a slice of the real Kentucky events ----------------------------------------------

LGEKU_SUITE = Suite(
    name="lgeku_events",
    required_columns=("record_key", "lat", "lon", "cust_affected_max", "reported_start_time"),
    rules=(
        Rule("lat", "between", min=36, max=40, hint="LG&E/KU serves Kentucky: lat 36..40"),
        Rule("lon", "between", min=-90, max=-81, hint="LG&E/KU serves Kentucky: lon -90..-81"),
        Rule("cust_affected_max", "between", min=1, hint="an outage affects at least one customer"),
        Rule("record_key", "unique", hint="one row per event; deduplicate the archive"),
        Rule("reported_start_time", "not_null", quarantine=False),
    ),
)


@pytest.fixture(scope="module")
def lgeku_slice(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / LGEKU_EVENTS, nrows=5000, dtype={"record_key": str})


def test_real_slice_passes_the_contract(lgeku_slice: pd.DataFrame, tmp_path: Path) -> None:
    out, result = check(lgeku_slice, LGEKU_SUITE, source=LGEKU_EVENTS, quarantine_dir=tmp_path)
    assert (result.rows_in, result.rows_passed, result.rows_quarantined) == (5000, 5000, 0)
    assert result.failures == []
    assert len(out) == 5000


def test_broken_real_slice_sets_aside_exactly_the_broken_rows(
    lgeku_slice: pd.DataFrame, tmp_path: Path
) -> None:
    broken = lgeku_slice.copy()
    broken.loc[[11, 2222, 4999], "lat"] = 99.0
    broken.loc[300, "record_key"] = broken.loc[40, "record_key"]
    dup_key = broken.loc[40, "record_key"]

    out, result = check(broken, LGEKU_SUITE, source=LGEKU_EVENTS, quarantine_dir=tmp_path)

    assert result.rows_quarantined == 5
    assert set(broken.index) - set(out.index) == {11, 40, 300, 2222, 4999}
    by_rule = {(f["column"], f["rule"]): f for f in result.failures}
    assert by_rule["lat", "values_between"]["rows"] == [11, 2222, 4999]
    assert by_rule["record_key", "values_unique"]["rows"] == [40, 300]
    assert {e["record_key"] for e in by_rule["record_key", "values_unique"]["examples"]} == {
        dup_key
    }
    q = _quarantine_csv(result)
    assert sorted(q.index) == [11, 40, 300, 2222, 4999]
    assert q.loc[2222, "lat"] == 99.0
    assert q.loc[2222, "_failed_rules"] == "lat:values_between"


def test_broken_real_slice_with_a_blocking_key_rule_names_the_duplicate(
    lgeku_slice: pd.DataFrame,
) -> None:
    broken = lgeku_slice.copy()
    broken.loc[300, "record_key"] = broken.loc[40, "record_key"]
    dup_key = broken.loc[40, "record_key"]
    strict = Rule("record_key", "unique", quarantine=False, hint="deduplicate the archive")
    suite = Suite("lgeku_events", LGEKU_SUITE.required_columns, (*LGEKU_SUITE.rules[:3], strict))

    with pytest.raises(ContractError) as err:
        check(broken, suite, source=LGEKU_EVENTS)
    message = str(err.value)
    assert message.startswith(f"data contract 'lgeku_events' failed for {LGEKU_EVENTS}\n")
    assert "column 'record_key', rule values_unique: 2 of 5000 rows fail (the run stops)" in message
    assert "e.g. rows 40, 300" in message
    assert f"'record_key': '{dup_key}'" in message
    assert "hint: deduplicate the archive" in message
