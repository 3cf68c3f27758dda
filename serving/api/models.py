"""Request and response models of the API: the typed boundary (every route takes and returns
one of these). Response models ignore fields they do not name, so a column added to a run
file, or a field slipped into ``advisories.jsonl``, never reaches a client unreviewed.

Times are ISO-8601 UTC; probabilities are 0-1; durations are hours.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""Run ids as serving.publish.RunId makes them (and test ids like ``run-x``): no slash, no
leading dot, so an id can never name a path outside the runs folder."""

KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
FEEDBACK_KINDS = ("opt_out", "useful", "not_useful", "outage_yes", "outage_no", "other")
"""The advisory policy's feedback kinds (serving.feedback.FEEDBACK_KINDS on main)."""


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_only(value: Any) -> Any:
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("expected an ISO-8601 time with a zone, e.g. 2023-07-01T00:00:00Z")
    return value


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
"""A client's time: ISO-8601 with a zone (not a bare number, which pydantic would read as
Unix seconds, nor a naive time, whose zone would be a guess)."""


class _Out(BaseModel):
    """Response models: unknown input fields are dropped, never passed on."""

    model_config = ConfigDict(extra="ignore")


class _In(BaseModel):
    """Request models: unknown fields are an error (422), not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Versioned(_Out):
    schema_version: str = Field(description="output-contract version of the run data served "
                                "(serving.publish.SCHEMA_VERSION of the run)")


class Page(Versioned):
    total: int = Field(description="rows matching the filters, all pages together")
    limit: int = Field(description="page size used")
    offset: int = Field(description="rows skipped before this page")
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class RunScoped(_Out):
    run_id: str
    as_of: datetime = Field(description="issue time of the forecast (UTC)")


# ------------------------------------------------------------------------------- risk


class Driver(_Out):
    """One reason for a window's risk, in words."""

    feature: str
    value: float | None = Field(None, description="feature value, in the feature's unit")
    contribution: float | None = Field(None, description="share of the model's score")
    text_en: str | None = None
    text_zh: str | None = None


class RiskWindow(_Out):
    """A maximal run of hours of high risk in one area (end exclusive)."""

    window_id: str
    area_id: str
    area_name: str | None = None
    start: datetime = Field(description="UTC, first hour of the window")
    end: datetime = Field(description="UTC, exclusive")
    hours: int
    peak_prob: float = Field(description="highest hourly probability of an outage starting, 0-1")
    mean_prob: float = Field(description="mean hourly probability, 0-1")
    peak_ts: datetime = Field(description="UTC hour of the peak")
    peak_lift: float = Field(description="peak probability over the area's usual rate")
    expected_customers: float = Field(description="customers expected to lose power")
    customers_served: int = Field(description="customers the area serves")
    drivers: list[Driver]
    rank: int = Field(description="1 = largest expected impact in the run")
    model_version: str
    run_id: str
    weather_source: str = Field(description="'replay' (observed weather) or 'forecast'")
    issue_ts: datetime = Field(description="UTC as-of time of the run")
    duration_p10_h: float | None = Field(None, description="likely outage length, P10, hours")
    duration_p50_h: float | None = Field(None, description="likely outage length, P50, hours")
    duration_p90_h: float | None = Field(None, description="likely outage length, P90, hours")


class RiskWindowPage(Page, RunScoped):
    items: list[RiskWindow]


class HourlyRisk(_Out):
    """Risk of one area in one hour of the horizon."""

    ts: datetime = Field(description="UTC hour")
    lead_h: int = Field(description="hours after the as-of time")
    prob: float = Field(description="probability that an unplanned outage starts, 0-1")
    climatology: float = Field(description="the area's usual rate for this month and hour, 0-1")
    lift: float = Field(description="prob / climatology")
    expected_customers: float
    model_kind: str = Field(description="'pooled' or 'area' model")


class AreaRisk(Versioned, RunScoped):
    area_id: str
    area_name: str | None = None
    model_version: str | None = None
    items: list[HourlyRisk]


# ------------------------------------------------------------------------------- runs


class InputFile(_Out):
    """An input of the run: file name (no server path), size in bytes, sha256."""

    name: str
    bytes: int
    sha256: str


class ModelInfo(_Out):
    name: str
    version: str
    alias: str | None = None
    mlflow_run_id: str | None = None
    trained_through: str | None = None
    as_of_inside_training: bool | None = None


class RunManifest(Versioned):
    """The run's ``run.json`` as clients need it (server paths and the tracking URI left out)."""

    run_id: str
    as_of: datetime
    created_utc: datetime | None = None
    profile: str | None = None
    horizon_h: int | None = None
    weather_source: str | None = None
    weather_note: str | None = None
    model: ModelInfo | None = None
    inputs: list[InputFile] = Field(default_factory=list)
    contracts: list[dict[str, Any]] = Field(default_factory=list)
    quarantined_rows: int | None = None
    windows: int | None = Field(None, description="risk windows in the run")
    advisories: dict[str, int] = Field(default_factory=dict)
    metrics_overall: dict[str, Any] = Field(default_factory=dict, description="test-period metrics")
    outputs: dict[str, str] = Field(description="output file name -> sha256")
    timings_s: dict[str, float] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict, description="API paths of this run")


# ------------------------------------------------------------------------------ advisories


class MessageText(_Out):
    """The rendered text of an advisory on one channel; only these text fields are served
    (free-form parts such as push ``data`` or WeChat template ``data`` are not)."""

    subject: str | None = None
    headline: str | None = None
    title: str | None = None
    text: str | None = None
    body: str | None = None
    html: str | None = None
    script: str | None = Field(None, description="voice script")


class AdvisoryOut(_Out):
    """An advisory as written in ``advisories.jsonl``: never a phone number, e-mail address or
    messaging id (any such field in the file is dropped here). Fields that only the current
    advisory engine writes (``channels``, ``content``, ``level``...) or only the first one did
    (``channel``, ``subject``, ``body``, ``sms_text``) are optional."""

    advisory_id: str = Field(description="idempotency key, as in the outbox")
    run_id: str
    kind: str = Field(description="e.g. risk_advisory, risk_update, all_clear")
    message_type: str | None = Field(None, description="risk or outage (what opt-outs apply to)")
    reason: str | None = None
    customer_id: str
    area_id: str
    area_name: str | None = None
    window_id: str
    event_day: str | None = Field(None, description="window start day in the customer's zone")
    segment: str
    critical: bool | None = None
    language: str
    timezone: str
    channels: list[str] | None = Field(None, description="channel names, in fallback order")
    channel: str | None = Field(None, description="the preferred channel's name (older runs)")
    window_start_utc: datetime
    window_end_utc: datetime
    send_after_utc: datetime
    held_for_quiet_hours: bool | None = None
    step_h: int | None = Field(None, description="hours before the window this notice is for")
    level: str | None = None
    peak_prob: float
    expected_customers: float
    duration_p10_h: float | None = None
    duration_p50_h: float | None = None
    duration_p90_h: float | None = None
    restored_utc: datetime | None = None
    decided_at_utc: datetime | None = None
    synthetic: bool = Field(description="true when the customer is from the synthetic registry")
    content: dict[str, MessageText] | None = Field(None, description="text per channel")
    subject: str | None = None
    body: str | None = None
    sms_text: str | None = None


class AdvisoryPage(Page, RunScoped):
    items: list[AdvisoryOut]


# ------------------------------------------------------------------------------ outages


class OpenOutage(_Out):
    """An outage on the map at the as-of time with its estimated restoration."""

    event_id: str
    area_id: str
    first_seen_utc: datetime
    elapsed_h: float = Field(description="hours between the first report and the as-of time")
    cause: str | None = None
    customers: int
    p10_h: float = Field(description="hours still to go, P10")
    p50_h: float = Field(description="hours still to go, P50")
    p90_h: float = Field(description="hours still to go, P90")
    restored_p10_utc: datetime
    restored_p50_utc: datetime
    restored_p90_utc: datetime
    utility_etr_utc: datetime | None = Field(None, description="the utility's estimate then")


class OpenOutagePage(Page, RunScoped):
    items: list[OpenOutage]


# ------------------------------------------------------------------------------ writes


Key = Annotated[str, Field(pattern=KEY_PATTERN)]


def _drop_default(schema: dict[str, Any]) -> None:
    """Optional request fields: left out, never null, so the schema shows no null default."""
    schema.pop("default", None)


class FeedbackIn(_In):
    """Customer feedback about an advisory (``advisory_id``) or from a customer
    (``customer_id``), at least one of them; with only the advisory, the customer is taken
    from the outbox row of that advisory when there is one. ``feedback_id`` is chosen by the client and makes
    the call idempotent: sending the same body again returns the stored record."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["advisory_id"]}, {"required": ["customer_id"]}]})

    feedback_id: str = Field(pattern=KEY_PATTERN, description="client-chosen unique id")
    advisory_id: Key | SkipJsonSchema[None] = Field(
        default=None, description="the advisory's idempotency key", json_schema_extra=_drop_default)
    customer_id: Key | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_drop_default)
    kind: Literal["opt_out", "useful", "not_useful", "outage_yes", "outage_no", "other"] = Field(
        description="opt_out (the customer wants no more messages), useful, not_useful, "
        "outage_yes (the power did go out), outage_no, other")
    text: Annotated[str, Field(max_length=1000)] | SkipJsonSchema[None] = Field(
        default=None, description="free text; anything that looks like a phone number or "
        "e-mail address is masked", json_schema_extra=_drop_default)

    @field_validator("advisory_id", "customer_id", "text", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:  # leave the field out instead; the schema has no null
            raise ValueError("must be a string when given (leave the field out instead)")
        return value

    @model_validator(mode="after")
    def _about_something(self) -> FeedbackIn:
        if not (self.advisory_id or self.customer_id):
            raise ValueError("give advisory_id or customer_id (or both)")
        return self


class FeedbackOut(_Out):
    schema_version: str
    feedback_id: str
    advisory_id: str | None
    customer_id: str | None
    kind: str
    text: str | None = Field(description="as stored (contact details masked)")
    received_at: datetime = Field(description="UTC, first receipt")
    created: bool = Field(description="false when this feedback_id was already stored")


class AcknowledgementIn(_In):
    advisory_id: str = Field(pattern=KEY_PATTERN, description="the advisory's idempotency key")


class AcknowledgementOut(_Out):
    schema_version: str
    advisory_id: str
    acknowledged_at: datetime = Field(description="UTC, first acknowledgement (repeats keep it)")


class Health(_Out):
    status: Literal["ok", "degraded"]
    schema_version: str
    api_version: str
    runs_dir: bool = Field(description="the runs folder is readable")
    outbox: bool = Field(description="the outbox database answers")
    latest_run_id: str | None
    latest_run_intact: bool | None = Field(
        default=None, description="the latest run's files match the checksums in its run.json "
        "(null when no run is published)")


class Problem(_Out):
    """Error body (FastAPI's): ``detail`` says what was wrong and how to fix it."""

    detail: Any

