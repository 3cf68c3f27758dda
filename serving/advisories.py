"""Advisories: the pure decision of who is warned about which risk window, and the messages.

``decide_advisories`` turns ranked risk windows and the customer registry into one
:class:`Advisory` per customer, area and local day; it reads nothing but the Jinja2 templates
(``policy.templates_dir/<language>/advisory_{subject,body,sms}.j2``) and sends nothing.
Times are UTC everywhere except in the message text, which shows the customer's local time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from configs.settings import AdvisorySettings
from features import columns as C

KIND = "risk_advisory"
DEFAULT_LANGUAGE = "en"
WINDOW_COLUMNS = (
    "window_id",
    C.AREA,
    C.AREA_NAME,
    "start",
    "end",
    "hours",
    "peak_prob",
    C.EXPECTED_CUSTOMERS,
    "drivers",
    "rank",
    "run_id",
)
CUSTOMER_COLUMNS = (
    "customer_id",
    C.AREA,
    "segment",
    "channels",
    "language",
    C.TIMEZONE,
    "synthetic",
)

# SMS budget per language: English must fit one GSM-7 segment (160 septets); Chinese needs
# UCS-2, 67 characters per segment of a concatenated message, and may use two.
SMS_MAX_UNITS = {"en": 160, "zh-CN": 134}
SMS_DRIVER_MAX_CHARS = 40  # a longer driver text is cut in the SMS (not in subject or body)

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
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
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
# Peak probability (0-1) from which each likelihood word applies; the words are in templates.
_LEVELS = ((0.7, "very_high"), (0.5, "high"), (0.3, "moderate"), (0.0, "elevated"))


@dataclass(frozen=True)
class Advisory:
    """One message to one customer about one risk window (all times ISO-8601 UTC)."""

    advisory_id: str  # idempotency key, see advisory_key()
    run_id: str
    kind: str
    customer_id: str
    area_id: str
    window_id: str
    segment: str
    channel: str  # the customer's most preferred channel
    language: str  # language the text is written in
    timezone: str  # IANA zone the text's local times are in
    window_start_utc: str
    window_end_utc: str  # exclusive
    send_after_utc: str  # window start minus the segment's lead time, never before as-of
    peak_prob: float  # 0-1
    expected_customers: float  # customers of the area expected to lose power in the window
    subject: str
    body: str
    sms_text: str
    synthetic: bool  # True when the customer is made up (demo registry)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of the fields (all are str, float or bool)."""
        return {name: getattr(self, name) for name in _ADVISORY_FIELDS}


_ADVISORY_FIELDS = tuple(f.name for f in dataclasses.fields(Advisory))


@dataclass(frozen=True)
class Message:
    """The rendered text of one advisory."""

    subject: str
    body: str
    sms_text: str


def advisory_key(customer_id: str, area_id: str, local_day: str, kind: str = KIND) -> str:
    """Idempotency key: sha256 hex of ``customer_id|area_id|local_day|kind``, where local_day
    is the window's start date (YYYY-MM-DD) in the customer's time zone. Reruns, and windows
    that move within the same local day, give the same key."""
    return hashlib.sha256(f"{customer_id}|{area_id}|{local_day}|{kind}".encode()).hexdigest()


def decide_advisories(
    windows: pd.DataFrame,
    customers: pd.DataFrame,
    policy: AdvisorySettings,
    as_of: pd.Timestamp,
) -> list[Advisory]:
    """Advisories for the customers of the top-ranked areas whose segment threshold the
    window's peak probability reaches; one per customer, area and local day (the best-ranked
    window of the day). Windows that ended at or before ``as_of`` (UTC) are skipped, and so
    are customers without any channel. Sorted by window rank, start, area and customer."""
    as_of = _utc_timestamp(as_of, "as_of")
    _require(windows, WINDOW_COLUMNS, "windows")
    _require(customers, CUSTOMER_COLUMNS, "customers")
    repeated = windows["window_id"][windows["window_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"window_id must be unique; repeated: {sorted(map(str, repeated))[:5]}")
    live = select_windows(windows, policy.max_areas, as_of)
    pairs = _one_per_local_day(_eligible(live, customers, policy))
    window_rows = {row["window_id"]: row for _, row in live.iterrows()}
    facts = {wid: _window_facts(row) for wid, row in window_rows.items()}

    # The text depends on window, segment, language and zone, not on the person.
    @functools.cache
    def render(window_id: str, segment: str, language: str, timezone: str) -> tuple[str, Message]:
        return render_advisory(window_rows[window_id], segment, language, timezone, policy)

    @functools.cache
    def send_after(window_id: str, segment: str) -> str:
        lead = pd.Timedelta(hours=policy.segments[segment].lead_hours)
        return _iso(max(window_rows[window_id]["start"] - lead, as_of))

    return [
        _advisory(pair, facts[pair.window_id], send_after(pair.window_id, pair.segment), render)
        for pair in pairs.itertuples(index=False)
    ]


def select_windows(windows: pd.DataFrame, max_areas: int, as_of: pd.Timestamp) -> pd.DataFrame:
    """Windows not yet over at ``as_of`` in the ``max_areas`` areas with the best (lowest)
    window rank (new frame, start/end as UTC timestamps)."""
    start = _utc_column(windows["start"], "windows.start")
    end = _utc_column(windows["end"], "windows.end")
    live = windows.assign(start=start, end=end).loc[end > as_of]
    best = live.groupby(C.AREA)["rank"].min().reset_index()
    top = best.sort_values(["rank", C.AREA], kind="stable").head(max_areas)[C.AREA]
    return live.loc[live[C.AREA].isin(top)]


def _eligible(
    live: pd.DataFrame, customers: pd.DataFrame, policy: AdvisorySettings
) -> pd.DataFrame:
    """(window, customer) pairs of the same area where the window's peak probability reaches
    the customer's segment threshold, with the window's local start day per customer."""
    unknown = sorted(set(customers["segment"].astype(str)) - set(policy.segments))
    if unknown:
        raise ValueError(
            f"customers have segments {unknown} that the advisory policy lacks; "
            f"known: {sorted(policy.segments)}"
        )
    no_zone = customers.loc[customers[C.TIMEZONE].isna(), "customer_id"]
    if len(no_zone):
        raise ValueError(f"customers without a timezone: {list(no_zone.astype(str))[:5]}")
    thresholds = {name: seg.threshold for name, seg in policy.segments.items()}
    reachable = customers["channels"].map(lambda c: c is not None and len(c) > 0)
    people = customers.loc[reachable, list(CUSTOMER_COLUMNS)]
    people = people.assign(threshold=people["segment"].map(thresholds).astype("float64"))
    cols = ["window_id", C.AREA, "start", "rank", "peak_prob"]
    pairs = live[cols].merge(people, on=C.AREA, how="inner")
    pairs = pairs.loc[pairs["threshold"] <= pairs["peak_prob"]]
    return pairs.assign(local_day=_local_days(pairs["start"], pairs[C.TIMEZONE]))


def _local_days(start: pd.Series, timezone: pd.Series) -> pd.Series:
    """Calendar date (YYYY-MM-DD) of each UTC time in the matching IANA zone."""
    days = pd.Series("", index=start.index, dtype=object)
    for zone, index in start.groupby(timezone, sort=True).groups.items():
        days.loc[index] = start.loc[index].dt.tz_convert(str(zone)).dt.strftime("%Y-%m-%d")
    return days


def _one_per_local_day(pairs: pd.DataFrame) -> pd.DataFrame:
    keys = ["customer_id", C.AREA, "local_day"]
    best_first = pairs.sort_values([*keys, "rank", "start", "window_id"], kind="stable")
    kept = best_first.drop_duplicates(keys, keep="first")
    return kept.sort_values(["rank", "start", C.AREA, "customer_id"], kind="stable")


def _window_facts(window: pd.Series) -> dict[str, Any]:
    """The Advisory fields that come from the window, as plain JSON-safe values."""
    return {
        "run_id": str(window["run_id"]),
        "window_id": str(window["window_id"]),
        "window_start_utc": _iso(window["start"]),
        "window_end_utc": _iso(window["end"]),
        "peak_prob": float(window["peak_prob"]),
        "expected_customers": float(window[C.EXPECTED_CUSTOMERS]),
    }


def _advisory(
    pair: Any,
    window: dict[str, Any],
    send_after_utc: str,
    render: Callable[..., tuple[str, Message]],
) -> Advisory:
    language, message = render(pair.window_id, pair.segment, pair.language, pair.timezone)
    return Advisory(
        advisory_id=advisory_key(pair.customer_id, pair.area_id, pair.local_day),
        kind=KIND,
        customer_id=str(pair.customer_id),
        area_id=str(pair.area_id),
        segment=str(pair.segment),
        channel=str(pair.channels[0]),
        language=language,
        timezone=str(pair.timezone),
        send_after_utc=send_after_utc,
        subject=message.subject,
        body=message.body,
        sms_text=message.sms_text,
        synthetic=bool(pair.synthetic),
        **window,
    )


# --- rendering -------------------------------------------------------------------------------


def render_advisory(
    window: Mapping[str, Any],
    segment: str,
    language: str,
    timezone: str,
    policy: AdvisorySettings,
) -> tuple[str, Message]:
    """Subject, body and SMS for one window (a row with the WINDOW_COLUMNS) as a customer of
    ``segment`` reading ``language`` in ``timezone`` sees it. Returns the language actually
    used (English when there are no templates for ``language``) and the message."""
    templates_dir = str(Path(policy.templates_dir).resolve())
    env = _environment(templates_dir)
    lang = language if language in _template_languages(templates_dir) else DEFAULT_LANGUAGE
    start = _utc_timestamp(window["start"], "window start")
    end = _utc_timestamp(window["end"], "window end")
    peak = float(window["peak_prob"])
    hotline = (policy.hotline_zh or policy.hotline) if lang == "zh-CN" else policy.hotline
    context = {
        "area_name": str(window[C.AREA_NAME]),
        "when": local_span(start, end, timezone, lang),
        "hours": int(window["hours"]),
        "level": likelihood_level(peak),
        "percent": round(peak * 100),
        "drivers": driver_texts(window["drivers"], lang),
        "segment": segment,
        "hotline": hotline,
    }
    subject = _one_line(env.get_template(f"{lang}/advisory_subject.j2").render(context))
    body = env.get_template(f"{lang}/advisory_body.j2").render(context).strip() + "\n"
    sms = _fit_sms(
        env.get_template(f"{lang}/advisory_sms.j2").render, context, lang, start, end, timezone
    )
    return lang, Message(subject=subject, body=body, sms_text=sms)


def likelihood_level(peak_prob: float) -> str:
    """Likelihood word key for a peak probability (0-1): very_high, high, moderate, elevated."""
    return next((level for floor, level in _LEVELS if peak_prob >= floor), "elevated")


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


def sms_length(text: str) -> tuple[str, int]:
    """SMS encoding ("GSM-7" or "UCS-2") and length in its units: GSM septets (extension
    characters count twice) or UTF-16 code units."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        return "GSM-7", len(text) + sum(ch in _GSM_EXTENSION for ch in text)
    return "UCS-2", len(text.encode("utf-16-le")) // 2


def sms_fits(text: str, language: str) -> bool:
    """Whether ``text`` fits the SMS budget of ``language`` (English: one GSM-7 segment)."""
    encoding, units = sms_length(text)
    if language == "en" and encoding != "GSM-7":
        return False
    return units <= SMS_MAX_UNITS.get(language, SMS_MAX_UNITS["zh-CN"])


def to_gsm(text: str) -> str:
    """``text`` with typographic punctuation replaced and other non-GSM-7 characters (accents
    decomposed first) removed, so that an English SMS stays in the 160-septet alphabet."""
    text = text.translate(_TO_GSM)
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch in _GSM_BASIC or ch in _GSM_EXTENSION)


def _fit_sms(
    render: Callable[[dict[str, Any]], str],
    context: dict[str, Any],
    language: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    timezone: str,
) -> str:
    """The fullest SMS that fits the budget. Parts give way in this order: further drivers,
    the area name (the customer knows where they live), the weekday, the last driver, and
    finally the advice. Raises ValueError when even the shortest form is too long (a template
    or hotline problem, not data)."""
    clean = to_gsm if language == "en" else (lambda text: text)
    drivers = [clean(_cut(d, SMS_DRIVER_MAX_CHARS, language)) for d in context["drivers"]]
    base = {**context, "area_name": clean(context["area_name"]), "show_action": True}
    full = clean(local_span(start, end, timezone, language, dash="-"))
    short = clean(local_span(start, end, timezone, language, dash="-", weekday=False))
    counts = list(range(len(drivers), 0, -1)) or [0]
    tiers = [
        *(
            {"show_area": area, "drivers": drivers[:n], "when": full}
            for area in (True, False)
            for n in counts
        ),
        {"show_area": False, "drivers": drivers[:1], "when": short},
        {"show_area": False, "drivers": [], "when": full},
        {"show_area": False, "drivers": [], "when": short},
        {"show_area": False, "drivers": [], "when": short, "show_action": False},
    ]
    text = ""
    for tier in tiers:
        text = _one_line(render({**base, **tier}))
        if sms_fits(text, language):
            return text
    encoding, units = sms_length(text)
    raise ValueError(
        f"the shortest {language} SMS is {units} {encoding} units, over the budget of "
        f"{SMS_MAX_UNITS.get(language)}: {text!r}; shorten advisory_sms.j2 or the hotline"
    )


def _cut(text: str, max_chars: int, language: str) -> str:
    if len(text) <= max_chars:
        return text
    ellipsis = "..." if language == "en" else "…"
    return text[: max_chars - len(ellipsis)].rstrip() + ellipsis


def _one_line(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: str) -> Environment:
    """Jinja2 environment for plain-text templates: no autoescaping, undefined names fail."""
    return Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@functools.lru_cache(maxsize=8)
def _template_languages(templates_dir: str) -> frozenset[str]:
    """Languages with a full set of advisory templates (sub-folders of templates_dir)."""
    names = ("advisory_subject.j2", "advisory_body.j2", "advisory_sms.j2")
    return frozenset(
        d.name
        for d in Path(templates_dir).iterdir()
        if d.is_dir() and all((d / n).is_file() for n in names)
    )


# --- small helpers -----------------------------------------------------------------------------


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}; it has {list(frame.columns)}")


def _utc_timestamp(value: Any, what: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {ts}")
    return ts.tz_convert("UTC")


def _utc_column(values: pd.Series, what: str) -> pd.Series:
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"{what} must hold timezone-aware UTC timestamps, got dtype {values.dtype}"
        )
    return values.dt.tz_convert("UTC")


def _iso(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").isoformat().replace("+00:00", "Z")
