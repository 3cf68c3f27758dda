"""Message content on every channel, in both languages and for every kind, within the limits
of the channel: SMS length and parts, push title and body, WeChat fields, a speakable voice
script."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from configs.settings import load_settings
from serving.messages import (
    MessageFacts,
    compact_span,
    duration_text,
    render_content,
    sms_length,
    sms_segments,
    spoken_span,
)

SEGMENTS = ("residential", "commercial", "industrial", "critical")
KINDS = (
    ("risk_advisory", ""),
    ("risk_reminder", ""),
    ("risk_update", "escalated"),
    ("risk_update", "moved"),
    ("risk_update", "renewed"),
    ("risk_cancelled", ""),
    ("restoration", ""),
    ("outage_update", ""),
)
LONG_DRIVERS_EN = tuple(
    f"wind gusts of {60 + i} km/h – strongest in 20 years (°C-adjusted)" for i in range(12)
)
LONG_DRIVERS_ZH = tuple(f"阵风可达{60 + i}公里/小时，为二十年来最强，并伴有强降雨和雷暴" for i in range(12))


@pytest.fixture(scope="module")
def policy():
    return load_settings().advisories


def facts(kind="risk_advisory", reason="", language="en", segment="residential",
          start="2023-07-04T18:00Z", hours=5, timezone="America/New_York", drivers=None,
          duration=(3.0, 1.0, 8.0), area="Lexington-Fayette Urban County Government Area"):
    begin = pd.Timestamp(start)
    return MessageFacts(
        kind=kind, reason=reason, area_name=area, start=begin,
        end=begin + pd.Timedelta(hours=hours), peak_prob=0.97, level=3,
        drivers=drivers if drivers is not None else (
            LONG_DRIVERS_ZH if language == "zh-CN" else LONG_DRIVERS_EN),
        segment=segment, language=language, timezone=timezone, duration_h=duration,
        step_h=4 if kind == "risk_reminder" else None,
        restored=begin + pd.Timedelta(hours=2) if kind in ("restoration", "outage_update")
        else None,
    )


@pytest.mark.parametrize("language", ["en", "zh-CN"])
@pytest.mark.parametrize("segment", SEGMENTS)
@pytest.mark.parametrize(("kind", "reason"), KINDS)
@pytest.mark.parametrize(
    ("start", "hours", "timezone"),
    [
        ("2023-07-04T18:00Z", 5, "America/New_York"),
        ("2023-03-12T03:00Z", 11, "America/New_York"),  # crosses midnight and the DST change
        ("2023-11-05T04:00Z", 30, "America/Chicago"),
    ],
)
def test_every_channel_fits_its_limits(policy, language, segment, kind, reason, start, hours,
                                       timezone) -> None:
    content = render_content(
        facts(kind, reason, language, segment, start, hours, timezone), policy)
    sms = content["sms"]["text"]
    encoding, units = sms_length(sms)
    if language == "en":
        assert encoding == "GSM-7" and units <= 160, sms
        assert sms_segments(sms) == 1
        assert "Reply STOP to opt out" in sms
    else:
        assert encoding == "UCS-2" and units <= 2 * 67, sms
        assert sms_segments(sms) <= policy.sms.max_segments["zh-CN"]
        assert "TD" in sms
    assert "\n" not in sms and policy.hotline in sms or kind == "risk_cancelled"

    push = content["push"]
    assert 0 < len(push["title"]) <= policy.push.title_max_chars
    assert 0 < len(push["body"]) <= policy.push.body_max_chars
    apns = json.dumps({"aps": {"alert": push}}, ensure_ascii=False).encode()
    assert len(apns) <= policy.push.max_payload_bytes

    data = content["wechat"]["data"]
    assert set(data) == {"first", "keyword1", "keyword2", "keyword3", "keyword4", "remark"}
    assert len(data["first"]["value"]) <= policy.wechat.first_max_chars
    assert len(data["remark"]["value"]) <= policy.wechat.remark_max_chars
    for k in ("keyword1", "keyword2", "keyword3", "keyword4"):
        assert 0 < len(data[k]["value"]) <= policy.wechat.keyword_max_chars, data[k]
    assert "…" not in data["keyword2"]["value"] and "..." not in data["keyword2"]["value"]

    voice = content["voice"]["script"]
    assert voice and "\n" not in voice
    for unspeakable in ("–", "%", "<", ">", "http", "EDT", "CST", "- "):
        assert unspeakable not in voice, (unspeakable, voice)

    email = content["email"]
    assert email["subject"] and "\n" not in email["subject"]
    assert email["text"].endswith("\n") and "opt out" in email["text"] or "退订" in email["text"]
    assert email["html"].startswith("<!DOCTYPE html>") and "</html>" in email["html"]
    assert content["webhook"]["kind"] == kind


def test_sms_keeps_a_short_driver_when_it_fits(policy) -> None:
    content = render_content(facts(drivers=("gusts up to 70 km/h",), duration=None,
                                   area="Jefferson County"), policy)
    sms = content["sms"]["text"]
    assert sms.startswith("Possible outage")
    assert "gusts up to 70 km/h" in sms and "very high (97%)" in sms


def test_time_and_duration_words() -> None:
    start, end = pd.Timestamp("2023-07-04T18:00Z"), pd.Timestamp("2023-07-04T23:00Z")
    assert compact_span(start, end, "America/New_York", "en") == "7/4 14:00-19:00"
    assert spoken_span(start, end, "America/New_York", "en") == (
        "Tuesday, July 4, from 2 PM to 7 PM, Eastern Daylight Time")
    assert spoken_span(start, end, "America/New_York", "zh-CN") == "7月4日周二下午2点到晚上7点"
    assert duration_text((3.2, 1.0, 7.6), "en") == "about 3 h, likely 1–8 h"
    assert duration_text((2.0, 2.0, 2.0), "zh-CN") == "约2小时"
    assert duration_text(None, "en") == ""
