"""A published run whose files were damaged or changed afterwards (a truncated
advisories.jsonl, a Parquet file with zeroed bytes that still parses, a run.json that is not
JSON): `advise`, `report` and `report-html` stop with one line naming the file and what to do,
exit 2, and write nothing, instead of a traceback or a report built from wrong numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from serving import publish
from serving.publish import RunDamaged, read_advice_inputs, read_verified_manifest, sha256_file


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "20230701T0000Z-20261204T000000Z-abcdef"
    run.mkdir()
    pd.DataFrame({"area_id": ["21067"] * 4, "prob": [0.1, 0.2, 0.3, 0.4],
                  "expected_customers": [10.0, 20.0, 30.0, 40.0]}).to_parquet(
        run / publish.HOURLY_PARQUET, index=False)
    pd.DataFrame({"window_id": ["w1"], "area_id": ["21067"], "drivers": ["[]"]}).to_parquet(
        run / publish.WINDOWS_PARQUET, index=False)
    pd.DataFrame({"area_id": ["21067"], "customers_served": [1000],
                  "timezone": ["America/New_York"]}).to_parquet(run / publish.AREAS_PARQUET)
    pd.DataFrame({"area_id": []}).to_parquet(run / publish.RESTORATIONS_PARQUET)
    rows = [{"advisory_id": f"a{i}", "customer_id": f"SYN-{i}", "kind": "risk_advisory"}
            for i in range(3)]
    (run / publish.ADVISORIES_JSONL).write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    names = [publish.HOURLY_PARQUET, publish.WINDOWS_PARQUET, publish.AREAS_PARQUET,
             publish.RESTORATIONS_PARQUET, publish.ADVISORIES_JSONL]
    manifest = {"run_id": run.name, "as_of": "2023-07-01T00:00:00+00:00",
                "outputs": {n: sha256_file(run / n) for n in names}}
    (run / publish.MANIFEST_JSON).write_text(json.dumps(manifest), encoding="utf-8")
    return run


def test_an_intact_run_passes(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert read_verified_manifest(run)["run_id"] == run.name
    manifest, windows, areas, _ = read_advice_inputs(run)
    assert len(windows) == 1 and len(areas) == 1


def test_a_truncated_advisories_file_is_named(tmp_path: Path) -> None:
    run = _run(tmp_path)
    path = run / publish.ADVISORIES_JSONL
    path.write_bytes(path.read_bytes()[:-20])  # cut mid-line
    with pytest.raises(RunDamaged, match=r"advisories\.jsonl: does not match the sha256"):
        read_advice_inputs(run)


def test_zeroed_bytes_that_still_parse_are_caught(tmp_path: Path) -> None:
    """Zeroed bytes inside a data page can still decode: the numbers are then quietly wrong.
    Only the checksum tells."""
    run = _run(tmp_path)
    path = run / publish.HOURLY_PARQUET
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RunDamaged, match=r"risk_hourly\.parquet: does not match"):
        read_verified_manifest(run)


def test_a_listed_output_that_is_gone_is_named(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / publish.HOURLY_PARQUET).unlink()
    with pytest.raises(RunDamaged, match=r"risk_hourly\.parquet: missing"):
        read_verified_manifest(run)


def test_a_run_json_that_is_not_json_is_named(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run / publish.MANIFEST_JSON).write_text("{", encoding="utf-8")
    with pytest.raises(RunDamaged, match=r"run\.json: not valid JSON"):
        read_verified_manifest(run)


@pytest.mark.parametrize(("edit", "problem"), [
    ({"as_of": None}, "no valid ISO-8601 `as_of`"), ({"as_of": "soon"}, "no valid ISO-8601"),
    ({"outputs": [publish.HOURLY_PARQUET]}, "`outputs` is not an object")])
def test_a_run_json_that_is_no_manifest_is_named(tmp_path: Path, edit: dict, problem: str) -> None:
    run = _run(tmp_path)
    path = run / publish.MANIFEST_JSON
    manifest = {k: v for k, v in (json.loads(path.read_text(encoding="utf-8")) | edit).items()
                if v is not None}
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(RunDamaged, match=rf"run\.json: {re.escape(problem)}") as err:
        read_verified_manifest(run)
    assert err.value.public_message.startswith(f"run {run.name}: run.json: {problem}")
    assert str(tmp_path) not in err.value.public_message


@pytest.mark.parametrize("command", ["advise", "report", "report-html"])
def test_cli_refuses_a_damaged_run_in_one_line(tmp_path: Path, command: str) -> None:
    run = _run(tmp_path)
    path = run / publish.ADVISORIES_JSONL
    path.write_bytes(path.read_bytes()[:-20])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = CliRunner().invoke(app, [command, "--run", str(run)],
                                env={"FOREWARN_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"forewarn: error: {path}: does not match the sha256")
    assert "forewarn nightly --as-of 2023-07-01T00:00:00+00:00" in line
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing written
