"""``forewarn advise --run DIR`` on a finished run directory: decides and enqueues through the
same engine as the nightly flow, and a second call enqueues nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from flows.cli import app
from serving.outbox import count, read_history
from serving.publish import write_advice_inputs, write_manifest, write_outputs

REPO = Path(__file__).resolve().parents[1]
AS_OF = pd.Timestamp("2023-03-02T17:00:00Z")


def _run_dir(root: Path) -> Path:
    start = pd.Timestamp("2023-03-03T15:00Z")
    windows = pd.DataFrame([{
        "window_id": "w1", "area_id": "21111", "area_name": "Jefferson County",
        "start": start, "end": start + pd.Timedelta(hours=6), "hours": 6, "peak_prob": 0.8,
        "mean_prob": 0.5, "peak_ts": start, "peak_lift": 3.0, "expected_customers": 900.0,
        "customers_served": 20_000, "rank": 1, "model_version": "3", "run_id": "run-x",
        "weather_source": "replay",
        "drivers": [{"feature": "prcp_mm", "text_en": "daily rain 41 mm",
                     "text_zh": "日降雨量41毫米", "contribution": 0.3}],
    }])
    run_dir = root / "runs" / "run-x"
    write_outputs(run_dir, windows=windows, hourly=pd.DataFrame({"area_id": ["21111"]}),
                  advisories=[], metrics={}, meta={"run_id": "run-x"})
    areas = pd.DataFrame({"area_id": ["21111"], "customers_served": [20_000],
                          "timezone": ["America/New_York"]})
    restorations = pd.DataFrame({"area_id": pd.Series(dtype=str),
                                 "start_utc": pd.Series(dtype="datetime64[ns, UTC]"),
                                 "end_utc": pd.Series(dtype="datetime64[ns, UTC]")})
    write_advice_inputs(run_dir, areas, restorations, pd.DataFrame())
    write_manifest(run_dir, {"run_id": "run-x", "as_of": AS_OF.isoformat()})
    return run_dir


def test_advise_enqueues_once_and_a_repeat_enqueues_nothing(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    env = {"FOREWARN_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    args = ["advise", "--run", str(run_dir), "--config", str(REPO / "configs/kentucky.yaml")]
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert summary["run_id"] == "run-x" and summary["decided"] == summary["inserted"] > 100
    assert summary["by_kind"]["risk_advisory"] > 100  # 200 synthetic customers, 1 % of 20,000
    url = f"sqlite:///{(tmp_path / 'home' / 'outbox.db').resolve()}"
    assert count(url) == summary["inserted"]
    assert set(read_history(url)["customer_id"].str[:10]) == {"SYN-21111-"}
    second = json.loads(CliRunner().invoke(app, args, env=env).output)
    assert (second["decided"], second["inserted"]) == (0, 0)
    assert count(url) == summary["inserted"]


def test_advise_on_an_unfinished_run_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    result = CliRunner().invoke(app, ["advise", "--run", str(tmp_path / "half")],
                                env={"FOREWARN_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    assert "run.json not found" in result.output and "Traceback" not in result.output


def test_advise_honours_stop_replies(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    replies = tmp_path / "replies.csv"
    replies.write_text("customer_id,received_utc,text\nSYN-21111-000001,2023-03-01T00:00Z,STOP\n",
                       encoding="utf-8")
    env = {"FOREWARN_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(app, ["advise", "--run", str(run_dir), "--feedback",
                                      str(replies)], env=env)
    assert result.exit_code == 0, result.output
    url = f"sqlite:///{(tmp_path / 'home' / 'outbox.db').resolve()}"
    customers = set(read_history(url)["customer_id"])
    assert "SYN-21111-000001" not in customers and "SYN-21111-000002" in customers
