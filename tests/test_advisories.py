"""The advisory decision (who, which window, when, how often) against the policy and the
history of what was already enqueued. Small frames, fixed times, no clocks."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from configs.settings import ControlGroupSettings, QuietHours, load_settings
from serving.advisories import (
    Advisory,
    advisory_key,
    control_records,
    decide_advisories,
    empty_history,
    fallback_chain,
    history_from_advisories,
    in_control_group,
    quiet_release,
)
from serving.outbox import enqueue, read_history

SEGMENTS = ("residential", "commercial", "industrial", "critical")
AS_OF = pd.Timestamp("2023-03-10T17:00:00Z")  # Friday 12:00 EST, outside quiet hours
GUSTS = {
    "feature": "gust_kmh",
    "text_en": "gusts up to 70 km/h",
    "text_zh": "阵风可达70公里/小时",
    "contribution": 0.4,
}
RAIN = {
    "feature": "prcp_mm",
    "text_en": "heavy rain (40 mm)",
    "text_zh": "强降雨（40毫米）",
    "contribution": 0.2,
}
CALM = {
    "feature": "tmax_c",
    "text_en": "mild temperatures",
    "text_zh": "气温温和",
    "contribution": -0.1,
}


@pytest.fixture(scope="module")
def policy():
    """The shipped policy without a control group (tested on its own below)."""
    base = load_settings().advisories
    return base.model_copy(update={"control_group": ControlGroupSettings(share=0.0)})


def window(
    window_id: str = "w1",
    area_id: str = "21111",
    start: str = "2023-03-11T15:00Z",  # Saturday 10:00 EST, 22 h after AS_OF
    hours: int = 4,
    peak: float = 0.62,
    rank: int = 1,
    drivers=(GUSTS, RAIN, CALM),
    area_name: str = "Jefferson County",
    **extra,
) -> dict:
    begin = pd.Timestamp(start)
    return {
        "window_id": window_id,
        "area_id": area_id,
        "area_name": area_name,
        "start": begin,
        "end": begin + pd.Timedelta(hours=hours),
        "hours": hours,
        "peak_prob": peak,
        "mean_prob": peak * 0.7,
        "expected_customers": 1234.5,
        "customers_served": 390_033,
        "drivers": list(drivers),
        "rank": rank,
        "model_version": "forewarn-risk/3",
        "run_id": "run-1",
        "weather_source": "replay",
        **extra,
    }


def windows(*rows: dict) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(
            {k: pd.Series(dtype="datetime64[ns, UTC]" if k in ("start", "end") else object)
             for k in window()}
        )
    return pd.DataFrame(list(rows))


def customer(
    customer_id: str,
    area_id: str = "21111",
    segment: str = "residential",
    language: str = "en",
    timezone: str = "America/New_York",
    channels: tuple[str, ...] = ("sms", "email"),
    **extra,
) -> dict:
    return {
        "customer_id": customer_id,
        "area_id": area_id,
        "segment": segment,
        "channels": channels,
        "language": language,
        "timezone": timezone,
        "name": "Customer 1",
        "phone": "+1-202-555-0101",
        "email": f"{customer_id}@example.invalid",
        "synthetic": True,
        **extra,
    }


def one_per_segment(area_id: str = "21111", **kwargs) -> pd.DataFrame:
    return pd.DataFrame([customer(f"SYN-{area_id}-{s}", area_id, s, **kwargs) for s in SEGMENTS])


def decide(rows, people, policy, as_of=AS_OF, history=None, **kwargs) -> list[Advisory]:
    return decide_advisories(rows, people, history, policy, as_of, **kwargs)


def kinds(advisories) -> list[tuple[str, str]]:
    return sorted((a.customer_id, a.kind) for a in advisories)


# --- who is advised ------------------------------------------------------------------------


def test_segment_thresholds(policy) -> None:
    people = one_per_segment()
    low = decide(windows(window(peak=0.3)), people, policy)
    high = decide(windows(window(peak=0.5)), people, policy)
    # policy.yaml thresholds: residential 0.5, commercial 0.4, industrial 0.3, critical 0.2
    assert sorted({a.segment for a in low}) == ["critical", "industrial"]
    assert sorted({a.segment for a in high}) == sorted(SEGMENTS)


def test_one_advisory_per_customer_and_event_day_keeps_best_window(policy) -> None:
    people = pd.DataFrame([customer("c-ny"), customer("c-utc", timezone="UTC")])
    rows = windows(
        window("late", start="2023-07-05T03:00Z", rank=1),  # 23:00 on 4 Jul in New York
        window("later", start="2023-07-05T16:00Z", rank=2),  # 12:00 on 5 Jul in New York
        window("evening", start="2023-07-04T20:00Z", rank=3),  # 16:00 on 4 Jul in New York
    )
    result = decide(rows, people, policy, pd.Timestamp("2023-07-04T16:00Z"))
    picked = sorted((a.customer_id, a.window_id) for a in result)
    # New York: 4 Jul has "late" (rank 1) and "evening" (rank 3); 5 Jul has "later".
    # UTC: 4 Jul has only "evening"; 5 Jul has "late" (rank 1) and "later" (rank 2).
    assert picked == [("c-ny", "late"), ("c-ny", "later"), ("c-utc", "evening"), ("c-utc", "late")]
    assert {a.kind for a in result} == {"risk_advisory"}


def test_only_the_top_ranked_areas(policy) -> None:
    rows = windows(*(window(f"w{i}", area_id=f"21{i:03d}", rank=i + 1) for i in range(5)))
    people = pd.concat([one_per_segment(f"21{i:03d}") for i in range(5)], ignore_index=True)
    result = decide(rows, people, policy.model_copy(update={"max_areas": 2}))
    assert sorted({a.area_id for a in result}) == ["21000", "21001"]


def test_advance_steps_by_segment_and_the_next_run(policy) -> None:
    """The advisory goes at the segment's first step (72 h critical, 48 h industrial, 24 h
    others), or at once when found later; one not due before the next run is left to it."""
    rows = windows(window(start="2023-03-12T17:00Z", peak=0.9))  # 48 h after AS_OF
    result = {a.segment: a for a in decide(rows, one_per_segment(), policy)
              if a.kind == "risk_advisory"}
    assert set(result) == {"industrial", "critical"}  # residential/commercial: next run
    assert result["critical"].send_after_utc == "2023-03-10T17:00:00Z"  # 72 h step passed
    assert result["industrial"].send_after_utc == "2023-03-10T17:00:00Z"  # exactly 48 h
    assert result["critical"].step_h == 72 and result["industrial"].step_h == 48
    next_day = decide(rows, one_per_segment(), policy, AS_OF + pd.Timedelta(hours=24),
                      history=history_from_advisories(result.values()))
    later = {a.segment: a for a in next_day if a.kind == "risk_advisory"}
    assert set(later) == {"residential", "commercial"}
    assert later["residential"].send_after_utc == "2023-03-11T17:00:00Z"  # 24 h before


def test_reminders_only_for_segments_that_have_them(policy) -> None:
    rows = windows(window(start="2023-03-11T03:00Z", peak=0.9))  # 10 h ahead, 22:00 EST
    result = decide(rows, one_per_segment(), policy)
    reminders = {(a.segment, a.step_h, a.send_after_utc) for a in result
                 if a.kind == "risk_reminder"}
    # the 4 h step is 23:00Z = 18:00 EST, before quiet hours
    assert reminders == {("industrial", 4, "2023-03-10T23:00:00Z"),
                         ("critical", 4, "2023-03-10T23:00:00Z")}


def test_ended_windows_are_skipped_and_running_ones_send_now(policy) -> None:
    people = pd.DataFrame([customer("c1", segment="critical")])
    rows = windows(
        window("over", start="2023-03-10T11:00Z", hours=6),  # ends exactly at AS_OF
        window("running", start="2023-03-10T16:00Z", hours=3, rank=2),
    )
    result = decide(rows, people, policy)
    assert [(a.window_id, a.send_after_utc) for a in result] == [
        ("running", "2023-03-10T17:00:00Z")
    ]


def test_decision_is_pure_and_ordered(policy) -> None:
    rows = windows(
        window("a", rank=2, peak=0.9),
        window("b", area_id="21067", rank=1, peak=0.9, area_name="Fayette County"),
    )
    people = pd.concat([one_per_segment(), one_per_segment("21067")], ignore_index=True)
    rows_before, people_before = rows.copy(), people.copy()
    first = decide(rows, people, policy)
    shuffled = decide(rows.iloc[::-1], people.sample(frac=1, random_state=3), policy)
    pd.testing.assert_frame_equal(rows, rows_before)
    pd.testing.assert_frame_equal(people, people_before)
    assert first == shuffled
    assert [a.window_id for a in first][:4] == ["b"] * 4


def test_channels_follow_the_customer_first_then_the_segment_chain(policy) -> None:
    people = pd.DataFrame([
        customer("c1", channels=()),
        customer("c2", channels=("email", "voice", "app_push")),
        customer("c3", segment="critical", channels=("email", "app_push", "sms")),
    ])
    result = {a.customer_id: a for a in decide(windows(window(peak=0.9)), people, policy)}
    assert "c1" not in result
    # residential chain: app_push, wechat, sms, email, voice
    assert result["c2"].channels == ("email", "push", "voice")
    # critical chain: voice, sms, app_push, wechat, email
    assert result["c3"].channels == ("email", "sms", "push")
    assert result["c3"].channel == "email"
    assert set(result["c3"].content) == {"email", "sms", "push", "webhook"}
    assert fallback_chain(("sms",), ("email",)) == ()


def test_bad_inputs_fail_clearly(policy) -> None:
    with pytest.raises(ValueError, match="segments \\['vip'\\]"):
        decide(windows(window()), pd.DataFrame([customer("c", segment="vip")]), policy)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(windows(window()), one_per_segment(), policy, pd.Timestamp("2023-03-10 12:00"))
    with pytest.raises(ValueError, match="lacks columns \\['rank'\\]"):
        decide(windows(window()).drop(columns="rank"), one_per_segment(), policy)
    with pytest.raises(ValueError, match="history frame lacks"):
        decide(windows(window()), one_per_segment(), policy, history=pd.DataFrame({"x": [1]}))


# --- quiet hours ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("send_at", "zone", "released"),
    [
        # spring forward: 22:00 EST on 11 Mar -> 08:00 EDT on 12 Mar (12:00Z, not 13:00Z)
        ("2023-03-12T03:00Z", "America/New_York", "2023-03-12T12:00Z"),
        # 02:30 local does not exist that night; 01:30 EST is quiet, release 08:00 EDT
        ("2023-03-12T06:30Z", "America/New_York", "2023-03-12T12:00Z"),
        # fall back: 22:00 EDT on 4 Nov -> 08:00 EST on 5 Nov (13:00Z, not 12:00Z)
        ("2023-11-05T02:00Z", "America/New_York", "2023-11-05T13:00Z"),
        # 01:30 happens twice on 5 Nov; both are quiet and released at 08:00 EST
        ("2023-11-05T05:30Z", "America/New_York", "2023-11-05T13:00Z"),
        ("2023-11-05T06:30Z", "America/New_York", "2023-11-05T13:00Z"),
        # Chicago: 22:00 CST on 11 Mar -> 08:00 CDT on 12 Mar (13:00Z)
        ("2023-03-12T04:00Z", "America/Chicago", "2023-03-12T13:00Z"),
        ("2023-11-05T03:00Z", "America/Chicago", "2023-11-05T14:00Z"),  # 22:00 CDT -> 08:00 CST
        # not quiet: 08:00 and 20:59 local go as they are
        ("2023-03-12T12:00Z", "America/New_York", "2023-03-12T12:00Z"),
        ("2023-11-05T00:59Z", "America/New_York", "2023-11-05T00:59Z"),  # 20:59 EDT
    ],
)
def test_quiet_hours_across_daylight_saving_changes(send_at, zone, released) -> None:
    quiet = QuietHours(start=21, end=8)
    out = quiet_release(pd.Series([pd.Timestamp(send_at)]), pd.Series([zone]), quiet)
    assert out.iloc[0] == pd.Timestamp(released)
    local = out.iloc[0].tz_convert(zone)
    assert local.hour == 8 or out.iloc[0] == pd.Timestamp(send_at)


def test_quiet_hours_hold_until_morning_and_critical_overrides_for_safety(policy) -> None:
    evening = pd.Timestamp("2023-03-11T03:30Z")  # Friday 22:30 EST
    people = pd.DataFrame([
        customer("res"),
        customer("crit", segment="critical"),
        customer("chi", timezone="America/Chicago"),  # 21:30 CST
    ])
    early = windows(window("early", start="2023-03-11T11:00Z", peak=0.9))  # 06:00 EST
    result = {a.customer_id: a for a in decide(early, people, policy, evening)
              if a.kind == "risk_advisory"}
    # residential: held to 08:00 EST (13:00Z), after the window started but before it ends
    assert result["res"].send_after_utc == "2023-03-11T13:00:00Z"
    assert result["res"].held_for_quiet_hours
    assert result["chi"].send_after_utc == "2023-03-11T14:00:00Z"  # 08:00 CST
    # critical: holding would reach past the start, so it goes now, in the night
    assert result["crit"].send_after_utc == "2023-03-11T03:30:00Z"
    assert not result["crit"].held_for_quiet_hours
    late = windows(window("late", start="2023-03-11T20:00Z", peak=0.9))  # 15:00 EST
    crit = [a for a in decide(late, people, policy, evening)
            if a.customer_id == "crit" and a.kind == "risk_advisory"]
    assert crit[0].send_after_utc == "2023-03-11T13:00:00Z"  # no need to wake them


def test_a_message_that_could_only_go_after_its_window_is_dropped(policy) -> None:
    night = windows(window("night", start="2023-03-11T05:00Z", hours=3, peak=0.9))  # 00-03 EST
    result = decide(night, one_per_segment(), policy, pd.Timestamp("2023-03-11T03:30Z"))
    assert {a.segment for a in result} == {"critical"}


# --- caps and updates ----------------------------------------------------------------------


def _first(policy, rows, people, as_of=AS_OF):
    first = decide(rows, people, policy, as_of)
    return first, history_from_advisories(first)


def test_rerun_with_the_same_inputs_sends_nothing(policy) -> None:
    rows, people = windows(window(peak=0.9)), one_per_segment()
    first, history = _first(policy, rows, people)
    assert len(first) >= 4
    assert decide(rows, people, policy, history=history) == []
    later = AS_OF + pd.Timedelta(hours=6)
    assert [a for a in decide(rows, people, policy, later, history=history)
            if a.kind != "risk_reminder"] == []


def test_updates_on_escalation_and_on_a_move_of_two_hours_only(policy) -> None:
    people = pd.DataFrame([customer("c1")])
    _, history = _first(policy, windows(window(peak=0.55)), people)
    later = AS_OF + pd.Timedelta(hours=3)
    same_level = decide(windows(window("w2", peak=0.65)), people, policy, later, history=history)
    moved_1h = decide(windows(window("w2", start="2023-03-11T16:00Z", peak=0.55)), people,
                      policy, later, history=history)
    assert same_level == [] and moved_1h == []
    (up,) = decide(windows(window("w2", peak=0.75)), people, policy, later, history=history)
    assert (up.kind, up.reason, up.level) == ("risk_update", "escalated", "very_high")
    assert "risen" in up.content["email"]["subject"]
    (moved,) = decide(windows(window("w2", start="2023-03-11T17:00Z", peak=0.55)), people,
                      policy, later, history=history)
    assert (moved.kind, moved.reason) == ("risk_update", "moved")
    assert "new time" in moved.content["email"]["subject"]
    # the update becomes the state: the same update again is nothing
    after = pd.concat([history, history_from_advisories([moved])], ignore_index=True)
    assert decide(windows(window("w2", start="2023-03-11T17:00Z", peak=0.55)), people, policy,
                  later + pd.Timedelta(hours=1), history=after) == []


def test_a_lower_risk_is_no_update(policy) -> None:
    people = pd.DataFrame([customer("c1")])
    _, history = _first(policy, windows(window(peak=0.8)), people)
    assert decide(windows(window(peak=0.55)), people, policy,
                  AS_OF + pd.Timedelta(hours=3), history=history) == []


def test_cancellation_when_the_window_is_gone(policy) -> None:
    people = pd.DataFrame([customer("c1"), customer("zh", language="zh-CN")])
    first, history = _first(policy, windows(window(peak=0.8)), people)
    later = AS_OF + pd.Timedelta(hours=3)
    cancelled = decide(windows(), people, policy, later, history=history)
    assert kinds(cancelled) == [("c1", "risk_cancelled"), ("zh", "risk_cancelled")]
    by_id = {a.customer_id: a for a in cancelled}
    assert by_id["c1"].content["sms"]["text"].startswith("Outage risk")
    assert "has passed" in by_id["c1"].content["sms"]["text"]
    assert "已解除" in by_id["zh"].content["sms"]["text"]
    assert by_id["c1"].window_start_utc == first[0].window_start_utc
    # a risk below the threshold is also gone; the cancellation is sent once
    assert kinds(decide(windows(window(peak=0.3)), people, policy, later, history=history)) == \
        kinds(cancelled)
    after = pd.concat([history, history_from_advisories(cancelled)], ignore_index=True)
    assert decide(windows(), people, policy, later + pd.Timedelta(hours=1), history=after) == []
    # the risk coming back the same day is an update, not a second advisory
    (back, _) = decide(windows(window(peak=0.8)), people, policy, later, history=after)
    assert (back.kind, back.reason) == ("risk_update", "renewed")


def test_no_cancellation_for_a_window_that_is_over(policy) -> None:
    people = pd.DataFrame([customer("c1")])
    _, history = _first(policy, windows(window(peak=0.8)), people)
    assert decide(windows(), people, policy, pd.Timestamp("2023-03-11T19:00Z"),
                  history=history) == []


def test_restoration_notice_after_an_outage_near_the_window(policy) -> None:
    people = pd.DataFrame([customer("c1"), customer("c2", opt_in_outage=False),
                           customer("far", area_id="21067")])
    people.loc[people["customer_id"] != "c2", "opt_in_outage"] = True
    rows = windows(window(peak=0.8), window("w9", area_id="21067", rank=2, peak=0.8))
    _, history = _first(policy, rows, people)
    outages = pd.DataFrame({
        "area_id": ["21111"],
        "start_utc": [pd.Timestamp("2023-03-11T16:00Z")],
        "end_utc": [pd.Timestamp("2023-03-11T19:30Z")],
    })
    as_of = pd.Timestamp("2023-03-11T21:00Z")  # 16:00 EST
    result = decide(windows(), people, policy, as_of, history=history, restorations=outages)
    assert kinds(result) == [("c1", "restoration")]
    (notice,) = result
    assert notice.message_type == "outage" and notice.restored_utc == "2023-03-11T19:30:00Z"
    assert "14:30 EST" in notice.content["sms"]["text"]
    after = pd.concat([history, history_from_advisories(result)], ignore_index=True)
    assert decide(windows(), people, policy, as_of, history=after, restorations=outages) == []
    # an outage restored before the customer was told, or far from the window, is not ours
    early = outages.assign(start_utc=pd.Timestamp("2023-03-10T10:00Z"),
                           end_utc=pd.Timestamp("2023-03-10T16:30Z"))
    assert decide(rows, people, policy, pd.Timestamp("2023-03-10T20:00Z"),
                  history=history, restorations=early) == []
    far = outages.assign(start_utc=pd.Timestamp("2023-03-11T22:00Z"),
                         end_utc=pd.Timestamp("2023-03-11T23:00Z"))
    assert decide(rows, people, policy, pd.Timestamp("2023-03-12T01:00Z"),
                  history=history, restorations=far) == []
    # restorations from before the previous run are old news
    assert decide(windows(), people, policy, as_of + pd.Timedelta(hours=24), history=history,
                  restorations=outages) == []


def test_outage_update_gives_the_estimated_restoration_and_repeats_only_on_change(
        policy) -> None:
    people = pd.DataFrame([customer("c1"), customer("c2", opt_in_outage=False)])
    people.loc[people["customer_id"] == "c1", "opt_in_outage"] = True
    rows = windows(window(peak=0.8))
    _, history = _first(policy, rows, people)
    as_of = pd.Timestamp("2023-03-11T17:00Z")  # 12:00 EST, during the window
    outages = pd.DataFrame({
        "area_id": ["21111", "21111"],
        "first_seen_utc": [pd.Timestamp("2023-03-11T16:00Z"), pd.Timestamp("2023-03-11T16:30Z")],
        "restored_p10_utc": [pd.Timestamp("2023-03-11T18:00Z"), pd.Timestamp("2023-03-11T17:30Z")],
        "restored_p50_utc": [pd.Timestamp("2023-03-11T20:00Z"), pd.Timestamp("2023-03-11T18:00Z")],
        "restored_p90_utc": [pd.Timestamp("2023-03-12T01:00Z"), pd.Timestamp("2023-03-11T20:00Z")],
    })
    result = decide(rows, people, policy, as_of, history=history, outages=outages)
    assert kinds(result) == [("c1", "outage_update")]  # c2 opted out of outage notices
    (update,) = result
    assert update.message_type == "outage"
    # the longest outage's estimate: P50 15:00 EST, P10-P90 13:00-20:00 EST
    assert update.restored_utc == "2023-03-11T20:00:00Z"
    assert update.window_start_utc == "2023-03-11T18:00:00Z"
    assert "3/11 15:00" in update.content["sms"]["text"]
    assert "13:00-20:00" in update.content["sms"]["text"]
    assert update.duration_p50_h is None  # the window's "if out" duration does not apply
    after = pd.concat([history, history_from_advisories(result)], ignore_index=True)
    # the same estimate an hour later says nothing new ...
    later = as_of + pd.Timedelta(hours=1)
    assert decide(rows, people, policy, later, history=after, outages=outages) == []
    # ... a later estimate (moved by 3 h) is an update
    moved = outages.assign(restored_p50_utc=outages["restored_p50_utc"] + pd.Timedelta(hours=3),
                           restored_p90_utc=outages["restored_p90_utc"] + pd.Timedelta(hours=3))
    assert kinds(decide(rows, people, policy, later, history=after, outages=moved)) == [
        ("c1", "outage_update")]
    # an outage far from any window the customer was told about is not ours
    far = outages.assign(first_seen_utc=pd.Timestamp("2023-03-10T01:00Z"))
    assert decide(rows, people, policy, as_of, history=history, outages=far) == []


def test_opt_out_is_per_message_type(policy) -> None:
    people = pd.DataFrame([
        customer("risk_off", opt_in_risk=False, opt_in_outage=True),
        customer("all_on", opt_in_risk=True, opt_in_outage=True),
    ])
    result = decide(windows(window(peak=0.9)), people, policy)
    assert kinds(result) == [("all_on", "risk_advisory")]
    # history from when risk_off was still opted in: no update, no cancellation now ...
    before = pd.DataFrame([customer("risk_off"), customer("all_on")])
    history = history_from_advisories(decide(windows(window(peak=0.55)), before, policy))
    later = AS_OF + pd.Timedelta(hours=3)
    assert kinds(decide(windows(window(peak=0.9)), people, policy, later, history=history)) == [
        ("all_on", "risk_update")]
    assert kinds(decide(windows(), people, policy, later, history=history)) == [
        ("all_on", "risk_cancelled")]
    # ... but the outage notice they still want
    outages = pd.DataFrame({"area_id": ["21111"], "start_utc": [pd.Timestamp("2023-03-11T16:00Z")],
                            "end_utc": [pd.Timestamp("2023-03-11T19:30Z")]})
    restored = decide(windows(), people, policy, pd.Timestamp("2023-03-11T21:00Z"),
                      history=history, restorations=outages)
    assert kinds(restored) == [("all_on", "restoration"), ("risk_off", "restoration")]


# --- control group -------------------------------------------------------------------------


def test_control_group_is_stable_and_near_its_share() -> None:
    ids = pd.Series([f"SYN-21111-{i:06d}" for i in range(20_000)])
    member = in_control_group(ids, 0.05, "salt-a")
    assert abs(member.mean() - 0.05) < 0.006
    again = in_control_group(ids.iloc[::-1].reset_index(drop=True), 0.05, "salt-a")[::-1]
    assert (member == again).all()  # order and neighbours do not matter
    assert (in_control_group(ids, 0.05, "salt-b") != member).any()  # salt re-draws
    expected = int.from_bytes(hashlib.sha256(b"salt-a|SYN-21111-000000").digest()[:8], "big")
    assert member[0] == (expected < int(0.05 * 2**64))
    assert not in_control_group(ids, 0.0, "salt-a").any()


def test_control_group_gets_no_risk_message_and_is_recorded(policy) -> None:
    treated = policy.model_copy(update={"control_group": ControlGroupSettings(share=0.5,
                                                                              salt="t")})
    people = pd.DataFrame([customer(f"c{i}") for i in range(40)])
    member = set(people.loc[in_control_group(people["customer_id"], 0.5, "t"), "customer_id"])
    assert 5 < len(member) < 35
    rows = windows(window(peak=0.9))
    result = decide(rows, people, treated)
    assert {a.customer_id for a in result} == set(people["customer_id"]) - member
    withheld = control_records(rows, people, None, treated, AS_OF)
    assert set(withheld["customer_id"]) == member
    assert set(withheld["kind"]) == {"risk_advisory"}
    assert decide(rows, people.iloc[::-1], treated) == result


# --- idempotency and the outbox ------------------------------------------------------------


def test_ids_are_stable_and_ignore_the_hour_within_the_event_day(policy) -> None:
    people = one_per_segment()
    first = [a for a in decide(windows(window(peak=0.9)), people, policy)
             if a.kind == "risk_advisory"]
    shifted = [a for a in decide(windows(window("w2", start="2023-03-11T17:00Z", peak=0.9)),
                                 people, policy) if a.kind == "risk_advisory"]
    assert {a.advisory_id for a in first} == {a.advisory_id for a in shifted}
    assert len({a.advisory_id for a in first}) == 4
    key = "SYN-21111-critical|21111|2023-03-11|risk_advisory"
    expected = hashlib.sha256(key.encode()).hexdigest()
    assert expected in {a.advisory_id for a in first}
    assert advisory_key("SYN-21111-critical", "21111", "2023-03-11") == expected


def test_rerun_through_a_real_outbox_enqueues_nothing_twice(policy, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    assert read_history(url).empty and not (tmp_path / "outbox.db").exists()  # read-only
    rows, people = windows(window(peak=0.9)), one_per_segment()
    first = decide(rows, people, policy, history=read_history(url))
    assert enqueue(url, first).inserted == len(first) > 0
    history = read_history(url)
    assert sorted(history["advisory_id"]) == sorted(a.advisory_id for a in first)
    again = decide(rows, people, policy, history=history)
    assert again == [] and enqueue(url, again).inserted == 0
    assert list(empty_history().columns) == list(history.columns)


def test_payload_contract_is_json_safe_and_holds_no_contact_details(policy) -> None:
    rows = windows(window(peak=0.9))
    people = one_per_segment(channels=("sms", "email", "app_push", "wechat", "voice"))
    for advisory in decide(rows, people, policy):
        data = json.loads(json.dumps(advisory.to_dict(), ensure_ascii=False))
        assert Advisory.from_dict(data) == advisory
        assert {"advisory_id", "kind", "message_type", "customer_id", "segment", "critical",
                "language", "channels", "content"} <= set(data)
        assert data["critical"] is (advisory.segment == "critical")
        assert set(data["content"]) == {*data["channels"], "webhook"}
        assert set(data["content"]["email"]) == {"subject", "text", "html"}
        assert set(data["content"]["push"]) == {"title", "body"}
        assert set(data["content"]["wechat"]["data"]) == {
            "first", "keyword1", "keyword2", "keyword3", "keyword4", "remark"}
        text = json.dumps(data, ensure_ascii=False)
        assert "@example.invalid" not in text and "555-0101" not in text


# --- messages ------------------------------------------------------------------------------


def test_local_time_across_the_dst_change(policy) -> None:
    # 2023-03-12: clocks jump from 02:00 to 03:00 local time in both zones.
    people = pd.DataFrame([customer("ny"), customer("chi", timezone="America/Chicago")])
    rows = windows(window(start="2023-03-12T06:00Z", peak=0.9))
    result = {a.customer_id: a for a in decide(rows, people, policy,
                                               pd.Timestamp("2023-03-11T17:00Z"))}
    assert "Sun 12 Mar 01:00 EST – 06:00 EDT" in result["ny"].content["email"]["text"]
    assert "Sun 12 Mar 00:00 CST – 05:00 CDT" in result["chi"].content["email"]["text"]
    assert "about 4 hours" in result["ny"].content["email"]["text"]  # not the clock difference
    assert result["ny"].event_day == "2023-03-12" and result["chi"].event_day == "2023-03-12"


def test_english_email_says_when_why_how_likely_what_to_do_and_whom_to_call(policy) -> None:
    result = {a.segment: a for a in decide(
        windows(window(start="2023-07-04T18:00Z", hours=5)), one_per_segment(), policy,
        pd.Timestamp("2023-07-04T13:00Z")) if a.kind == "risk_advisory"}
    text = result["residential"].content["email"]["text"]
    assert "Tue 4 Jul 14:00–19:00 EDT" in text
    assert "about 5 hours" in text and "high (62%)" in text
    assert "gusts up to 70 km/h; heavy rain (40 mm)" in text
    assert "mild temperatures" not in text  # lowers the risk, so it is no reason
    assert "flashlights" in text and policy.hotline in text
    assert "forecast, not a certainty" in text and "opt out" in text
    assert "controlled shutdown" in result["industrial"].content["email"]["text"]
    assert "POS" in result["commercial"].content["email"]["text"]
    assert "medical certificate program" in result["critical"].content["email"]["text"]
    html = result["residential"].content["email"]["html"]
    assert "<li>Charge phones and power banks now.</li>" in html


def test_html_escapes_what_it_did_not_write(policy) -> None:
    rows = windows(window(area_name="Bell <b>&</b> County", peak=0.9))
    (a,) = [x for x in decide(rows, pd.DataFrame([customer("c", channels=("email",))]), policy)]
    assert "Bell &lt;b&gt;&amp;&lt;/b&gt; County" in a.content["email"]["html"]
    assert "Bell <b>&</b> County" in a.content["email"]["text"]


def test_duration_is_said_when_the_window_has_it(policy) -> None:
    people = pd.DataFrame([customer("en"), customer("zh", language="zh-CN")])
    with_d = windows(window(peak=0.9, duration_p50_h=3.2, duration_p10_h=1.0,
                            duration_p90_h=7.6))
    result = {a.customer_id: a for a in decide(with_d, people, policy)}
    assert "about 3 h, likely 1–8 h" in result["en"].content["email"]["text"]
    assert "约3小时，可能1–8小时" in result["zh"].content["email"]["text"]
    assert result["en"].duration_p50_h == 3.2
    without = {a.customer_id: a for a in decide(windows(window(peak=0.9)), people, policy)}
    assert "likely stay out" not in without["en"].content["email"]["text"]
    assert without["en"].duration_p50_h is None
    nan = windows(window(peak=0.9, duration_p50_h=np.nan, duration_p10_h=np.nan,
                         duration_p90_h=np.nan))
    assert decide(nan, people, policy)[0].duration_p50_h is None


def test_chinese_message(policy) -> None:
    people = pd.DataFrame([customer("zh", language="zh-CN", segment="critical",
                                    channels=("wechat", "sms", "email"))])
    zh_policy = policy.model_copy(update={"hotline_zh": "1-800-555-0188"})
    (advisory,) = [a for a in decide(windows(window(start="2023-07-04T18:00Z", hours=5)),
                                     people, zh_policy, pd.Timestamp("2023-07-04T13:00Z"))
                   if a.kind == "risk_advisory"]
    text = advisory.content["email"]["text"]
    assert advisory.language == "zh-CN" and re.search(r"[\u4e00-\u9fff]", text)
    assert "7月4日(周二) 14:00–19:00 (美国东部夏令时间)" in text
    assert "阵风可达70公里/小时" in text and "gusts" not in text
    assert "高（62%）" in text and "医疗证明" in text
    assert "1-800-555-0188" in advisory.content["sms"]["text"]
    assert "回复 TD 退订" in advisory.content["sms"]["text"]
    assert advisory.content["wechat"]["data"]["keyword2"]["value"] == "7月4日14:00-19:00"


def test_unknown_language_falls_back_to_english(policy) -> None:
    (advisory,) = decide(windows(window(peak=0.9)), pd.DataFrame([customer("es", language="es")]),
                         policy)
    assert advisory.language == "en"
    assert "Possible power outage" in advisory.content["email"]["subject"]
