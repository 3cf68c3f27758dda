"""The advisory decision (who, which window, when to send) and the rendered messages."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from configs.settings import load_settings
from serving.advisories import (
    Advisory,
    advisory_key,
    decide_advisories,
    render_advisory,
    sms_length,
)

SEGMENTS = ("residential", "commercial", "industrial", "critical")
AS_OF = pd.Timestamp("2023-03-10T12:00:00Z")
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
    return load_settings().advisories


def window(
    window_id: str = "w1",
    area_id: str = "21111",
    start: str = "2023-03-12T06:00Z",
    hours: int = 4,
    peak: float = 0.62,
    rank: int = 1,
    drivers=(GUSTS, RAIN, CALM),
    area_name: str = "Jefferson County",
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
    }


def windows(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def customer(
    customer_id: str,
    area_id: str = "21111",
    segment: str = "residential",
    language: str = "en",
    timezone: str = "America/New_York",
    channels: tuple[str, ...] = ("sms", "email"),
) -> dict:
    return {
        "customer_id": customer_id,
        "area_id": area_id,
        "segment": segment,
        "channels": channels,
        "language": language,
        "timezone": timezone,
        "name": "Customer 1",
        "synthetic": True,
    }


def one_per_segment(area_id: str = "21111", **kwargs) -> pd.DataFrame:
    return pd.DataFrame([customer(f"SYN-{area_id}-{s}", area_id, s, **kwargs) for s in SEGMENTS])


# --- who is advised ------------------------------------------------------------------------


def test_segment_thresholds(policy) -> None:
    people = one_per_segment()
    low = decide_advisories(windows(window(peak=0.3)), people, policy, AS_OF)
    high = decide_advisories(windows(window(peak=0.5)), people, policy, AS_OF)
    # base.yaml thresholds: residential 0.5, commercial 0.4, industrial 0.3, critical 0.2
    assert sorted(a.segment for a in low) == ["critical", "industrial"]
    assert sorted(a.segment for a in high) == sorted(SEGMENTS)


def test_one_advisory_per_customer_and_local_day_keeps_best_window(policy) -> None:
    people = pd.DataFrame([customer("c-ny"), customer("c-utc", timezone="UTC")])
    rows = windows(
        window("late", start="2023-07-05T03:00Z", rank=1),  # 23:00 on 4 Jul in New York
        window("later", start="2023-07-05T06:00Z", rank=2),  # 02:00 on 5 Jul in New York
        window("evening", start="2023-07-04T20:00Z", rank=3),  # 16:00 on 4 Jul in New York
    )
    result = decide_advisories(rows, people, policy, pd.Timestamp("2023-07-01T00:00Z"))
    picked = sorted((a.customer_id, a.window_id) for a in result)
    # New York: 4 Jul has "late" (rank 1) and "evening" (rank 3); 5 Jul has "later".
    # UTC: 4 Jul has only "evening"; 5 Jul has "late" (rank 1) and "later" (rank 2).
    assert picked == [("c-ny", "late"), ("c-ny", "later"), ("c-utc", "evening"), ("c-utc", "late")]


def test_only_the_top_ranked_areas(policy) -> None:
    rows = windows(*(window(f"w{i}", area_id=f"21{i:03d}", rank=i + 1) for i in range(5)))
    people = pd.concat([one_per_segment(f"21{i:03d}") for i in range(5)], ignore_index=True)
    result = decide_advisories(rows, people, policy.model_copy(update={"max_areas": 2}), AS_OF)
    assert sorted({a.area_id for a in result}) == ["21000", "21001"]


def test_ended_windows_are_skipped_and_running_ones_send_now(policy) -> None:
    people = pd.DataFrame([customer("c1", segment="critical")])
    rows = windows(
        window("over", start="2023-03-10T06:00Z", hours=6),  # ends exactly at AS_OF
        window("running", start="2023-03-10T11:00Z", hours=3, rank=2),
        window("soon", start="2023-03-11T06:00Z", rank=3),  # critical lead time 48 h
        window("later", start="2023-03-13T06:00Z", rank=4),
    )
    result = {a.window_id: a for a in decide_advisories(rows, people, policy, AS_OF)}
    assert set(result) == {"running", "soon", "later"}
    assert result["running"].send_after_utc == "2023-03-10T12:00:00Z"
    assert result["soon"].send_after_utc == "2023-03-10T12:00:00Z"
    assert result["later"].send_after_utc == "2023-03-11T06:00:00Z"


def test_send_after_uses_the_segment_lead_time(policy) -> None:
    result = decide_advisories(windows(window(peak=0.9)), one_per_segment(), policy, AS_OF)
    send = {a.segment: a.send_after_utc for a in result}
    assert send["residential"] == send["commercial"] == "2023-03-11T06:00:00Z"  # 24 h
    assert send["industrial"] == send["critical"] == "2023-03-10T12:00:00Z"  # 48 h, clamped


def test_decision_is_pure_and_ordered(policy) -> None:
    rows = windows(
        window("a", rank=2, peak=0.9),
        window("b", area_id="21067", rank=1, peak=0.9, area_name="Fayette County"),
    )
    people = pd.concat([one_per_segment(), one_per_segment("21067")], ignore_index=True)
    rows_before, people_before = rows.copy(), people.copy()

    first = decide_advisories(rows, people, policy, AS_OF)
    shuffled = decide_advisories(
        rows.iloc[::-1], people.sample(frac=1, random_state=3), policy, AS_OF
    )

    pd.testing.assert_frame_equal(rows, rows_before)
    pd.testing.assert_frame_equal(people, people_before)
    assert first == shuffled
    assert [a.window_id for a in first] == ["b"] * 4 + ["a"] * 4
    assert [a.customer_id for a in first[:4]] == sorted(a.customer_id for a in first[:4])


def test_customers_without_channels_are_skipped(policy) -> None:
    people = pd.DataFrame([customer("c1", channels=()), customer("c2", channels=("voice",))])
    result = decide_advisories(windows(window(peak=0.9)), people, policy, AS_OF)
    assert [(a.customer_id, a.channel) for a in result] == [("c2", "voice")]


def test_bad_inputs_fail_clearly(policy) -> None:
    with pytest.raises(ValueError, match="segments \\['vip'\\]"):
        decide_advisories(
            windows(window()), pd.DataFrame([customer("c", segment="vip")]), policy, AS_OF
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_advisories(
            windows(window()), one_per_segment(), policy, pd.Timestamp("2023-03-10 12:00")
        )
    with pytest.raises(ValueError, match="lacks columns \\['rank'\\]"):
        decide_advisories(windows(window()).drop(columns="rank"), one_per_segment(), policy, AS_OF)


# --- idempotency ---------------------------------------------------------------------------


def test_ids_are_stable_and_ignore_the_hour(policy) -> None:
    people = one_per_segment()
    first = decide_advisories(windows(window(peak=0.9)), people, policy, AS_OF)
    again = decide_advisories(windows(window(peak=0.9)), people, policy, AS_OF)
    shifted = decide_advisories(
        windows(window("w2", start="2023-03-12T09:00Z", peak=0.9)), people, policy, AS_OF
    )

    assert [a.advisory_id for a in first] == [a.advisory_id for a in again]
    assert {a.advisory_id for a in first} == {a.advisory_id for a in shifted}
    assert len({a.advisory_id for a in first}) == 4
    # 06:00Z on 12 Mar is 01:00 EST, so the local day is 2023-03-12
    key = "SYN-21111-critical|21111|2023-03-12|risk_advisory"
    expected = hashlib.sha256(key.encode()).hexdigest()
    assert expected in {a.advisory_id for a in first}
    assert advisory_key("SYN-21111-critical", "21111", "2023-03-12") == expected


def test_to_dict_is_json_safe(policy) -> None:
    advisory = decide_advisories(windows(window()), one_per_segment(), policy, AS_OF)[0]
    data = json.loads(json.dumps(advisory.to_dict()))
    assert Advisory(**data) == advisory
    assert data["synthetic"] is True and data["peak_prob"] == 0.62
    assert data["window_start_utc"] == "2023-03-12T06:00:00Z"
    assert data["window_end_utc"] == "2023-03-12T10:00:00Z"


# --- messages ------------------------------------------------------------------------------


def test_local_time_across_the_dst_change(policy) -> None:
    # 2023-03-12: clocks jump from 02:00 to 03:00 local time in both zones.
    people = pd.DataFrame([customer("ny"), customer("chi", timezone="America/Chicago")])
    result = {
        a.customer_id: a
        for a in decide_advisories(windows(window(peak=0.9)), people, policy, AS_OF)
    }
    assert "Sun 12 Mar 01:00 EST – 06:00 EDT" in result["ny"].body
    assert "Sun 12 Mar 00:00 CST – 05:00 CDT" in result["chi"].body
    assert "01:00 EST" in result["ny"].subject and "05:00 CDT" in result["chi"].subject
    assert "about 4 hours" in result["ny"].body  # real duration, not the clock difference


def test_english_body_says_when_why_how_likely_what_to_do_and_whom_to_call(policy) -> None:
    result = {
        a.segment: a
        for a in decide_advisories(
            windows(window(start="2023-07-04T18:00Z", hours=5)),
            one_per_segment(),
            policy,
            pd.Timestamp("2023-07-01T00:00Z"),
        )
    }
    body = result["residential"].body
    assert "Tue 4 Jul 14:00–19:00 EDT" in body
    assert "about 5 hours" in body
    assert "high (62%)" in body
    assert "gusts up to 70 km/h; heavy rain (40 mm)" in body
    assert "mild temperatures" not in body  # lowers the risk, so it is no reason
    assert "flashlights" in body and "fridge" in body
    assert policy.hotline in body
    assert "forecast, not a certainty" in body
    assert "Reply STOP to opt out" in body
    assert "controlled shutdown" in result["industrial"].body
    assert "POS" in result["commercial"].body
    assert "medical certificate program" in result["critical"].body
    assert "flashlights" not in result["critical"].body


def test_chinese_message(policy) -> None:
    people = pd.DataFrame([customer("zh", language="zh-CN", segment="critical")])
    zh_policy = policy.model_copy(update={"hotline_zh": "1-800-555-0188"})
    (advisory,) = decide_advisories(
        windows(window(start="2023-07-04T18:00Z", hours=5)),
        people,
        zh_policy,
        pd.Timestamp("2023-07-01T00:00Z"),
    )
    assert advisory.language == "zh-CN"
    assert re.search(r"[\u4e00-\u9fff]", advisory.body)
    assert "7月4日(周二) 14:00–19:00 (美国东部夏令时间)" in advisory.body
    assert "阵风可达70公里/小时" in advisory.body and "gusts" not in advisory.body
    assert "高（62%）" in advisory.body
    assert "1-800-555-0188" in advisory.body and "1-800-555-0188" in advisory.sms_text
    assert "医疗证明" in advisory.body
    assert "回复 TD 退订" in advisory.sms_text and "概率预报" in advisory.body


def test_unknown_language_falls_back_to_english(policy) -> None:
    people = pd.DataFrame([customer("es", language="es")])
    (advisory,) = decide_advisories(windows(window(peak=0.9)), people, policy, AS_OF)
    assert advisory.language == "en" and "Possible power outage" in advisory.subject


@pytest.mark.parametrize("language", ["en", "zh-CN"])
@pytest.mark.parametrize("segment", SEGMENTS)
@pytest.mark.parametrize(
    ("start", "hours", "timezone"),
    [
        ("2023-07-04T18:00Z", 5, "America/New_York"),
        ("2023-03-12T03:00Z", 11, "America/New_York"),  # crosses midnight and the DST change
        ("2023-11-05T04:00Z", 30, "America/Chicago"),
    ],
)
def test_sms_fits_with_long_driver_lists(policy, language, segment, start, hours, timezone) -> None:
    long = [
        {
            "feature": f"f{i}",
            "contribution": 1.0 / (i + 1),
            "text_en": f"wind gusts of {60 + i} km/h – strongest in 20 years (°C-adjusted)",
            "text_zh": f"阵风可达{60 + i}公里/小时，为二十年来最强，并伴有强降雨和雷暴",
        }
        for i in range(12)
    ]
    row = window(
        start=start,
        hours=hours,
        drivers=long,
        peak=0.97,
        area_name="Lexington-Fayette Urban County Government Area",
    )
    used, message = render_advisory(row, segment, language, timezone, policy)
    encoding, units = sms_length(message.sms_text)
    if language == "en":
        assert (encoding, units <= 160) == ("GSM-7", True), message.sms_text
        assert "Reply STOP to opt out" in message.sms_text
    else:
        assert encoding == "UCS-2" and units <= 134, message.sms_text
        assert "TD" in message.sms_text
    assert used == language
    assert policy.hotline in message.sms_text
    assert "\n" not in message.sms_text


def test_sms_keeps_a_short_driver_when_it_fits(policy) -> None:
    row = window(start="2023-07-04T18:00Z", hours=5, drivers=[GUSTS])
    _, message = render_advisory(row, "residential", "en", "America/New_York", policy)
    assert message.sms_text.startswith("Possible outage")
    assert "gusts up to 70 km/h" in message.sms_text
    assert "Tue 4 Jul 14:00-19:00 EDT" in message.sms_text
    assert "high (62%)" in message.sms_text


def test_sms_length_counts_gsm_extension_and_ucs2() -> None:
    assert sms_length("abc") == ("GSM-7", 3)
    assert sms_length("a[b]€") == ("GSM-7", 8)
    assert sms_length("a–b") == ("UCS-2", 3)
    assert sms_length("停电") == ("UCS-2", 2)
