"""Feedback and outcomes: replies classified, precision and lead time against the outages
that followed, opt-out rate, critical customers reached and acknowledged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from serving.feedback import (
    advisories_frame,
    advisory_report,
    apply_opt_outs,
    classify_reply,
    read_feedback,
)


def payload(aid, customer, area="A", kind="risk_advisory", start="2023-07-02T18:00Z",
            hours=4, send="2023-07-01T18:00Z", critical=False, day="2023-07-02"):
    begin = pd.Timestamp(start)
    return {"advisory_id": aid, "kind": kind, "customer_id": customer, "area_id": area,
            "event_day": day, "segment": "critical" if critical else "residential",
            "critical": critical, "window_start_utc": begin.isoformat(),
            "window_end_utc": (begin + pd.Timedelta(hours=hours)).isoformat(),
            "send_after_utc": pd.Timestamp(send).isoformat()}


@pytest.fixture()
def advisories() -> pd.DataFrame:
    return advisories_frame([
        payload("a1", "c1"),
        payload("a2", "c2", critical=True),
        payload("a3", "c3", area="B"),  # no outage in B
        payload("a4", "c2", kind="risk_reminder", send="2023-07-02T14:00Z", critical=True),
        payload("a5", "c4", area="C"),  # only a planned outage in C
    ])


@pytest.fixture()
def outages() -> pd.DataFrame:
    return pd.DataFrame({
        "area_id": ["A", "A", "C", "B"],
        "start_utc": pd.to_datetime(["2023-07-02T19:30Z", "2023-07-02T21:00Z",
                                     "2023-07-02T19:00Z", "2023-07-03T06:00Z"], utc=True),
        "planned": [False, False, True, False],
    })


def test_replies_are_classified() -> None:
    assert classify_reply(" stop ") == "opt_out"
    assert classify_reply("TD") == "opt_out" and classify_reply("退订") == "opt_out"
    assert classify_reply("Useful") == "useful" and classify_reply("没停电") == "outage_no"
    assert classify_reply("who is this?") == "other"


def test_feedback_files_csv_and_jsonl(tmp_path) -> None:
    csv = tmp_path / "replies.csv"
    csv.write_text("customer_id,received_utc,text\nc1,2023-07-02T01:00Z,STOP\n"
                   "c2,2023-07-02T02:00Z,useful\n", encoding="utf-8")
    jsonl = tmp_path / "replies.jsonl"
    jsonl.write_text(json.dumps({"customer_id": "c3", "received_utc": "2023-07-03T01:00Z",
                                 "type": "outage_no", "advisory_id": "a3"}) + "\n")
    assert list(read_feedback(csv)["kind"]) == ["opt_out", "useful"]
    fb = read_feedback(jsonl)
    assert fb.loc[0, "advisory_id"] == "a3" and str(fb["received_utc"].dt.tz) == "UTC"
    bad = tmp_path / "bad.csv"
    bad.write_text("customer,received_utc,text\nc1,2023-07-02T01:00Z,STOP\n")
    with pytest.raises(ValueError, match="bad.csv: column 'customer_id' missing"):
        read_feedback(bad)


def test_report_precision_lead_time_and_reach(advisories, outages) -> None:
    feedback = pd.DataFrame({
        "customer_id": ["c1", "c3", "c2", "c9"],
        "advisory_id": [None] * 4,
        "received_utc": pd.to_datetime(["2023-07-02T01:00Z", "2023-07-02T02:00Z",
                                        "2023-06-01T00:00Z", "2023-07-02T03:00Z"], utc=True),
        "kind": ["opt_out", "useful", "opt_out", "opt_out"],  # c2's STOP predates, c9 unknown
    })
    delivery = pd.DataFrame({"idempotency_key": ["a2", "a4"], "state": ["sent", "pending"],
                             "acknowledged_at": ["2023-07-01T18:05Z", None]})
    report = advisory_report(advisories, outages, feedback=feedback, delivery=delivery)
    assert report["messages"] == 5 and report["customers_messaged"] == 4
    assert report["messages_per_customer"] == {"mean": 1.25, "max": 2}
    # a1, a2, a4 in A are followed by the 19:30 outage; a3 (B, next day) and a5 (planned) not
    assert report["precision"] == pytest.approx(3 / 5)
    lead = report["lead_time_h"]
    assert lead["followed"] == 3 and lead["min"] == 5.5 and lead["median"] == 25.5
    assert report["feedback"]["opt_out_rate"] == 0.25  # c1 of 4 messaged
    assert report["feedback"]["useful_rate"] == 1.0
    assert report["critical"] == {"customers_advised": 1, "reached": 1, "acknowledged": 1}
    events = {(e["area_id"], e["event_day"]): e for e in report["per_event"]}
    assert events[("A", "2023-07-02")]["outage_followed"] is True
    assert events[("A", "2023-07-02")]["opt_outs"] == 1
    assert events[("B", "2023-07-02")]["outage_followed"] is False


def test_report_says_what_it_cannot_know(advisories) -> None:
    report = advisory_report(advisories, pd.DataFrame(columns=["area_id", "start_utc"]))
    assert report["precision"] == 0.0 and report["lead_time_h"]["median"] is None
    assert report["critical"]["reached"] is None
    assert "not been dispatched" in report["critical"]["note"]
    no_ack = advisory_report(advisories, pd.DataFrame(columns=["area_id", "start_utc"]),
                             delivery=pd.DataFrame({"idempotency_key": ["a2"],
                                                    "state": ["sent"]}))
    assert no_ack["critical"]["acknowledged"] is None
    assert no_ack["control_group"] == {"customers_withheld": 0}


def test_a_stop_reply_ends_every_message_type(advisories) -> None:
    from configs.settings import ControlGroupSettings, load_settings
    from serving.advisories import decide_advisories

    customers = pd.DataFrame({"customer_id": ["c1", "c2"], "area_id": ["A", "A"],
                              "segment": ["residential", "residential"],
                              "channels": [("sms",), ("sms",)], "language": ["en", "en"],
                              "timezone": ["America/New_York"] * 2, "synthetic": [True, True],
                              "opt_in_outage": [True, False]})
    feedback = pd.DataFrame({"customer_id": ["c1"], "advisory_id": [None],
                             "received_utc": [pd.Timestamp("2023-07-01T00:00Z")],
                             "kind": ["opt_out"]})
    out = apply_opt_outs(customers, feedback)
    assert list(out["opt_in_risk"]) == [False, True]
    assert list(out["opt_in_outage"]) == [False, False]
    assert "opt_in_risk" not in customers.columns  # input untouched
    start = pd.Timestamp("2023-07-02T18:00Z")
    windows = pd.DataFrame([{"window_id": "w", "area_id": "A", "area_name": "A", "start": start,
                             "end": start + pd.Timedelta(hours=3), "hours": 3, "peak_prob": 0.9,
                             "expected_customers": 5.0, "drivers": [], "rank": 1,
                             "run_id": "r"}])
    policy = load_settings().advisories.model_copy(
        update={"control_group": ControlGroupSettings(share=0.0)})
    decided = decide_advisories(windows, out, None, policy, pd.Timestamp("2023-07-01T18:00Z"))
    assert [a.customer_id for a in decided] == ["c2"]
