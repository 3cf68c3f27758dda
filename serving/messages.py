"""Message content: the text of an advisory on every channel, within each channel's limits.

:func:`render_content` turns one :class:`MessageFacts` (what the message is about, already in
plain values) into ``{channel: {field: text}}`` from the Jinja2 templates under
``policy.templates_dir/<language>/``. Nothing here decides who gets a message; nothing here
sends. Times in the text are the customer's local time; everything else is UTC.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from configs.settings import AdvisorySettings

DEFAULT_LANGUAGE = "en"
TEMPLATE_NAMES = (
    "email_subject.j2",
    "email_text.j2",
    "email.html.j2",
    "sms.j2",
    "push.j2",
    "voice.j2",
    "wechat.j2",
)
LEVEL_NAMES = ("elevated", "moderate", "high", "very_high")  # by escalation level index

# GSM 03.38: one segment holds 160 septets, a part of a concatenated message 153; UCS-2 holds
# 70 UTF-16 units, 67 per part.
_GSM_SINGLE, _GSM_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")  # two septets each (escape + character)
_TO_GSM = str.maketrans(
    {
        "–": "-",
        "—": "-",
        "‘": "'",
        "’": "'",
        "“": '"',
        "”": '"',
        "…": "...",
        "°": " deg",
        "\u00a0": " ",
        "\u202f": " ",
    }
)

_EN_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_EN_DAYS_LONG = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_EN_MONTHS_LONG = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_ZH_DAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
_ZH_ZONES = {
    "EST": "美国东部标准时间",
    "EDT": "美国东部夏令时间",
    "CST": "美国中部标准时间",
    "CDT": "美国中部夏令时间",
    "MST": "美国山地标准时间",
    "MDT": "美国山地夏令时间",
    "PST": "美国太平洋标准时间",
    "PDT": "美国太平洋夏令时间",
    "AKST": "阿拉斯加标准时间",
    "AKDT": "阿拉斯加夏令时间",
    "HST": "夏威夷标准时间",
}
_EN_ZONES_SPOKEN = {
    "EST": "Eastern Standard Time",
    "EDT": "Eastern Daylight Time",
    "CST": "Central Standard Time",
    "CDT": "Central Daylight Time",
    "MST": "Mountain Standard Time",
    "MDT": "Mountain Daylight Time",
    "PST": "Pacific Standard Time",
    "PDT": "Pacific Daylight Time",
    "UTC": "Coordinated Universal Time",
}


@dataclass(frozen=True)
class MessageFacts:
    """What one message says, as plain values. Times are UTC timestamps."""

    kind: str  # risk_advisory | risk_reminder | risk_update | risk_cancelled | restoration
    reason: str  # for updates: escalated | moved | renewed; else ""
    area_name: str
    start: pd.Timestamp  # window start
    end: pd.Timestamp  # window end (exclusive)
    peak_prob: float  # 0-1
    level: int  # index into LEVEL_NAMES
    drivers: tuple[str, ...]  # plain-words reasons, already in the message language
    segment: str
    language: str
    timezone: str  # IANA zone of the customer
    duration_h: tuple[float, float, float] | None  # p50, p10, p90 hours of a likely outage
    step_h: int | None = None  # reminders: hours before the start
    restored: pd.Timestamp | None = None  # restoration: when power came back


def template_language(language: str, policy: AdvisorySettings) -> str:
    """``language`` when it has a full template set, else English."""
    available = _template_languages(str(Path(policy.templates_dir).resolve()))
    return language if language in available else DEFAULT_LANGUAGE


def render_content(facts: MessageFacts, policy: AdvisorySettings) -> dict[str, dict[str, Any]]:
    """Content of one message for every channel: ``email{subject,text,html}``, ``sms{text}``,
    ``voice{script}``, ``push{title,body}``, ``wechat{data{first,keyword1..4,remark}}`` and
    ``webhook{...}`` (structured). Each fits its channel's limits in ``policy``."""
    env = _environment(str(Path(policy.templates_dir).resolve()))
    lang = facts.language
    ctx = _context(facts, policy)

    def tpl(name: str) -> Any:
        return env.get_template(f"{lang}/{name}")

    subject = _one_line(tpl("email_subject.j2").render(ctx))
    text = tpl("email_text.j2").render(ctx).strip() + "\n"
    html = tpl("email.html.j2").render(ctx).strip() + "\n"
    sms = _fit_sms(tpl("sms.j2").render, ctx, facts, policy)
    push = _fit_push(tpl("push.j2"), ctx, policy, lang)
    voice = speakable(_one_paragraph(tpl("voice.j2").render(ctx)), lang)
    wechat = _wechat_fields(tpl("wechat.j2"), ctx, policy, lang)
    webhook = {
        "kind": facts.kind,
        "reason": facts.reason,
        "area_name": facts.area_name,
        "window_start_utc": iso_utc(facts.start),
        "window_end_utc": iso_utc(facts.end),
        "window_local": ctx["when"],
        "timezone": facts.timezone,
        "peak_prob": round(float(facts.peak_prob), 4),
        "level": LEVEL_NAMES[facts.level],
        "drivers": list(facts.drivers),
        "duration_h": None
        if facts.duration_h is None
        else dict(zip(("p50", "p10", "p90"), facts.duration_h, strict=True)),
        "restored_utc": None if facts.restored is None else iso_utc(facts.restored),
        "headline": subject,
        "text": text,
    }
    return {
        "email": {"subject": subject, "text": text, "html": html},
        "sms": {"text": sms},
        "voice": {"script": voice},
        "push": push,
        "wechat": {"data": wechat},
        "webhook": webhook,
    }


def _context(facts: MessageFacts, policy: AdvisorySettings) -> dict[str, Any]:
    lang = facts.language
    hotline = (policy.hotline_zh or policy.hotline) if lang == "zh-CN" else policy.hotline
    return {
        "kind": facts.kind,
        "reason": facts.reason,
        "area_name": facts.area_name,
        "when": local_span(facts.start, facts.end, facts.timezone, lang),
        "when_compact": compact_span(facts.start, facts.end, facts.timezone, lang),
        "when_spoken": spoken_span(facts.start, facts.end, facts.timezone, lang),
        "day": _local_day_label(facts.start.tz_convert(facts.timezone), lang, True),
        "hours": max(1, round((facts.end - facts.start) / pd.Timedelta(hours=1))),
        "level": LEVEL_NAMES[facts.level],
        "percent": round(float(facts.peak_prob) * 100),
        "drivers": list(facts.drivers),
        "segment": facts.segment,
        "hotline": hotline,
        "opt_out": policy.opt_out_zh if lang == "zh-CN" else policy.opt_out_en,
        "duration": duration_text(facts.duration_h, lang),
        "duration_spoken": spoken_duration(facts.duration_h, lang),
        "duration_compact": compact_duration(facts.duration_h, lang),
        "zone": _zone_name(facts.end.tz_convert(facts.timezone), lang),
        "step_h": facts.step_h,
        "restored": ""
        if facts.restored is None
        else local_time(facts.restored, facts.timezone, lang),
        "restored_compact": ""
        if facts.restored is None
        else compact_time(facts.restored, facts.timezone, lang),
    }


# --- time in words ---------------------------------------------------------------------------


def local_span(
    start: pd.Timestamp,
    end: pd.Timestamp,
    timezone: str,
    language: str,
    dash: str = "–",
    weekday: bool = True,
) -> str:
    """The window in local time with the zone, e.g. "Tue 4 Jul 14:00–19:00 EDT" or
    "7月4日(周二) 14:00–19:00 (美国东部夏令时间)". ``end`` is exclusive; a zone change inside
    the window (DST) shows both zones."""
    s, e = start.tz_convert(timezone), end.tz_convert(timezone)
    same_day = s.date() == e.date()
    zone_s, zone_e = _zone_name(s, language), _zone_name(e, language)
    day_s, day_e = _local_day_label(s, language, weekday), _local_day_label(e, language, weekday)
    zone_fmt = "({})".format if language == "zh-CN" else str
    left = f"{day_s} {s:%H:%M}"
    right = f"{e:%H:%M}" if same_day else f"{day_e} {e:%H:%M}"
    if zone_s != zone_e:
        left = f"{left} {zone_fmt(zone_s)}"
    sep = dash if same_day and zone_s == zone_e else f" {dash} "
    return f"{left}{sep}{right} {zone_fmt(zone_e)}"


def compact_span(start: pd.Timestamp, end: pd.Timestamp, timezone: str, language: str) -> str:
    """The window in local time without weekday or zone, at most 20 characters, for fields
    with tight limits: "7/4 14:00-19:00", "7/4 22:00-02:00+1" (next day), "7月4日14:00-次日02:00"."""
    s, e = start.tz_convert(timezone), end.tz_convert(timezone)
    days = (e.normalize().date() - s.normalize().date()).days
    if language == "zh-CN":
        left = f"{s.month}月{s.day}日{s:%H:%M}"
        later = "" if days == 0 else "次日" if days == 1 else f"{days}天后"
        return f"{left}-{later}{e:%H:%M}"
    left = f"{s.month}/{s.day} {s:%H:%M}"
    return f"{left}-{e:%H:%M}" + (f"+{days}" if days else "")


def spoken_span(start: pd.Timestamp, end: pd.Timestamp, timezone: str, language: str) -> str:
    """The window as a voice would say it: "Tuesday, July 4, from 2 PM to 7 PM, Eastern
    Daylight Time" or "7月4日周二下午2点到晚上7点"."""
    s, e = start.tz_convert(timezone), end.tz_convert(timezone)
    if language == "zh-CN":
        right = _zh_clock(e) if s.date() == e.date() else f"{e.month}月{e.day}日{_zh_clock(e)}"
        return f"{s.month}月{s.day}日{_ZH_DAYS[s.weekday()]}{_zh_clock(s)}到{right}"
    abbr = e.strftime("%Z")
    zone = _EN_ZONES_SPOKEN.get(abbr, "local time")
    left = f"{_EN_DAYS_LONG[s.weekday()]}, {_EN_MONTHS_LONG[s.month - 1]} {s.day}"
    if s.date() == e.date():
        return f"{left}, from {_en_clock(s)} to {_en_clock(e)}, {zone}"
    right = f"{_EN_DAYS_LONG[e.weekday()]}, {_EN_MONTHS_LONG[e.month - 1]} {e.day}"
    return f"{left}, {_en_clock(s)}, until {right}, {_en_clock(e)}, {zone}"


def local_time(ts: pd.Timestamp, timezone: str, language: str) -> str:
    """One instant in local time with the day: "Tue 4 Jul 14:00 EDT"."""
    t = ts.tz_convert(timezone)
    zone = _zone_name(t, language)
    if language == "zh-CN":
        return f"{_local_day_label(t, language, True)} {t:%H:%M} ({zone})"
    return f"{_local_day_label(t, language, True)} {t:%H:%M} {zone}"


def duration_text(duration_h: tuple[float, float, float] | None, language: str) -> str:
    """How long an outage would likely last, "about 3 h, likely 1–8 h" / "约3小时，可能1–8小时";
    empty when no restoration-time estimate exists."""
    if duration_h is None:
        return ""
    p50, p10, p90 = (max(1, round(float(v))) for v in duration_h)
    if language == "zh-CN":
        span = "" if p10 == p90 else f"，可能{p10}–{p90}小时"
        return f"约{p50}小时{span}"
    span = "" if p10 == p90 else f", likely {p10}–{p90} h"
    return f"about {p50} h{span}"


def spoken_duration(duration_h: tuple[float, float, float] | None, language: str) -> str:
    """The duration for a voice: "about 3 hours, possibly 1 to 8 hours" / "约3小时，可能1到8小时"."""
    if duration_h is None:
        return ""
    p50, p10, p90 = (max(1, round(float(v))) for v in duration_h)
    if language == "zh-CN":
        return f"约{p50}小时" + ("" if p10 == p90 else f"，可能{p10}到{p90}小时")
    unit = "hour" if p50 == 1 else "hours"
    return f"about {p50} {unit}" + ("" if p10 == p90 else f", possibly {p10} to {p90} hours")


def compact_duration(duration_h: tuple[float, float, float] | None, language: str) -> str:
    """The duration in at most 16 characters: "~3 h (1-8 h)" / "约3小时(1-8小时)"."""
    if duration_h is None:
        return ""
    p50, p10, p90 = (max(1, round(float(v))) for v in duration_h)
    if language == "zh-CN":
        return f"约{p50}小时" + ("" if p10 == p90 else f"({p10}-{p90}小时)")
    return f"~{p50} h" + ("" if p10 == p90 else f" ({p10}-{p90} h)")


def compact_time(ts: pd.Timestamp, timezone: str, language: str) -> str:
    """One instant, short: "7/4 14:00" / "7月4日14:00"."""
    t = ts.tz_convert(timezone)
    return f"{t.month}月{t.day}日{t:%H:%M}" if language == "zh-CN" else f"{t.month}/{t.day} {t:%H:%M}"


def _en_clock(t: pd.Timestamp) -> str:
    hour = t.hour % 12 or 12
    suffix = "AM" if t.hour < 12 else "PM"
    if t.hour == 0 and t.minute == 0:
        return "midnight"
    if t.hour == 12 and t.minute == 0:
        return "noon"
    return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"


def _zh_clock(t: pd.Timestamp) -> str:
    h = t.hour
    part = "凌晨" if h < 6 else "上午" if h < 12 else "中午" if h < 13 else "下午" if h < 18 else "晚上"
    hour = h if h <= 12 else h - 12
    return f"{part}{hour}点" + (f"{t.minute}分" if t.minute else "")


def _local_day_label(local: pd.Timestamp, language: str, weekday: bool) -> str:
    """ "Tue 4 Jul" / "7月4日(周二)", or without the weekday "4 Jul" / "7月4日"."""
    if language == "zh-CN":
        label = f"{local.month}月{local.day}日"
        return f"{label}({_ZH_DAYS[local.weekday()]})" if weekday else label
    label = f"{local.day} {_EN_MONTHS[local.month - 1]}"
    return f"{_EN_DAYS[local.weekday()]} {label}" if weekday else label


def _zone_name(local: pd.Timestamp, language: str) -> str:
    abbr = local.strftime("%Z")
    if language == "zh-CN":
        zone = str(local.tz)
        if abbr in _ZH_ZONES and (
            zone.startswith("America/") or zone.startswith("US/") or zone == "Pacific/Honolulu"
        ):
            return _ZH_ZONES[abbr]
        offset = local.strftime("%z")
        return f"UTC{offset[:3]}:{offset[3:]}"
    return abbr


def iso_utc(ts: pd.Timestamp) -> str:
    """ISO-8601 UTC with a Z, to the second."""
    return ts.tz_convert("UTC").isoformat().replace("+00:00", "Z")


# --- drivers and levels ----------------------------------------------------------------------


def driver_texts(drivers: Sequence[Mapping[str, Any]] | None, language: str) -> list[str]:
    """Driver texts in ``language`` (English where no Chinese text exists), in the given order,
    leaving out drivers that lower the risk (negative contribution)."""
    key = "text_zh" if language == "zh-CN" else "text_en"
    texts = []
    for driver in [] if drivers is None else list(drivers):
        contribution = driver.get("contribution")
        if contribution is not None and float(contribution) <= 0:
            continue
        text = driver.get(key) or driver.get("text_en") or ""
        if str(text).strip():
            texts.append(str(text).strip())
    return texts


# --- channel limits --------------------------------------------------------------------------


def sms_length(text: str) -> tuple[str, int]:
    """SMS encoding ("GSM-7" or "UCS-2") and length in its units: GSM septets (extension
    characters count twice) or UTF-16 code units."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        return "GSM-7", len(text) + sum(ch in _GSM_EXTENSION for ch in text)
    return "UCS-2", len(text.encode("utf-16-le")) // 2


def sms_segments(text: str) -> int:
    """Parts the text is sent as (1 when it fits a single SMS)."""
    encoding, units = sms_length(text)
    single, part = (_GSM_SINGLE, _GSM_PART) if encoding == "GSM-7" else (_UCS2_SINGLE, _UCS2_PART)
    return 1 if units <= single else -(-units // part)


def sms_capacity(encoding: str, max_segments: int) -> int:
    """Units that fit in ``max_segments`` parts of ``encoding``."""
    single, part = (_GSM_SINGLE, _GSM_PART) if encoding == "GSM-7" else (_UCS2_SINGLE, _UCS2_PART)
    return single if max_segments <= 1 else part * max_segments


def sms_fits(text: str, language: str, policy: AdvisorySettings) -> bool:
    """Whether ``text`` fits the language's SMS budget (English must stay in GSM-7)."""
    encoding, units = sms_length(text)
    if language == "en" and encoding != "GSM-7":
        return False
    max_segments = policy.sms.max_segments.get(language, 1)
    return units <= sms_capacity(encoding, max_segments)


def to_gsm(text: str) -> str:
    """``text`` with typographic punctuation replaced and other non-GSM-7 characters (accents
    decomposed first) removed, so that an English SMS stays in the GSM-7 alphabet."""
    text = text.translate(_TO_GSM)
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch in _GSM_BASIC or ch in _GSM_EXTENSION)


def _fit_sms(
    render: Callable[[dict[str, Any]], str],
    context: dict[str, Any],
    facts: MessageFacts,
    policy: AdvisorySettings,
) -> str:
    """The fullest SMS that fits the budget. Parts give way in this order: further drivers,
    the area name (the customer knows where they live), the weekday, the duration, the last
    driver, and finally the advice. Raises ValueError when even the shortest form is too long
    (a template or hotline problem, not data)."""
    language = facts.language
    clean = to_gsm if language == "en" else (lambda text: text)
    cap = policy.sms.driver_max_chars
    drivers = [clean(_cut(d, cap, language)) for d in context["drivers"]]
    base = {
        **context,
        "area_name": clean(context["area_name"]),
        "duration": clean(context["duration"]),
        "restored": clean(context["restored"]),
        "show_action": True,
    }
    full = clean(local_span(facts.start, facts.end, facts.timezone, language, dash="-"))
    short = clean(
        local_span(facts.start, facts.end, facts.timezone, language, dash="-", weekday=False)
    )
    counts = list(range(len(drivers), 0, -1)) or [0]
    tiers = [
        *(
            {"show_area": area, "drivers": drivers[:n], "when": full}
            for area in (True, False)
            for n in counts
        ),
        {"show_area": False, "drivers": drivers[:1], "when": short},
        {"show_area": False, "drivers": drivers[:1], "when": short, "duration": ""},
        {"show_area": False, "drivers": [], "when": short, "duration": ""},
        {"show_area": False, "drivers": [], "when": short, "duration": "", "show_action": False},
    ]
    text = ""
    for tier in tiers:
        text = _one_line(render({**base, **tier}))
        if sms_fits(text, language, policy):
            return text
    encoding, units = sms_length(text)
    raise ValueError(
        f"the shortest {language} {facts.kind} SMS is {units} {encoding} units, over the "
        f"budget of {policy.sms.max_segments.get(language, 1)} part(s): {text!r}; shorten "
        "sms.j2 or the hotline"
    )


def _fit_push(
    template: Any, context: dict[str, Any], policy: AdvisorySettings, language: str
) -> dict[str, str]:
    """Push title and body within the FCM/APNs display limits: drivers drop out of the body
    first, then the body is cut at a word with an ellipsis."""
    limits = policy.push
    ellipsis = "…"
    title = _cut(
        _one_line(str(template.make_module(context).title())), limits.title_max_chars, language
    )
    body = ""
    drivers = context["drivers"]
    for n in range(len(drivers), -1, -1):
        body = _one_line(str(template.make_module({**context, "drivers": drivers[:n]}).body()))
        if len(body) <= limits.body_max_chars:
            break
    if len(body) > limits.body_max_chars:
        body = body[: limits.body_max_chars - len(ellipsis)].rstrip() + ellipsis
    return {"title": title, "body": body}


def _wechat_fields(
    template: Any, context: dict[str, Any], policy: AdvisorySettings, language: str
) -> dict[str, dict[str, str]]:
    """WeChat template message data: ``{"first": {"value": ...}, "keyword1": ..., "remark":
    ...}``, each value within its configured length."""
    module = template.make_module(context)
    limits = policy.wechat
    names = ("first", "keyword1", "keyword2", "keyword3", "keyword4", "remark")
    data = {}
    for name in names:
        value = _one_line(str(getattr(module, name)()))
        cap = (
            limits.first_max_chars
            if name == "first"
            else limits.remark_max_chars
            if name == "remark"
            else limits.keyword_max_chars
        )
        data[name] = {"value": _cut(value, cap, language)}
    return data


def _cut(text: str, max_chars: int, language: str) -> str:
    if len(text) <= max_chars:
        return text
    ellipsis = "..." if language == "en" else "…"
    return text[: max_chars - len(ellipsis)].rstrip() + ellipsis


def _one_line(text: str) -> str:
    return " ".join(text.split())


_SPOKEN_EN = (
    ("°C", " degrees Celsius"), ("°F", " degrees Fahrenheit"), ("°", " degrees"),
    ("km/h", " kilometres per hour"), ("%", " percent"), ("–", " to "), ("—", ", "),
    ("(", ", "), (")", ", "), ("&", " and "), ("/", " per "),
)
_SPOKEN_ZH = (("–", "到"), ("—", "，"), ("°C", "摄氏度"), ("%", "百分比"), ("(", "，"), (")", "，"))


def speakable(text: str, language: str) -> str:
    """Text a text-to-speech voice reads right: units and symbols in words, no brackets."""
    for symbol, words in _SPOKEN_ZH if language == "zh-CN" else _SPOKEN_EN:
        text = text.replace(symbol, words)
    text = " ".join(text.split())
    return text.replace(" ,", ",").replace(",,", ",").replace(", .", ".")


def _one_paragraph(text: str) -> str:
    """Voice scripts: one paragraph of plain sentences, no markup or list dashes."""
    lines = [line.strip().lstrip("-•").strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line)


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: str) -> Environment:
    """Jinja2 environment: HTML templates (``*.html.j2``) autoescaped, the rest plain text;
    undefined names fail."""
    return Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,  # templates do not change during a run; no stat per render
    )


@functools.lru_cache(maxsize=8)
def _template_languages(templates_dir: str) -> frozenset[str]:
    """Languages with a full set of templates (sub-folders of templates_dir)."""
    return frozenset(
        d.name
        for d in Path(templates_dir).iterdir()
        if d.is_dir() and all((d / n).is_file() for n in TEMPLATE_NAMES)
    )
