"""The whole nightly flow on a small real slice, under a real (ephemeral) Prefect API, with
MLflow and the outbox in a temporary folder."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from contact_leaks import Contacts, files_under, leaks_in_files

from configs.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
AREAS = ["21111", "21067", "21185", "21013"]  # Jefferson, Fayette, Oldham, Bell
AS_OF = "2023-03-02T12:00:00Z"  # a day and a half before the 3 March 2023 wind storm

pytestmark = pytest.mark.integration


SUBSCRIBER_SECRET = "integration-subscriber-secret-0123"


@pytest.fixture(scope="module")
def subscriber():
    """A downstream system subscribed to run-published events: the dispatcher tests' webhook
    sink (a local HTTP server that refuses a bad signature with 401 and counts each
    Idempotency-Key, here the event id), and its server."""
    from tests.local_servers import WebhookSink, http_server

    sink = WebhookSink(SUBSCRIBER_SECRET.encode())
    with pytest.MonkeyPatch.context() as env, http_server(sink) as server:
        env.setenv("FOREWARN_TEST_SUBSCRIBER_SECRET", SUBSCRIBER_SECRET)
        yield sink, server


@pytest.fixture(scope="module")
def slice_settings(tmp_path_factory, data_dir, subscriber):
    home = tmp_path_factory.mktemp("home")
    return load_settings(
        REPO / "configs/kentucky.yaml",
        environ={"FOREWARN_DATA_DIR": str(data_dir), "FOREWARN_HOME": str(home)},
        overrides={
            "areas": {"include": AREAS},
            "model": {"train_start": "2022-03-01T00:00:00Z", "valid_hours": 720,
                      "test_end": "2023-04-01T00:00:00Z", "num_boost_round": 80,
                      "min_positive_hours": 300},
            "windows": {"min_probability": 0.15, "min_lift": 1.2},
            "restoration": {"num_boost_round": 40},
            "advisories": {"segments": {"residential": {"threshold": 0.3},
                                        "commercial": {"threshold": 0.25}}},
            "api": {"subscribers": [{"url": f"{subscriber[1].url}/events", "name": "notifier",
                                     "secret_env": "FOREWARN_TEST_SUBSCRIBER_SECRET"}]},
        },
    )


class _Everything(logging.Handler):
    """Every record as text at the moment it is logged, before any handler masks it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# Forewarn's own packages (and the loggers of Prefect flow and task runs), at DEBUG
_OWN_LOGGERS = ("configs", "features", "models", "serving", "flows", "forewarn",
                "prefect.flow_runs", "prefect.task_runs")


@pytest.fixture(scope="module")
def run_logs(prefect_api, slice_settings):
    """While the module's runs happen: the CLI's log file under <home>/logs (contacts
    masked), and every record of Forewarn's loggers captured unmasked at DEBUG."""
    import flows.nightly  # noqa: F401 - Prefect sets up logging on import; handlers after
    from flows.cli import log_to_file

    root = logging.getLogger()
    log_file = log_to_file(slice_settings.paths.home)
    capture = _Everything()
    root.handlers.insert(0, capture)  # before the log file's mask rewrites the record
    levels = {name: logging.getLogger(name).level for name in _OWN_LOGGERS}
    for name in _OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield capture
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root.removeHandler(capture)
    root.removeHandler(log_file)
    logging.getLogger("forewarn.failures").removeHandler(log_file)
    logging.getLogger("forewarn.failures").propagate = True
    log_file.close()


@pytest.fixture(scope="module")
def two_runs(prefect_api, slice_settings, tmp_path_factory, run_logs):
    from flows.nightly import nightly

    out = tmp_path_factory.mktemp("runs")
    first = nightly(slice_settings, as_of=AS_OF, out=out)
    second = nightly(slice_settings, as_of=AS_OF, out=out)
    return first, second


def test_run_directory_holds_the_output_contract(two_runs, slice_settings):
    first, _ = two_runs
    run_dir = Path(first["run_dir"])
    names = {"risk_windows.parquet", "risk_windows.json", "risk_hourly.parquet",
             "advisories.jsonl", "metrics.json", "run.json", "outage_estimates.parquet"}
    assert names <= {p.name for p in run_dir.iterdir()}
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["schema_version"] == "1.2"
    assert manifest["as_of"] == "2023-03-02T12:00:00+00:00"
    assert manifest["dataset"]["areas"] == len(AREAS)
    assert all(re.fullmatch(r"[0-9a-f]{64}", i["sha256"]) for i in manifest["inputs"])
    assert {c["suite"] for c in manifest["contracts"]} == {
        "lgeku_events", "lgeku_snapshots", "noaa_daily", "eaglei_mcc", "lgeku_changelog"}
    assert manifest["quarantined_rows"] == 0
    assert set(manifest["timings_s"]) >= {"load_outages", "train_and_evaluate", "score"}
    assert manifest["model"]["as_of_inside_training"] is False
    card = manifest["weather_drivers"]  # Kentucky has daily weather only: what it supports
    assert card["sources"]["drv_rain_24h_mm"] == "daily"
    assert card["sources"]["drv_freezing_rain_24h"] == "daily (approximate)"
    assert card["sources"]["drv_gust_max_24h_ms"] == "unavailable"
    assert card["sources"]["drv_leaf_on"] == "calendar" and card["in_model"] is False
    assert card["horizon_max"]["drv_gust_max_24h_ms"] is None
    telemetry = manifest["telemetry"]  # the ETT stand-in: summarised, not a model input
    assert telemetry["stand_in"] is True and telemetry["model_input"] is False
    assert telemetry["assets"][0]["hours"] == 17420 and "telemetry" in manifest["timings_s"]
    assert telemetry["anomalies"]["counts"] == {"gap": 0, "flat_line": 2516, "spike": 18}
    hourly = pd.read_parquet(run_dir / "risk_hourly.parquet")
    assert len(hourly) == len(AREAS) * 72
    assert hourly["lead_h"].min() == 1 and hourly["lead_h"].max() == 72
    assert hourly["ts"].min() == pd.Timestamp(AS_OF)
    assert hourly["prob"].between(0, 1).all()
    assert (hourly["weather_source"] == "replay").all()


def test_run_report_and_data_docs_are_built_before_the_manifest(two_runs):
    from serving.publish import sha256_file

    first, _ = two_runs
    run_dir = Path(first["run_dir"])
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["views"] == {"report": "report.html", "data_docs": "data_docs/index.html"}
    assert "report" in manifest["timings_s"]
    saved = json.loads((run_dir / "contract_validations.json").read_text())["validations"]
    assert sorted(v["suite"] for v in saved) == sorted(c["suite"] for c in manifest["contracts"])
    assert manifest["outputs"]["contract_validations.json"] == sha256_file(
        run_dir / "contract_validations.json")
    for suite in ("lgeku_events", "eaglei_mcc", "lgeku_changelog"):
        assert list((run_dir / "data_docs" / "validations" / suite).rglob("*.html")), suite
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<path class="area" data-area-id="', report)) == len(AREAS)
    assert report.count('<tr class="window"') == min(first["windows"], 20)
    assert '<a href="data_docs/index.html">' in report and manifest["run_id"] in report


def test_metrics_are_on_a_later_period_and_beside_climatology(two_runs):
    first, _ = two_runs
    metrics = json.loads((Path(first["run_dir"]) / "metrics.json").read_text())
    overall = metrics["overall"]
    assert pd.Timestamp(metrics["test_start"]) >= pd.Timestamp("2023-01-01", tz="UTC")
    assert 0.5 < overall["model_roc_auc"] <= 1 and 0.5 < overall["climatology_roc_auc"] <= 1
    assert 0 < overall["model_brier"] < 0.25
    assert overall["brier_skill"] == pytest.approx(
        1 - overall["model_brier"] / overall["climatology_brier"])
    assert set(metrics["by_lead"]) == {"0-24h", "24-48h", "48-72h"}
    assert metrics["training"]["rows_train"] > 20_000


def test_windows_are_ranked_capped_and_explained(two_runs):
    first, _ = two_runs
    run_dir = Path(first["run_dir"])
    windows = pd.read_parquet(run_dir / "risk_windows.parquet")
    as_json = json.loads((run_dir / "risk_windows.json").read_text())["windows"]
    assert len(windows) == len(as_json) == first["windows"] > 0
    assert (windows["expected_customers"] <= windows["customers_served"]).all()
    assert list(windows["rank"]) == list(range(1, len(windows) + 1))
    assert set(windows["area_id"]) <= set(AREAS)
    assert (windows["start"] >= pd.Timestamp(AS_OF)).all()
    drivers = json.loads(windows["drivers"].iloc[0])
    assert drivers and all(d["text_en"] and d["text_zh"] for d in drivers)


def test_windows_and_open_outages_carry_restoration_estimates(two_runs, slice_settings):
    from mlflow import MlflowClient

    first, second = two_runs
    run_dir = Path(first["run_dir"])
    windows = pd.read_parquet(run_dir / "risk_windows.parquet")
    p10, p50, p90 = (windows[f"duration_p{q}_h"] for q in (10, 50, 90))
    assert (p10 >= 0).all() and (p10 <= p50).all() and (p50 <= p90).all()
    assert (p90 > p10).all()
    outages = pd.read_parquet(run_dir / "outage_estimates.parquet")
    as_of = pd.Timestamp(AS_OF)
    assert len(outages) == first["restoration"]["open_outages_at_as_of"] > 0
    assert (outages["first_seen_utc"] <= as_of).all()
    assert (outages["restored_p50_utc"] >= as_of).all()
    headline = first["restoration"]["first_report"]
    assert headline["n"] > 1000 and headline["p50_mae_h"] > 0
    client = MlflowClient(tracking_uri=slice_settings.tracking_uri)
    champion = client.get_model_version_by_alias("forewarn-restoration", "champion")
    assert first["restoration"]["version"] == "1"
    assert str(champion.version) == second["restoration"]["version"] == "2"
    run = client.get_run(first["restoration"]["mlflow_run_id"])
    assert run.data.metrics["first_report_p50_mae_h"] == pytest.approx(headline["p50_mae_h"])
    assert "first_report_utility_first_etr_mae_h" in run.data.metrics


def test_model_is_registered_as_champion_in_mlflow(two_runs, slice_settings):
    from mlflow import MlflowClient

    first, second = two_runs
    client = MlflowClient(tracking_uri=slice_settings.tracking_uri)
    champion = client.get_model_version_by_alias("forewarn-risk", "champion")
    # the first model had no champion to beat; the rerun trained the same model again, which
    # is no better, so it stays a challenger and scoring keeps the first
    assert first["model"]["gate"]["promote"] and "no champion yet" in \
        first["model"]["gate"]["reasons"][0]
    assert str(champion.version) == first["model"]["version"] == second["model"]["version"] == "1"
    assert second["model"]["challenger_version"] == "2"
    gate = second["model"]["gate"]
    assert not gate["promote"] and gate["reasons"][0] == "champion v1 kept"
    assert gate["scores"]["challenger"] == gate["scores"]["champion"]
    assert client.get_model_version("forewarn-risk", "2").tags["gate"] == "rejected"
    assert second["metrics_overall"] == first["metrics_overall"]
    run = client.get_run(first["model"]["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(slice_settings.artifact_location)
    assert not (Path.cwd() / "mlruns").exists()
    assert run.data.metrics["overall_model_roc_auc"] == pytest.approx(
        first["metrics_overall"]["model_roc_auc"])
    assert "overall_climatology_brier" in run.data.metrics


def test_rerun_enqueues_nothing_twice_and_leaks_no_contact_details(two_runs, slice_settings):
    from serving.outbox import count

    first, second = two_runs
    decided = first["advisories"]["decided"]
    assert decided > 0
    assert first["advisories"]["inserted"] == decided
    # the second run reads the outbox history: nothing is decided, let alone enqueued, twice
    assert second["advisories"]["decided"] == 0, second["advisories"]
    assert (second["advisories"]["inserted"], second["advisories"]["duplicates"]) == (0, 0)
    assert count(slice_settings.paths.outbox_url) == decided
    lines = (Path(first["run_dir"]) / "advisories.jsonl").read_text().splitlines()
    assert len(lines) == decided
    assert (Path(second["run_dir"]) / "advisories.jsonl").read_text() == ""
    text = "\n".join(lines)
    assert "@example.invalid" not in text and "+1-202-555" not in text
    payloads = [json.loads(line) for line in lines]
    assert {p["language"] for p in payloads} <= {"en", "zh-CN"}
    assert {p["kind"] for p in payloads} <= {"risk_advisory", "risk_reminder"}
    assert all(set(p["content"]) == {*p["channels"], "webhook"} for p in payloads)
    control = (Path(first["run_dir"]) / "control_group.jsonl").read_text().splitlines()
    assert len(control) == first["advisories"]["withheld_control_group"]
    withheld = {json.loads(line)["customer_id"] for line in control}
    assert withheld.isdisjoint({p["customer_id"] for p in payloads})


def test_bad_rows_are_quarantined_and_counted_in_the_manifest(
    prefect_api, slice_settings, data_dir, tmp_path
):
    """Rows with an impossible position are set aside, written to the quarantine file and
    counted in run.json; the run still completes."""
    from flows.nightly import nightly

    events_rel = slice_settings.outages.events_file
    mirror = tmp_path / "data"
    for child in data_dir.iterdir():
        (mirror / child.name).mkdir(parents=True) if child.name == Path(events_rel).parts[0] \
            else (mirror / child.name).symlink_to(child)
    for f in (data_dir / Path(events_rel).parent).iterdir():
        (mirror / Path(events_rel).parent / f.name).symlink_to(f)
    raw = pd.read_csv(data_dir / events_rel, dtype=str)
    broken = raw.index[raw["county_fips_derived"] == "21067"][:25]  # Fayette records
    raw.loc[broken, "lat"] = "999"
    target = mirror / events_rel
    target.unlink()
    raw.to_csv(target, index=False, compression="gzip")
    cfg = slice_settings.model_copy(update={"paths": slice_settings.paths.model_copy(
        update={"data_dir": mirror, "home": tmp_path / "home"})})
    manifest = nightly(cfg, as_of=AS_OF, out=tmp_path / "runs")
    assert manifest["quarantined_rows"] == 25
    [events_contract] = [c for c in manifest["contracts"] if c["suite"] == "lgeku_events"]
    assert events_contract["rows_quarantined"] == 25
    assert events_contract["failures"][0]["column"] == "lat"
    quarantined = pd.read_csv(events_contract["quarantine_file"], dtype=str)
    assert set(quarantined["record_key"]) == set(raw.loc[broken, "record_key"])
    assert (quarantined["lat"].astype(float) == 999).all()


def test_no_phone_email_or_wechat_id_in_logs_outputs_or_stores(
    two_runs, slice_settings, run_logs, capsys
):
    """Every phone number, e-mail address and WeChat OpenID of the registry the runs used
    is looked for in: every file of both run directories and every file under the home —
    the log file (logs/), MLflow's store and artifacts (mlflow.db, mlartifacts/), the outbox
    database, quarantine, mirrors — read as raw bytes and as text (Parquet via pandas, SQLite
    row by row, gzip unpacked); Prefect's database, where flow and task run logs go; every
    record Forewarn logged at DEBUG or above, unmasked; and what the CLI prints for the run.

    One file is left out on purpose: <home>/customers.parquet IS the contact book (the
    registry the dispatcher looks contacts up in at send time), not a log or an output."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    from flows.cli import _report
    from serving.outbox import count

    first, second = two_runs
    home = slice_settings.paths.home
    registry_file = slice_settings.paths.customers_file
    registry = pd.read_parquet(registry_file)
    contacts = Contacts.from_registry(registry)
    assert len(registry) > 1000 and registry["wechat_openid"].notna().sum() > 10
    assert len(contacts) > len(registry)  # an e-mail each, plus phones and OpenIDs
    # the search finds this registry's contacts where they are (it can fail)
    assert leaks_in_files([registry_file], contacts)

    prefect_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    roots = [Path(first["run_dir"]), Path(second["run_dir"]), home, prefect_db]
    searched = files_under(roots[:3], exclude=[registry_file])
    assert {"logs", "mlflow.db", "mlartifacts", "outbox.db"} <= {
        p.relative_to(home).parts[0] for p in searched if p.is_relative_to(home)}
    assert {"risk_windows.parquet", "advisories.jsonl", "run.json"} <= {p.name for p in searched}
    log_text = (home / "logs" / "forewarn.log").read_text()
    from flows.nightly import STAGES

    assert (f"forewarn.progress.nightly: stage {len(STAGES)} of {len(STAGES)}: "
            f"{STAGES[-1]}") in log_text  # the whole run went through the CLI's log file
    assert leaks_in_files(roots, contacts, exclude=[registry_file]) == {}

    # the outbox rows the runs enqueued, payload by payload
    with sqlite3.connect(home / "outbox.db") as conn:
        payloads = [row[0] for row in conn.execute("SELECT payload FROM outbox")]
    conn.close()
    assert len(payloads) == count(slice_settings.paths.outbox_url) == \
        first["advisories"]["decided"] > 0
    assert not any(contacts.find(p) for p in payloads)

    # every record logged, unmasked, DEBUG included
    assert run_logs.level == logging.DEBUG
    for source in ("forewarn.progress.nightly: stage", "features.weather: wrote",
                   "prefect.flow_runs: model gate:"):  # Forewarn's modules, the flow's logger
        assert any(source in line for line in run_logs.lines), source
    assert contacts.find("\n".join(run_logs.lines)) == set()

    # what `forewarn nightly` prints for these runs
    capsys.readouterr()
    _report(first)
    _report(second)
    printed = capsys.readouterr()
    assert f"outputs: {first['run_dir']}" in printed.out
    assert contacts.find(printed.out + printed.err) == set()


def test_each_published_run_is_announced_to_subscribers_signed(two_runs, subscriber):
    """Every published run sends one signed CloudEvent per subscriber, after run.json."""
    first, second = two_runs
    sink, _ = subscriber  # other tests' runs of this module announce theirs too
    assert sink.received[f"{first['run_id']}.published"] == 1
    assert sink.received[f"{second['run_id']}.published"] == 1
    event = sink.bodies[f"{first['run_id']}.published"]
    assert event["specversion"] == "1.0" and event["type"] == "org.forewarn.run.published"
    assert event["data"]["counts"]["risk_windows"] == first["windows"]
    assert first["subscribers_notified"] == [{"subscriber": "notifier", "outcome": "sent",
                                              "status": 200, "attempts": 1, "error": None}]
