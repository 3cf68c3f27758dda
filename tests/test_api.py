"""The API for downstream notifiers, through fastapi.testclient on run directories written at
test time by serving.publish (the nightly flow is not run), and the run-published webhook
against a real local HTTP server. Ends with schemathesis over the app's OpenAPI document."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection
from sqlalchemy import select

from configs.settings import ApiToken, Settings, api_tokens, load_settings
from serving import publish
from serving.api import create_app
from serving.feedback_store import feedback as feedback_table
from serving.outbox import enqueue_payloads, open_engine, outbox
from serving.run_events import EVENT_TYPE, notify_subscribers
from tests.local_servers import Request, http_server, json_reply

REPO = Path(__file__).resolve().parents[1]
READ = "reader-token-0123456789abcdef"
WRITE = "writer-token-0123456789abcdef"
WRITE_ONLY = "wonly-token-0123456789abcdef0"
AREAS = {"21111": "Jefferson County", "21067": "Fayette County", "21107": "Hopkins County"}
OLD_RUN = "20230630T0000Z-20261203T100000Z-aaaaaa"
NEW_RUN = "20230701T0000Z-20261203T110000Z-bbbbbb"
NO_OUTAGES_RUN = "20230629T0000Z-20261203T090000Z-cccccc"
SECRET_PATH = "/srv/secret/data/lgeku_outage_events.csv.gz"


def _tokens() -> tuple[ApiToken, ...]:
    return api_tokens({"FOREWARN_API_TOKENS":
                       f"notifier:{READ}:read,app:{WRITE}:read+write,ingest:{WRITE_ONLY}:write"})


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _frames(run_id: str, as_of: pd.Timestamp, horizon: int = 6):
    """Windows, hourly risk, advisories and open outages of a small run: 3 areas x horizon h."""
    hours = pd.date_range(as_of, periods=horizon, freq="h", tz="UTC")
    hourly = pd.DataFrame([
        {"area_id": area, "ts": ts, "issue_ts": as_of, "lead_h": i + 1,
         "prob": round(0.05 + 0.1 * a + 0.05 * i, 3), "climatology": 0.02,
         "expected_customers": 10.0 * (a + 1) * (i + 1), "model_kind": "pooled"}
        for a, area in enumerate(AREAS) for i, ts in enumerate(hours)
    ]).assign(lift=lambda f: f["prob"] / f["climatology"])
    rows = []
    for rank, (area, start_h, hours_n, peak) in enumerate(
            [("21107", 1, 3, 0.72), ("21067", 0, 2, 0.45), ("21107", 4, 2, 0.31),
             ("21111", 3, 1, 0.22)], start=1):
        start = as_of + pd.Timedelta(hours=start_h)
        rows.append({
            "window_id": hashlib.sha256(f"{run_id}{rank}".encode()).hexdigest()[:16],
            "area_id": area, "area_name": AREAS[area], "start": start,
            "end": start + pd.Timedelta(hours=hours_n), "hours": hours_n, "peak_prob": peak,
            "mean_prob": peak - 0.1, "peak_ts": start, "peak_lift": 2.5,
            "expected_customers": 1000 * peak, "customers_served": 20000,
            "drivers": [{"feature": "wx_prcp_mm", "value": 31.5, "contribution": 0.4,
                         "text_en": "daily rain 32 mm", "text_zh": "日降雨量 32 毫米"}],
            "rank": rank, "model_version": "3", "run_id": run_id, "weather_source": "replay",
            "issue_ts": as_of, "duration_p10_h": 0.3, "duration_p50_h": 0.7,
            "duration_p90_h": float("nan") if rank == 4 else 7.5,
        })
    windows = pd.DataFrame(rows)
    advisories = []
    for w in rows[:3]:
        for segment in ("residential", "critical"):
            for n in range(3):
                customer = f"SYN-{w['area_id']}-{segment[:3]}{n}"
                advisories.append({
                    "advisory_id": hashlib.sha256(f"{customer}{w['window_id']}".encode()).hexdigest(),
                    "run_id": run_id, "kind": "risk_advisory", "customer_id": customer,
                    "area_id": w["area_id"], "window_id": w["window_id"], "segment": segment,
                    "channel": "sms", "language": "en", "timezone": "America/New_York",
                    "window_start_utc": w["start"].isoformat(), "window_end_utc": w["end"].isoformat(),
                    "send_after_utc": as_of.isoformat(), "peak_prob": w["peak_prob"],
                    "expected_customers": w["expected_customers"],
                    "subject": "Possible power outage", "body": "Call 1-800-981-0600.",
                    "sms_text": "Possible outage", "synthetic": True})
                if segment == "critical":  # the policy engine's shape (serving.advisories)
                    adv = advisories[-1]
                    for gone in ("subject", "body", "sms_text", "channel"):
                        adv.pop(gone)
                    adv |= {"message_type": "risk", "reason": "", "area_name": AREAS[w["area_id"]],
                            "event_day": "2023-07-01", "critical": True,
                            "channels": ["sms", "voice"], "held_for_quiet_hours": False,
                            "step_h": 24, "level": "high", "duration_p50_h": 0.7,
                            "duration_p10_h": 0.3, "duration_p90_h": None, "restored_utc": None,
                            "decided_at_utc": as_of.isoformat(),
                            "content": {"sms": {"text": "Possible outage"},
                                        "voice": {"script": "This is Forewarn."},
                                        "push": {"title": "Outage risk", "body": "High",
                                                 "data": {"advisory_id": "x"}},
                                        "wechat": {"data": {"first": "Outage risk"}}}}
    outages = pd.DataFrame([
        {"event_id": f"lgeku:{i}", "area_id": area, "first_seen_utc": as_of - pd.Timedelta(hours=2),
         "elapsed_h": 2.0, "cause": "Tree", "customers": 10 * (i + 1), "p10_h": 0.5, "p50_h": 2.0,
         "p90_h": 6.0, "restored_p10_utc": as_of + pd.Timedelta(hours=0.5),
         "restored_p50_utc": as_of + pd.Timedelta(hours=2),
         "restored_p90_utc": as_of + pd.Timedelta(hours=6),
         "utility_etr_utc": pd.NaT if i == 0 else as_of + pd.Timedelta(hours=3)}
        for i, area in enumerate(["21111", "21067", "21067"])
    ])
    return windows, hourly, advisories, outages


def _publish(runs: Path, run_id: str, as_of: str, with_outages: bool = True) -> Path:
    ts = pd.Timestamp(as_of)
    windows, hourly, advisories, outages = _frames(run_id, ts)
    run_dir = runs / run_id
    checksums = publish.write_outputs(
        run_dir, windows=windows, hourly=hourly, advisories=advisories,
        metrics={"overall": {"model_brier": 0.01}},
        meta={"model_version": "3", "run_id": run_id, "weather_source": "replay"},
        open_outages=outages if with_outages else None)
    publish.write_manifest(run_dir, {
        "run_id": run_id, "as_of": ts.isoformat(), "created_utc": "2026-12-03T11:00:00+00:00",
        "profile": "kentucky", "horizon_h": 6, "weather_source": "replay",
        "model": {"name": "forewarn-risk", "version": "3", "alias": "champion",
                  "mlflow_run_id": "abc", "tracking_uri": "sqlite:////srv/secret/mlflow.db"},
        "inputs": [{"path": SECRET_PATH, "bytes": 123, "sha256": "ab" * 32}],
        "windows": len(windows), "quarantined_rows": 0,
        "advisories": {"decided": len(advisories), "inserted": len(advisories), "duplicates": 0},
        "restoration": {"open_outages_at_as_of": len(outages) if with_outages else None},
        "outputs": checksums, "timings_s": {"publish": 0.1},
    })
    return run_dir


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("api-home")
    runs = home / "runs"
    _publish(runs, NO_OUTAGES_RUN, "2023-06-29T00:00:00Z", with_outages=False)
    _publish(runs, OLD_RUN, "2023-06-30T00:00:00Z")
    _publish(runs, NEW_RUN, "2023-07-01T00:00:00Z")
    (runs / "20990101T0000Z-unfinished").mkdir()  # no run.json: not a run yet
    return home


@pytest.fixture(scope="module")
def cfg(home):
    return load_settings(REPO / "configs" / "kentucky.yaml",
                         overrides={"paths": {"home": str(home)}})


@pytest.fixture(scope="module")
def app(cfg):
    return create_app(cfg, tokens=_tokens())


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


# ------------------------------------------------------------------------ health and auth


def test_health_needs_no_token_and_names_the_latest_run(client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["runs_dir"] and body["outbox"]
    assert body["latest_run_id"] == NEW_RUN
    assert body["schema_version"] == publish.SCHEMA_VERSION


def test_health_degraded_when_runs_dir_missing(cfg, tmp_path) -> None:
    app = create_app(cfg, tokens=_tokens(), runs_dir=tmp_path / "nowhere")
    with TestClient(app) as c:
        r = c.get("/health")
    assert r.status_code == 503
    assert r.json()["runs_dir"] is False and r.json()["outbox"] is True


@pytest.mark.parametrize("path", ["/v1/risk-windows", "/v1/runs/latest", "/v1/advisories",
                                  "/v1/areas/21107/risk", "/v1/outages/open"])
def test_reads_need_a_valid_token(client, path) -> None:
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "missing bearer token" in r.json()["detail"]
    bad = client.get(path, headers=_auth("not-a-token-at-all-0000"))
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert client.get(path, headers=_auth(READ)).status_code == 200


def test_scopes(client) -> None:
    body = {"feedback_id": "fb-scope", "customer_id": "SYN-1", "kind": "useful"}
    r = client.post("/v1/feedback", json=body, headers=_auth(READ))
    assert r.status_code == 403
    assert "lacks the 'write' scope" in r.json()["detail"]
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert client.get("/v1/risk-windows", headers=_auth(WRITE_ONLY)).status_code == 403
    assert client.post("/v1/feedback", json=body, headers=_auth(WRITE)).status_code == 201


def test_token_list_format_errors_name_the_entry_not_the_token() -> None:
    from configs.settings import SettingsError

    with pytest.raises(SettingsError, match=r"entry 2 \('b'\).*at least 16") as err:
        api_tokens({"FOREWARN_API_TOKENS": f"a:{READ}:read,b:short:read"})
    assert "short" not in str(err.value).replace("'b'", "")
    with pytest.raises(SettingsError, match="scopes"):
        api_tokens({"FOREWARN_API_TOKENS": f"a:{READ}:admin"})
    assert api_tokens({}) == ()


def test_openapi_is_versioned_and_declares_bearer(client, cfg) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["info"]["version"] == cfg.api.version
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"/v1/risk-windows", "/v1/areas/{area_id}/risk", "/v1/runs/latest",
            "/v1/runs/{run_id}", "/v1/advisories", "/v1/feedback", "/v1/acknowledgements",
            "/v1/outages/open", "/health"} <= set(doc["paths"])


# ---------------------------------------------------------------------------- risk windows


def test_risk_windows_latest_run_ranked(client) -> None:
    r = client.get("/v1/risk-windows", headers=_auth(READ))
    body = r.json()
    assert body["run_id"] == NEW_RUN and body["schema_version"] == publish.SCHEMA_VERSION
    assert body["total"] == 4 and body["next_offset"] is None
    assert [w["rank"] for w in body["items"]] == [1, 2, 3, 4]
    first = body["items"][0]
    assert first["area_id"] == "21107" and first["peak_prob"] == pytest.approx(0.72)
    assert first["start"] == "2023-07-01T01:00:00Z" and first["end"] == "2023-07-01T04:00:00Z"
    assert first["drivers"][0]["text_en"] == "daily rain 32 mm"
    assert body["items"][3]["duration_p90_h"] is None  # NaN in the file -> null


def test_risk_windows_filters(client) -> None:
    def ids(**params):
        r = client.get("/v1/risk-windows", params=params, headers=_auth(READ))
        assert r.status_code == 200, r.text
        return [w["rank"] for w in r.json()["items"]], r.json()["total"]

    assert ids(min_probability=0.4) == ([1, 2], 2)
    assert ids(area_id="21107") == ([1, 3], 2)
    assert ids(area_id="99999") == ([], 0)
    # windows overlapping [02:00, 04:00): rank 1 (01-04) and rank 4 (03-04)
    assert ids(**{"from": "2023-07-01T02:00:00Z", "to": "2023-07-01T04:00:00Z"}) == ([1, 4], 2)
    # a zone other than UTC is converted: 22:00-04:00 on 30 June = 02:00 UTC
    assert ids(**{"from": "2023-06-30T22:00:00-04:00"}) == ([1, 3, 4], 3)
    assert ids(min_probability=0.3, area_id="21107", **{"to": "2023-07-01T02:00:00Z"}) == ([1], 1)
    assert ids(**{"from": "0001-01-01T00:00:00+10:00", "to": "9999-12-31T23:59:59Z"})[1] == 4


def test_risk_windows_pagination(client) -> None:
    seen, offset, pages = [], 0, 0
    while offset is not None:
        r = client.get("/v1/risk-windows", params={"limit": 3, "offset": offset},
                       headers=_auth(READ)).json()
        assert r["total"] == 4 and r["limit"] == 3
        seen += [w["rank"] for w in r["items"]]
        offset, pages = r["next_offset"], pages + 1
    assert seen == [1, 2, 3, 4] and pages == 2
    beyond = client.get("/v1/risk-windows", params={"offset": 10}, headers=_auth(READ)).json()
    assert beyond["items"] == [] and beyond["total"] == 4
    too_big = client.get("/v1/risk-windows", params={"limit": 5000}, headers=_auth(READ))
    assert too_big.status_code == 422 and "less than or equal to 1000" in too_big.text


def test_risk_windows_of_a_past_run_and_bad_ids(client) -> None:
    r = client.get("/v1/risk-windows", params={"run_id": OLD_RUN}, headers=_auth(READ))
    assert r.status_code == 200 and r.json()["run_id"] == OLD_RUN
    assert all(w["run_id"] == OLD_RUN for w in r.json()["items"])
    missing = client.get("/v1/risk-windows", params={"run_id": "20200101T0000Z-x"},
                         headers=_auth(READ))
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    unfinished = client.get("/v1/risk-windows", params={"run_id": "20990101T0000Z-unfinished"},
                            headers=_auth(READ))
    assert unfinished.status_code == 404
    for bad in ("../runs/" + NEW_RUN, "..", "/etc/passwd", ".hidden"):
        r = client.get("/v1/risk-windows", params={"run_id": bad}, headers=_auth(READ))
        assert r.status_code == 422, bad
    naive = client.get("/v1/risk-windows", params={"from": "2023-07-01T00:00:00"},
                       headers=_auth(READ))
    assert naive.status_code == 422 and "timezone" in naive.text
    unix = client.get("/v1/risk-windows", params={"to": "0.5"}, headers=_auth(READ))
    assert unix.status_code == 422 and "ISO-8601" in unix.text


# ----------------------------------------------------------------------------- area risk


def test_area_risk_hourly(client) -> None:
    r = client.get("/v1/areas/21067/risk", headers=_auth(READ))
    assert r.status_code == 200
    body = r.json()
    assert body["area_id"] == "21067" and body["area_name"] == "Fayette County"
    assert body["run_id"] == NEW_RUN and body["model_version"] == "3"
    assert [h["lead_h"] for h in body["items"]] == [1, 2, 3, 4, 5, 6]
    assert body["items"][0]["ts"] == "2023-07-01T00:00:00Z"
    assert body["items"][0]["prob"] == pytest.approx(0.15)


def test_area_without_a_window_is_named_from_the_area_table(tmp_path) -> None:
    as_of = pd.Timestamp("2023-07-01T00:00:00Z")
    windows, hourly, advisories, _ = _frames(NEW_RUN, as_of)
    run_dir = tmp_path / "runs" / NEW_RUN
    checksums = publish.write_outputs(run_dir, windows=windows[windows["area_id"] != "21111"],
                                      hourly=hourly, advisories=advisories, metrics={}, meta={})
    areas = pd.DataFrame({"area_id": list(AREAS), "area_name": list(AREAS.values()),
                          "customers_served": 1000, "timezone": "America/New_York"})
    checksums |= publish.write_advice_inputs(run_dir, areas, pd.DataFrame({"event_id": []}),
                                             pd.DataFrame({"customer_id": []}))
    publish.write_manifest(run_dir, {"run_id": NEW_RUN, "as_of": as_of.isoformat(),
                                     "outputs": checksums})
    cfg = load_settings(REPO / "configs" / "kentucky.yaml",
                        overrides={"paths": {"home": str(tmp_path)}})
    with TestClient(create_app(cfg, tokens=_tokens())) as c:
        r = c.get("/v1/areas/21111/risk", headers=_auth(READ))
    assert r.status_code == 200, r.text
    assert r.json()["area_name"] == "Jefferson County"


def test_unknown_area_is_404_with_detail(client) -> None:
    r = client.get("/v1/areas/00000/risk", headers=_auth(READ))
    assert r.status_code == 404
    assert r.json()["detail"] == f"area '00000' is not in run {NEW_RUN} (3 areas are)"


# ----------------------------------------------------------------------------------- runs


def test_latest_run_manifest_without_server_paths(client) -> None:
    r = client.get("/v1/runs/latest", headers=_auth(READ))
    body = r.json()
    assert body["run_id"] == NEW_RUN and body["as_of"] == "2023-07-01T00:00:00Z"
    assert set(body["outputs"]) == {"risk_windows.parquet", "risk_windows.json",
                                    "risk_hourly.parquet", "advisories.jsonl", "metrics.json",
                                    "outage_estimates.parquet"}
    assert body["inputs"] == [{"name": "lgeku_outage_events.csv.gz", "bytes": 123,
                               "sha256": "ab" * 32}]
    assert "/srv/secret" not in r.text and "tracking_uri" not in r.text
    assert body["links"]["risk_windows"] == f"/v1/risk-windows?run_id={NEW_RUN}"


def test_run_by_id_404_and_traversal(client) -> None:
    assert client.get(f"/v1/runs/{OLD_RUN}", headers=_auth(READ)).json()["run_id"] == OLD_RUN
    r = client.get("/v1/runs/20200101T0000Z-nope", headers=_auth(READ))
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    for bad in ("..%2F..%2Fetc%2Fpasswd", ".hidden", "%2E%2E", "a%2Fb", "..%2Frun.json",
                f"{NEW_RUN}%2F..%2F{OLD_RUN}"):
        r = client.get(f"/v1/runs/{bad}", headers=_auth(READ))
        assert r.status_code == 422, bad
    assert client.get("/v1/runs/..%2Fx").status_code == 401  # auth still comes first


# ----------------------------------------------------------------------------- advisories


def test_advisories_filters_and_pages(client) -> None:
    r = client.get("/v1/advisories", headers=_auth(READ)).json()
    assert r["total"] == 18 and len(r["items"]) == 18
    crit = client.get("/v1/advisories", params={"segment": "critical", "area_id": "21107"},
                      headers=_auth(READ)).json()
    assert crit["total"] == 6
    assert {(a["segment"], a["area_id"]) for a in crit["items"]} == {("critical", "21107")}
    first = crit["items"][0]
    assert first["channels"] == ["sms", "voice"] and first["level"] == "high"
    assert first["content"]["voice"]["script"] == "This is Forewarn."
    assert "data" not in first["content"]["push"] and first["content"]["wechat"]["text"] is None
    page = client.get("/v1/advisories", params={"limit": 5, "offset": 15, "kind": "risk_advisory"},
                      headers=_auth(READ)).json()
    assert len(page["items"]) == 3 and page["next_offset"] is None and page["offset"] == 15
    none = client.get("/v1/advisories", params={"kind": "all_clear"}, headers=_auth(READ)).json()
    assert none["total"] == 0


def test_advisories_never_carry_contact_details(client, home) -> None:
    path = home / "runs" / NEW_RUN / publish.ADVISORIES_JSONL
    original = path.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in original.splitlines()]
    tampered = [row | {"phone": "+1 502 555 0100", "email": "ann@example.org",
                       "wechat_openid": "oAbC123456789xyz", "contact": {"sms": "+15025550100"},
                       "content": {"sms": {"text": "hi", "to": "+15025550100"},
                                   "wechat": {"data": {"touser": "oAbC123456789xyz"}},
                                   "email": {"subject": "s", "to": "ann@example.org"}}}
                for row in rows]
    manifest_path = path.parent / publish.MANIFEST_JSON
    manifest = manifest_path.read_text(encoding="utf-8")
    try:  # published that way (the checksum matches): the API still serves no contact
        path.write_text("".join(json.dumps(r) + "\n" for r in tampered), encoding="utf-8")
        doc = json.loads(manifest)
        doc["outputs"][publish.ADVISORIES_JSONL] = publish.sha256_file(path)
        manifest_path.write_text(json.dumps(doc), encoding="utf-8")
        r = client.get("/v1/advisories", params={"limit": 1000}, headers=_auth(READ))
        assert r.status_code == 200 and r.json()["total"] == 18
        for item in r.json()["items"]:
            assert not {"phone", "email", "wechat_openid", "contact"} & set(item)
        for value in ("555 0100", "5025550100", "ann@example.org", "oAbC123456789xyz"):
            assert value not in r.text
    finally:
        path.write_text(original, encoding="utf-8")
        manifest_path.write_text(manifest, encoding="utf-8")


def test_advisory_model_names_every_field_the_engine_writes() -> None:
    """A field the advisory engine adds is served only once AdvisoryOut names it: this fails
    first, so that someone decides it carries no contact detail."""
    from serving.advisories import Advisory
    from serving.api.models import AdvisoryOut

    assert set(Advisory._fields) - set(AdvisoryOut.model_fields) == set()


# ------------------------------------------------------------------------------- outages


def test_open_outages(client) -> None:
    r = client.get("/v1/outages/open", headers=_auth(READ)).json()
    assert r["total"] == 3 and [o["customers"] for o in r["items"]] == [30, 20, 10]
    assert r["items"][2]["utility_etr_utc"] is None
    assert r["items"][0]["restored_p50_utc"] == "2023-07-01T02:00:00Z"
    fay = client.get("/v1/outages/open", params={"area_id": "21067"}, headers=_auth(READ)).json()
    assert fay["total"] == 2
    old = client.get("/v1/outages/open", params={"run_id": NO_OUTAGES_RUN}, headers=_auth(READ))
    assert old.status_code == 404
    assert old.json()["detail"] == f"run {NO_OUTAGES_RUN} has no outage_estimates.parquet"


# --------------------------------------------------------------------------------- ETags


def test_etag_and_304(client) -> None:
    first = client.get("/v1/risk-windows", params={"area_id": "21107"}, headers=_auth(READ))
    tag = first.headers["etag"]
    assert tag.startswith('"') and not tag.startswith("W/")
    again = client.get("/v1/risk-windows", params={"area_id": "21107"},
                       headers=_auth(READ) | {"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    weak = client.get("/v1/risk-windows", params={"area_id": "21107"},
                      headers=_auth(READ) | {"If-None-Match": f'"other", W/{tag}'})
    assert weak.status_code == 304
    other_query = client.get("/v1/risk-windows", params={"area_id": "21067"},
                             headers=_auth(READ) | {"If-None-Match": tag})
    assert other_query.status_code == 200 and other_query.headers["etag"] != tag
    other_run = client.get("/v1/risk-windows", params={"area_id": "21107", "run_id": OLD_RUN},
                           headers=_auth(READ))
    assert other_run.headers["etag"] != tag
    # a 304 still needs a valid token
    assert client.get("/v1/risk-windows", params={"area_id": "21107"},
                      headers={"If-None-Match": tag}).status_code == 401
    for path in ("/v1/runs/latest", f"/v1/runs/{OLD_RUN}", "/v1/advisories",
                 "/v1/areas/21107/risk", "/v1/outages/open"):
        t = client.get(path, headers=_auth(READ)).headers["etag"]
        assert client.get(path, headers=_auth(READ) | {"If-None-Match": t}).status_code == 304


def test_latest_moves_to_a_newly_published_run(cfg, home) -> None:
    app = create_app(cfg, tokens=_tokens())
    with TestClient(app) as c:
        before = c.get("/v1/runs/latest", headers=_auth(READ))
        newer = "20230702T0000Z-20261203T120000Z-dddddd"
        run_dir = _publish(home / "runs", newer, "2023-07-02T00:00:00Z")
        try:
            after = c.get("/v1/runs/latest", headers=_auth(READ) |
                          {"If-None-Match": before.headers["etag"]})
            assert after.status_code == 200 and after.json()["run_id"] == newer
        finally:
            import shutil

            shutil.rmtree(run_dir)


# --------------------------------------------------------------------------------- writes


def test_feedback_is_stored_once_and_masks_contacts(client, app) -> None:
    body = {"feedback_id": "fb-0001", "advisory_id": "a" * 64, "kind": "outage_yes",
            "text": "Lost power at 3pm, call me on +1 (502) 555-0100 or ann@example.org"}
    first = client.post("/v1/feedback", json=body, headers=_auth(WRITE))
    assert first.status_code == 201, first.text
    stored = first.json()
    assert stored["created"] is True and stored["schema_version"] == publish.SCHEMA_VERSION
    assert stored["text"] == "Lost power at 3pm, call me on <phone> or <email>"
    again = client.post("/v1/feedback", json=body, headers=_auth(WRITE))
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["received_at"] == stored["received_at"]
    with app.state.engine.connect() as conn:
        rows = conn.execute(select(feedback_table).where(
            feedback_table.c.feedback_id == "fb-0001")).mappings().all()
    assert len(rows) == 1
    assert rows[0]["kind"] == "outage_yes" and rows[0]["source"] == "app"
    assert "555" not in rows[0]["text"]
    conflict = client.post("/v1/feedback", json=body | {"kind": "outage_no"}, headers=_auth(WRITE))
    assert conflict.status_code == 409 and "fb-0001" in conflict.json()["detail"]


def test_opt_out_by_advisory_names_the_customer_from_the_outbox(client, app, cfg) -> None:
    from serving.feedback_store import feedback_frame

    key = hashlib.sha256(b"stop-me").hexdigest()
    enqueue_payloads(cfg.paths.outbox_url, [{
        "advisory_id": key, "run_id": NEW_RUN, "kind": "risk_advisory",
        "customer_id": "SYN-21067-res7", "channel": "sms", "send_after_utc": "2023-07-01T00:00:00Z"}])
    r = client.post("/v1/feedback", json={"feedback_id": "fb-stop-1", "advisory_id": key,
                                          "kind": "opt_out", "text": "STOP"}, headers=_auth(WRITE))
    assert r.status_code == 201 and r.json()["customer_id"] == "SYN-21067-res7"
    frame = feedback_frame(app.state.engine)
    assert list(frame.columns) == ["customer_id", "advisory_id", "received_utc", "kind"]
    row = frame[frame["advisory_id"] == key].iloc[0]
    assert row["customer_id"] == "SYN-21067-res7" and row["kind"] == "opt_out"
    assert str(frame["received_utc"].dt.tz) == "UTC"


@pytest.mark.parametrize("body", [
    {"feedback_id": "fb-x", "kind": "useful"},  # about nothing
    {"feedback_id": "fb-x", "customer_id": "c1", "kind": "love_it"},
    {"feedback_id": "fb-x", "customer_id": "c1", "kind": "stop"},  # opt_out is the kind
    {"feedback_id": "fb-x", "customer_id": "c1", "kind": "useful", "text": "x" * 1001},
    {"feedback_id": "", "customer_id": "c1", "kind": "useful"},
    {"feedback_id": "fb-x", "customer_id": "c1", "kind": "useful", "phone": "+15025550100"},
])
def test_bad_feedback_is_422(client, body) -> None:
    r = client.post("/v1/feedback", json=body, headers=_auth(WRITE))
    assert r.status_code == 422
    assert r.json()["detail"]


def test_acknowledgement_reaches_the_outbox_row(client, cfg) -> None:
    key = hashlib.sha256(b"ack-me").hexdigest()
    url = cfg.paths.outbox_url
    enqueue_payloads(url, [{"advisory_id": key, "run_id": NEW_RUN, "kind": "risk_advisory",
                            "customer_id": "SYN-21107-cri0", "segment": "critical",
                            "language": "en", "channel": "sms", "critical": True,
                            "send_after_utc": "2023-07-01T00:00:00Z"}])
    r = client.post("/v1/acknowledgements", json={"advisory_id": key}, headers=_auth(WRITE))
    assert r.status_code == 200, r.text
    at = r.json()["acknowledged_at"]
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(outbox.c.acknowledged_at, outbox.c.escalate_at)
                               .where(outbox.c.idempotency_key == key)).one()
    finally:
        engine.dispose()
    assert row.acknowledged_at is not None and row.escalate_at is None
    again = client.post("/v1/acknowledgements", json={"advisory_id": key}, headers=_auth(WRITE))
    assert again.status_code == 200 and again.json()["acknowledged_at"] == at
    unknown = client.post("/v1/acknowledgements", json={"advisory_id": "f" * 64},
                          headers=_auth(WRITE))
    assert unknown.status_code == 404 and "no advisory" in unknown.json()["detail"]
    assert client.post("/v1/acknowledgements", json={"advisory_id": key},
                       headers=_auth(READ)).status_code == 403


def _lone_run(tmp_path: Path) -> tuple[Path, Settings]:
    """One run published in a home of its own (for tests that damage it), and settings for
    that home."""
    home = tmp_path / "home"
    run_dir = _publish(home / "runs", NEW_RUN, "2023-07-01T00:00:00Z")
    return run_dir, load_settings(REPO / "configs" / "kentucky.yaml",
                                  overrides={"paths": {"home": str(home)}})


def test_oversized_bodies_are_413_before_they_are_read(client, cfg) -> None:
    limit = cfg.api.max_body_bytes
    big = {"feedback_id": "fb-big", "customer_id": "c1", "kind": "useful", "text": "x" * limit}
    r = client.post("/v1/feedback", json=big, headers=_auth(WRITE))
    assert r.status_code == 413 and str(limit) in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"feedback_id": "fb-big", "customer_id": "c1", "kind": "useful", "text": "'
        for _ in range(limit // 1024 + 2):
            yield b"y" * 1024
        yield b'"}'

    r = client.post("/v1/feedback", content=chunks(), headers=_auth(WRITE) |
                    {"content-type": "application/json"})
    assert r.status_code == 413, r.text
    small = client.post("/v1/feedback", json=big | {"text": "fine"}, headers=_auth(WRITE))
    assert small.status_code == 201, small.text


def test_bad_json_is_400_and_errors_never_echo_the_input(client) -> None:
    r = client.post("/v1/feedback", content=b'{"feedback_id": "fb-j", ', headers=_auth(WRITE)
                    | {"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "json_invalid"
    secret = "call-me-on-5025550100-" + "z" * 2000
    r = client.post("/v1/feedback", json={"feedback_id": "fb-e", "customer_id": "c1",
                                          "kind": "useful", "text": secret},
                    headers=_auth(WRITE))
    assert r.status_code == 422
    assert "5025550100" not in r.text and len(r.text) < 1000
    assert r.json()["detail"][0]["loc"][:2] == ["body", "text"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_sent_as_json_is_400(client, content_type) -> None:
    headers = _auth(WRITE) | ({"content-type": content_type} if content_type else {})
    r = client.post("/v1/feedback", content=b"call-me-on-5025550100", headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["type"] == "json_invalid" and "5025550100" not in r.text


def test_from_after_to_is_an_empty_page(client) -> None:
    """Schema-valid, so not refused (schemathesis checks that valid data is accepted)."""
    r = client.get("/v1/risk-windows", params={"from": "2023-07-02T00:00:00Z",
                                               "to": "2023-07-01T00:00:00Z"}, headers=_auth(READ))
    assert r.status_code == 200 and r.json()["total"] == 0 and r.json()["items"] == []


def test_a_damaged_run_is_503_and_health_says_so(tmp_path) -> None:
    run_dir, damaged = _lone_run(tmp_path)
    with TestClient(create_app(damaged, tokens=_tokens())) as c:
        assert c.get("/health").json()["latest_run_intact"] is True
        assert c.get("/v1/risk-windows", headers=_auth(READ)).status_code == 200
        target = run_dir / publish.HOURLY_PARQUET
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte; the file may still decode
        target.write_bytes(bytes(data))
        r = c.get("/v1/areas/21107/risk", headers=_auth(READ))
        assert r.status_code == 503 and publish.HOURLY_PARQUET in r.json()["detail"]
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["latest_run_intact"] is False
        (run_dir / publish.MANIFEST_JSON).write_text("{not json", encoding="utf-8")
        r = c.get("/v1/runs/latest", headers=_auth(READ))
        assert r.status_code == 503 and "run.json" in r.json()["detail"]


def test_a_run_file_replaced_by_a_directory_is_503(tmp_path) -> None:
    run_dir, damaged = _lone_run(tmp_path)
    (run_dir / publish.HOURLY_PARQUET).unlink()
    (run_dir / publish.HOURLY_PARQUET).mkdir()
    with TestClient(create_app(damaged, tokens=_tokens()), raise_server_exceptions=False) as c:
        r = c.get("/v1/areas/21107/risk", headers=_auth(READ))
        assert r.status_code == 503 and publish.HOURLY_PARQUET in r.json()["detail"], r.text
        assert c.get("/health").status_code == 503


def test_nothing_is_served_from_a_run_with_any_damaged_file(tmp_path) -> None:
    run_dir, damaged = _lone_run(tmp_path)
    with TestClient(create_app(damaged, tokens=_tokens())) as c:
        assert c.get("/v1/risk-windows", headers=_auth(READ)).status_code == 200
        with open(run_dir / publish.METRICS_JSON, "a", encoding="utf-8") as fh:  # none reads it
            fh.write(" ")
        for url in ("/v1/risk-windows", "/v1/areas/21107/risk", "/v1/advisories",
                    "/v1/outages/open", "/v1/runs/latest", f"/v1/runs/{NEW_RUN}"):
            r = c.get(url, headers=_auth(READ))
            assert r.status_code == 503 and publish.METRICS_JSON in r.json()["detail"], url


@pytest.mark.parametrize("manifest", [
    {}, {"outputs": ["risk_windows.parquet"]}, {"as_of": "soon"}, {"model": "champion"},
    {"inputs": "x"}, {"run_id": None}, "",
], ids=["empty", "outputs-list", "as_of", "model", "inputs", "run_id", "not-json"])
def test_a_run_json_that_is_no_manifest_is_503_without_server_paths(tmp_path, manifest) -> None:
    run_dir, damaged = _lone_run(tmp_path)
    path = run_dir / publish.MANIFEST_JSON
    if isinstance(manifest, dict):
        good = json.loads(path.read_text(encoding="utf-8"))
        edited = {} if not manifest else good | manifest
        path.write_text(json.dumps({k: v for k, v in edited.items() if v is not None}),
                        encoding="utf-8")
    else:
        path.write_text(manifest, encoding="utf-8")
    with TestClient(create_app(damaged, tokens=_tokens()), raise_server_exceptions=False) as c:
        for url in ("/v1/runs/latest", f"/v1/runs/{NEW_RUN}", "/v1/risk-windows"):
            r = c.get(url, headers=_auth(READ))
            assert r.status_code in (200, 503), (url, r.status_code, r.text)
            assert str(tmp_path) not in r.text
        assert c.get("/v1/runs/latest", headers=_auth(READ)).status_code == 503
        # as_of and outputs are what every read relies on: those make the whole run unusable
        unusable = manifest in ({}, {"outputs": ["risk_windows.parquet"]}, {"as_of": "soon"}, "")
        assert r.status_code == (503 if unusable else 200)
        assert c.get("/health").status_code == (503 if unusable else 200)


# ---------------------------------------------------------------------- run-published webhook


def test_notify_subscribers_sends_signed_cloudevents(cfg, home) -> None:
    secret = "sub-secret-0123456789"
    seen: list[dict] = []

    def receiver(request: Request):
        timestamp = request.headers["x-forewarn-timestamp"]
        expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + request.body,
                                        hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["x-forewarn-signature"]):
            return json_reply(401, {"error": "bad signature"})
        assert request.headers["content-type"].startswith("application/cloudevents+json")
        event = request.json()
        seen.append(event)
        return json_reply(202, {})

    flaky_calls = Counter()

    def flaky(request: Request):
        flaky_calls["n"] += 1
        return json_reply(503, {}) if flaky_calls["n"] == 1 else json_reply(200, {})

    with http_server(receiver) as good, http_server(flaky) as retry, \
            http_server(lambda r: json_reply(200, {})) as wrong_key:
        run_cfg = _with_subscribers(cfg, good.url, retry.url, wrong_key.url)
        deliveries = notify_subscribers(home / "runs" / NEW_RUN, run_cfg,
                                        environ={"SUB_A_SECRET": secret},
                                        clock=lambda: 1_780_000_000.0, sleep=lambda s: None)
    assert [(d.outcome, d.status, d.attempts) for d in deliveries] == [
        ("sent", 202, 1), ("sent", 200, 2), ("skipped", None, 0)]
    assert deliveries[2].error == "SUB_UNSET is not set"
    assert len(wrong_key.requests) == 0  # never sent unsigned
    (event,) = seen
    assert event["specversion"] == "1.0" and event["type"] == EVENT_TYPE
    assert event["id"] == f"{NEW_RUN}.published" and event["subject"] == NEW_RUN
    assert event["source"] == cfg.api.event_source
    assert event["time"] == "2026-05-28T20:26:40Z"
    assert event["datacontenttype"] == "application/json"
    data = event["data"]
    assert data["run_id"] == NEW_RUN and data["as_of"] == "2023-07-01T00:00:00+00:00"
    assert data["counts"]["risk_windows"] == 4 and data["counts"]["advisories"] == 18
    assert data["counts"]["open_outages"] == 3
    assert data["links"]["run"] == f"{cfg.api.base_url}/v1/runs/{NEW_RUN}"
    assert good.requests[0].headers["idempotency-key"] == event["id"]


def _with_subscribers(cfg, *urls):
    from configs.settings import SubscriberSettings

    subs = (SubscriberSettings(url=urls[0] + "/hook", secret_env="SUB_A_SECRET", name="notifier"),
            SubscriberSettings(url=urls[1], secret_env="SUB_A_SECRET"),
            SubscriberSettings(url=urls[2], secret_env="SUB_UNSET"))
    return cfg.model_copy(update={"api": cfg.api.model_copy(update={"subscribers": subs})})


def test_notify_run_cli(home, tmp_path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app as cli

    calls: list[Request] = []

    def receiver(request: Request):
        calls.append(request)
        return json_reply(200, {})

    with http_server(receiver) as server:
        profile = tmp_path / "p.yaml"
        profile.write_text(
            (REPO / "configs" / "kentucky.yaml").read_text(encoding="utf-8")
            + f"\napi:\n  subscribers: [{{url: '{server.url}', secret_env: CLI_SUB_SECRET}}]\n",
            encoding="utf-8")
        result = CliRunner().invoke(
            cli, ["notify-run", "--config", str(profile), "--run", str(home / "runs" / NEW_RUN)],
            env={"CLI_SUB_SECRET": "cli-secret-0123456789", "FOREWARN_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["outcome"] == "sent"
    assert len(calls) == 1 and calls[0].json()["data"]["run_id"] == NEW_RUN
    assert "cli-secret" not in result.output


def test_serve_help_says_localhost() -> None:
    from typer.testing import CliRunner

    from flows.cli import app as cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output


# ------------------------------------------------------------------ property-based (schemathesis)

STATS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _schemathesis_stats():
    """After the module: calls per operation and status (shown with ``pytest -s``)."""
    yield
    if STATS:
        print("\nschemathesis calls:", json.dumps(dict(sorted(STATS.items())), indent=1))


def _schema_app():
    """The app over its own run folder, built at import: schemathesis reads the OpenAPI
    document when the module is collected (its from_fixture loader fails on pytest 9)."""
    home = Path(os.environ["FOREWARN_HOME"]) / "api-schemathesis"
    _publish(home / "runs", OLD_RUN, "2023-06-30T00:00:00Z")
    _publish(home / "runs", NEW_RUN, "2023-07-01T00:00:00Z")
    cfg = load_settings(REPO / "configs" / "kentucky.yaml", overrides={"paths": {"home": str(home)}})
    return create_app(cfg, tokens=_tokens())


schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app())


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_server_errors(case) -> None:
    """Schema-valid and schema-invalid requests (Hypothesis) never make the server fail (5xx),
    and every response matches the documented status codes and response schemas."""
    # negative_data_rejection is left out: a query string has only strings, so "false" or a
    # repeated parameter that the schema calls invalid is a valid string to the server.
    response = case.call_and_validate(headers=_auth(WRITE),
                                      excluded_checks=[negative_data_rejection])
    STATS[f"{case.method} {case.path}"] += 1
    STATS[f"status {response.status_code}"] += 1
    assert response.status_code < 500 or case.path == "/health"
