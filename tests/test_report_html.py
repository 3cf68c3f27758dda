"""The run report (report.html) and the run's Data Docs, on run directories written at test
time by serving.publish on six real Kentucky counties. The report is rendered in headless
Chromium: the DOM Chromium builds must hold one map path per area, coloured by risk, and the
windows table; a screenshot must show a drawn map. Without chromium on the PATH these tests
skip, unless FOREWARN_REQUIRE_CHROMIUM is set (CI sets it), then they fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from features.areas import read_area_shapes
from serving import publish
from serving.report_html import (
    PALETTE,
    REPORT_HTML,
    advisory_counts,
    risk_colour,
    scale_top,
    write_run_report,
)

# county FIPS -> peak hourly probability in the test run (Hopkins highest, Pike lowest)
PEAKS = {"21107": 0.62, "21067": 0.41, "21111": 0.27, "21227": 0.15, "21059": 0.08,
         "21195": 0.03}
NAMES = {"21107": "Hopkins County", "21067": "Fayette County", "21111": "Jefferson County",
         "21227": "Warren County", "21059": "Daviess County", "21195": "Pike County"}
AS_OF = pd.Timestamp("2023-07-01T00:00:00Z")
RUN_ID = "20230701T0000Z-20261204T100000Z-abcdef"
HORIZON = 24
# (area, first hour, hours); ranked by expected customers
WINDOWS = [("21107", 10, 4), ("21067", 12, 3), ("21111", 14, 2)]
HOSTILE = '<script>alert("x")</script>'  # a driver text that must come out escaped


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("FOREWARN_REQUIRE_CHROMIUM"):
        pytest.fail("chromium not found on PATH and FOREWARN_REQUIRE_CHROMIUM is set "
                    "(install it: apt-get install -y --no-install-recommends chromium)")
    pytest.skip("chromium not installed (set FOREWARN_REQUIRE_CHROMIUM=1 to fail instead)")


def _run_chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = _chromium()
    with tempfile.TemporaryDirectory(prefix="forewarn-chromium-") as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=True)


def _hourly() -> pd.DataFrame:
    hours = pd.date_range(AS_OF + pd.Timedelta(hours=1), periods=HORIZON, freq="h")
    rows = []
    for area, peak in PEAKS.items():
        for i, ts in enumerate(hours):
            prob = peak * (0.3 + 0.7 * max(0.0, 1 - abs(i - 12) / 12))  # peaks at hour 12
            rows.append({"area_id": area, "ts": ts, "issue_ts": AS_OF, "lead_h": i + 1,
                         "prob": prob, "climatology": 0.02, "lift": prob / 0.02,
                         "expected_customers": prob * 500, "model_kind": "pooled"})
    return pd.DataFrame(rows)


def _windows(empty: bool) -> pd.DataFrame:
    rows = []
    for rank, (area, first, hours) in enumerate([] if empty else WINDOWS, start=1):
        start = AS_OF + pd.Timedelta(hours=first)
        rows.append({
            "window_id": f"w{rank:015d}", "area_id": area, "area_name": NAMES[area],
            "start": start, "end": start + pd.Timedelta(hours=hours), "hours": hours,
            "peak_prob": PEAKS[area], "mean_prob": PEAKS[area] * 0.8, "peak_ts": start,
            "peak_lift": 3.0, "expected_customers": 1000 * PEAKS[area],
            "customers_served": 20000,
            "drivers": [{"feature": "wx_prcp_mm", "value": 41.0, "contribution": 0.5,
                         "text_en": "daily rain 41 mm" if rank > 1 else HOSTILE,
                         "text_zh": "日降雨量 41 毫米"}],
            "rank": rank, "model_version": "7", "run_id": RUN_ID, "weather_source": "replay",
            "issue_ts": AS_OF, "duration_p10_h": 0.5, "duration_p50_h": 2.0,
            "duration_p90_h": 9.0})
    columns = ["window_id", "area_id", "area_name", "start", "end", "hours", "peak_prob",
               "drivers", "rank", "expected_customers"]
    return pd.DataFrame(rows) if rows else pd.DataFrame({c: [] for c in columns})


def _advisories(empty: bool) -> list[dict]:
    if empty:
        return []
    out = []
    plan = [("residential", ["push", "sms"], "risk_advisory", 5),
            ("residential", ["sms", "email"], "risk_advisory", 3),
            ("critical", ["voice", "sms"], "risk_reminder", 2),
            ("industrial", ["email"], "risk_update", 1)]
    for segment, channels, kind, n in plan:
        for i in range(n):
            out.append({"advisory_id": f"{segment}-{channels[0]}-{i}", "run_id": RUN_ID,
                        "kind": kind, "customer_id": f"SYN-21107-{segment[:3]}{i}",
                        "area_id": "21107", "segment": segment, "channels": channels,
                        "language": "en", "synthetic": True})
    return out


def _write_run(root: Path, empty: bool = False) -> Path:
    run_dir = root / RUN_ID
    windows, advisories = _windows(empty), _advisories(empty)
    checksums = publish.write_outputs(
        run_dir, windows=windows, hourly=_hourly(), advisories=advisories,
        metrics={"overall": {}}, meta={"model_version": "7", "run_id": RUN_ID,
                                       "weather_source": "replay"})
    areas = pd.DataFrame({"area_id": list(PEAKS), "customers_served": 20000,
                          "timezone": ["America/Chicago", "America/New_York",
                                       "America/New_York", "America/Chicago",
                                       "America/Chicago", "America/New_York"]})
    publish.write_advice_inputs(run_dir, areas, pd.DataFrame({"area_id": []}),
                                pd.DataFrame({"customer_id": []}))
    publish.write_manifest(run_dir, {
        "run_id": RUN_ID, "as_of": AS_OF.isoformat(), "created_utc": "2026-12-04T10:00:00+00:00",
        "profile": "kentucky", "horizon_h": HORIZON, "weather_source": "replay",
        "weather_note": "observed weather replayed",
        "model": {"name": "forewarn-risk", "version": "7", "gate": {"reasons": ["promoted"]}},
        "contracts": [
            {"suite": "lgeku_events", "source": "/srv/data/lgeku_outage_events.csv.gz",
             "rows_in": 1000, "rows_passed": 975, "rows_quarantined": 25,
             "failures": [{"rule": "values_between", "column": "customers", "n_failed": 25,
                           "passed": True}]},
            {"suite": "customer_counts", "source": "/srv/data/MCC.csv", "rows_in": 120,
             "rows_passed": 120, "rows_quarantined": 0, "failures": []}],
        "quarantined_rows": 25, "windows": len(windows),
        "advisories": {"decided": len(advisories)}, "outputs": checksums,
        **({} if empty else {"weather_drivers": DRIVERS, "telemetry": TELEMETRY})})
    return run_dir


DRIVERS = {"sources": {"drv_gust_max_24h_ms": "unavailable", "drv_rain_24h_mm": "daily"},
           "horizon_max": {"drv_gust_max_24h_ms": None, "drv_rain_24h_mm": 65.3},
           "in_model": False}
TELEMETRY = {"stand_in": True, "model_input": False,
             "assets": [{"asset_id": "ett-h1", "area_id": "21067", "hours": 17420}],
             "anomalies": {"counts": {"gap": 0, "flat_line": 2516, "spike": 18}},
             "feature_ranges": {"tel_load_rel": {"min": 0.0, "median": 1.005, "max": 2.7261,
                                                 "present_share": 0.9712}}}


@pytest.fixture(scope="module")
def shapes(data_dir):
    return read_area_shapes(data_dir / "reference_geo" / "geojson-counties-fips.json", PEAKS)


@pytest.fixture(scope="module")
def report(tmp_path_factory, shapes) -> Path:
    return write_run_report(_write_run(tmp_path_factory.mktemp("runs")), shapes)


def test_colour_scale_runs_from_pale_to_dark() -> None:
    assert scale_top(0.62) == 0.75 and scale_top(0.004) == 0.01 and scale_top(0.0) == 0.01
    assert risk_colour(0.0, 0.75) == PALETTE[0] and risk_colour(0.75, 0.75) == PALETTE[-1]
    assert risk_colour(2.0, 0.75) == PALETTE[-1]  # clipped at the top
    brightness = [sum(int(risk_colour(p, 1.0)[i:i + 2], 16) for i in (1, 3, 5))
                  for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert brightness == sorted(brightness, reverse=True)  # more risk, darker


def test_advisory_counts_by_segment_first_channel_and_kind() -> None:
    counts = advisory_counts(json.dumps(a) for a in _advisories(False))
    assert counts["total"] == 11
    assert {r["name"]: r["n"] for r in counts["by_segment"]} == {
        "residential": 8, "critical": 2, "industrial": 1}
    assert {r["name"]: r["n"] for r in counts["by_channel"]} == {
        "push": 5, "sms": 3, "voice": 2, "email": 1}
    assert {r["name"]: r["n"] for r in counts["by_kind"]} == {
        "risk_advisory": 8, "risk_reminder": 2, "risk_update": 1}


def test_report_is_one_offline_file_with_escaped_text(report) -> None:
    text = report.read_text(encoding="utf-8")
    assert report.name == REPORT_HTML
    assert not re.search(r"<script|<link|<img|@import|url\(", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert HOSTILE not in text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert "/srv/data" not in text  # contract sources by file name only
    assert "lgeku_outage_events.csv.gz" in text and "Quarantined rows</dt><dd>25" in text
    for advisory in _advisories(False):
        assert advisory["customer_id"] not in text  # counts only, no customer


def test_weather_drivers_and_telemetry_are_shown(report, tmp_path, shapes) -> None:
    text = report.read_text(encoding="utf-8")
    drivers = text[text.index('id="drivers"'):text.index('id="telemetry"')]
    assert re.search(r"drv_gust_max_24h_ms</td><td class=\"bad\">unavailable", drivers)
    assert re.search(r"drv_rain_24h_mm</td><td class=\"\">daily</td><td class=\"num\">65.3",
                     drivers)
    assert "ett-h1 (area 21067, 17,420 h); flagged values: 0 gap, 2,516 flat-line, 18 spike" \
        in text and "a stand-in, not a model input" in text
    assert re.search(r"tel_load_rel</td>.*2.7261</td><td class=\"num\">97 %", text)
    empty = write_run_report(_write_run(tmp_path, empty=True), shapes).read_text()
    assert "No equipment telemetry configured" in empty and 'id="telemetry"' not in empty


def test_chromium_draws_the_map_and_the_windows_table(report) -> None:
    dom = _run_chromium(report, "--dump-dom").stdout
    paths = re.findall(r'<path class="area" data-area-id="(\d+)" data-peak="([\d.]+)" '
                       r'fill="(#[0-9a-f]{6})"[^>]* d="(M[^"]+)"', dom)
    assert sorted(p[0] for p in paths) == sorted(PEAKS)  # one path per area
    fill = {area: colour for area, _, colour, _ in paths}
    peak = {area: float(p) for area, p, _, _ in paths}
    assert peak["21107"] == pytest.approx(PEAKS["21107"], abs=1e-4)
    assert fill["21107"] != fill["21195"]  # highest and lowest risk differ
    assert fill["21107"] == risk_colour(PEAKS["21107"], 0.75)
    assert all(len(d) > 100 for *_, d in paths)  # real outlines, not dots
    rows = re.findall(r'<tr class="window" data-area-id="(\d+)"><td class="num">(\d+)</td>', dom)
    assert rows == [(area, str(rank)) for rank, (area, _, _) in enumerate(WINDOWS, start=1)]
    # Hopkins is on Central time: its window starts 10 h after 00:00 UTC, 05:00 CDT
    assert "Sat 1 Jul 05:00 CDT" in dom and "about 2.0 h (likely 0.5–9.0 h)" in dom
    assert re.search(r'id="timeline-customers" points="[\d., ]{200,}"', dom)
    assert 'id="advisories-by_channel"' in dom


def test_chromium_screenshot_shows_a_drawn_map(report, tmp_path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    _run_chromium(report, f"--screenshot={shot}", "--window-size=1280,2000")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    top = image.crop((0, 0, 1280, 700))  # header and map
    colours = top.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # outlines, fills and text; a blank page has a handful
    counts = {rgb: n for n, rgb in colours}
    for area in ("21107", "21195"):  # the highest- and lowest-risk fills are painted
        rgb = tuple(int(risk_colour(PEAKS[area], 0.75)[i:i + 2], 16) for i in (1, 3, 5))
        near = sum(n for c, n in counts.items()
                   if max(abs(a - b) for a, b in zip(c, rgb, strict=True)) <= 3)
        assert near > 200, (area, rgb)


def test_empty_run_still_draws_the_map_and_says_so(tmp_path, shapes) -> None:
    page = write_run_report(_write_run(tmp_path, empty=True), shapes)
    dom = _run_chromium(page, "--dump-dom").stdout
    assert len(re.findall(r'<path class="area"', dom)) == len(PEAKS)
    assert 'id="no-windows"' in dom and 'id="no-advisories"' in dom
    assert '<tr class="window"' not in dom


def test_data_docs_of_a_real_check_are_linked_from_the_report(tmp_path, data_dir) -> None:
    from typer.testing import CliRunner

    from features.contracts import Rule, Suite, check
    from flows.cli import app
    from serving.report_html import VALIDATIONS_JSON, publish_run_views

    frame = pd.DataFrame({"customers": [5, 12, -3, 40], "cause": ["Tree", "Tree", "Wind", "?"]})
    suite = Suite("test_events", ("customers", "cause"),
                  (Rule("customers", "between", min=0, hint="counts are never negative"),
                   Rule("cause", "in_set", values=("Tree", "Wind"))), max_quarantine_share=0.6)
    _, result = check(frame, suite, source=tmp_path / "events.csv")
    record = result.validation_record()
    assert record is not None and "validation" not in result.to_dict()
    columns = {r["expectation_config"]["kwargs"]["column"]
               for r in record["validation"]["results"]}
    assert columns == {"customers", "cause"}  # real names, not GX's r0/r1
    run_dir = _write_run(tmp_path)
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    publish.write_manifest(run_dir, manifest | {
        "contracts": [*manifest["contracts"], result.to_dict()]})
    counties = data_dir / "reference_geo" / "geojson-counties-fips.json"
    views = publish_run_views(run_dir, counties, validations=[record])
    assert (views.report, views.data_docs, views.validations) == (
        REPORT_HTML, "data_docs/index.html", VALIDATIONS_JSON)
    [page] = (run_dir / "data_docs" / "validations" / "test_events" / RUN_ID).glob(
        "*/events.csv.html")
    text = page.read_text(encoding="utf-8")
    assert "customers" in text and "cause" in text and "-3.0" in text and RUN_ID in text
    report = (run_dir / REPORT_HTML).read_text(encoding="utf-8")
    assert '<a href="data_docs/index.html">' in report
    # a suite with a validation page links to it (GX's index needs a CDN script to list it)
    [link] = re.findall(r'<a class="docs" href="([^"]+)">test_events</a>', report)
    assert (run_dir / link).resolve() == page.resolve()

    # `forewarn report-html` rebuilds both from the run directory alone
    (run_dir / REPORT_HTML).unlink()
    shutil.rmtree(run_dir / "data_docs")
    out = CliRunner().invoke(app, ["report-html", "--run", str(run_dir)])
    assert out.exit_code == 0, out.output
    assert f"report: {run_dir / REPORT_HTML}" in out.output
    assert (run_dir / "data_docs" / "index.html").is_file()
    assert page.is_file()  # the same page: the validation keeps its run time
    assert "Sat 1 Jul 05:00 CDT" in (run_dir / REPORT_HTML).read_text(encoding="utf-8")


def test_report_html_cli_names_a_missing_run(tmp_path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    out = CliRunner().invoke(app, ["report-html", "--run", str(tmp_path / "nope")])
    assert out.exit_code == 2 and "not a finished run directory" in out.output
