"""The one reader of configuration: YAML profiles plus environment.

``load_settings(profile)`` merges ``configs/base.yaml`` with a profile file, applies the
environment (``FOREWARN_DATA_DIR``, ``FOREWARN_HOME``, ``FOREWARN_MLFLOW_TRACKING_URI``) and
returns one validated :class:`Settings`. Each function of the product receives only its own
section. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_DIR = Path(__file__).resolve().parent
BASE_FILE = CONFIG_DIR / "base.yaml"
POLICY_FILE = CONFIG_DIR / "policy.yaml"
DEFAULT_DATA_DIR = Path("../shared/data")
DEFAULT_HOME = Path(".forewarn")

SEGMENTS = ("residential", "commercial", "industrial", "critical")
CHANNELS = ("app_push", "wechat", "sms", "voice", "email")
LANGUAGES = ("en", "zh-CN")


class SettingsError(ValueError):
    """A configuration file or value is wrong; the message says which and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsSettings(_Section):
    """Where inputs are read and where all state is written."""

    data_dir: Path = Field(description="root of the shared real data (FOREWARN_DATA_DIR)")
    home: Path = Field(description="all state the product writes (FOREWARN_HOME)")

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def customers_file(self) -> Path:
        """The customer registry the dispatcher's contact book reads (Parquet)."""
        return self.home / "customers.parquet"

    @property
    def outbox_url(self) -> str:
        return f"sqlite:///{(self.home / 'outbox.db').resolve()}"


class OutageSettings(_Section):
    """LG&E/KU-style outage-map history (see ``features/outages.py``)."""

    adapter: Literal["lgeku"] = "lgeku"
    events_file: str = Field(description="events CSV, relative to data_dir")
    snapshots_file: str = Field(description="scrape snapshots CSV, relative to data_dir")
    planned_causes: tuple[str, ...] = ("Scheduled maintenance",)
    max_quiet_gap_h: float = Field(
        15.0, gt=0, description="hours between scrapes above which the scraper counts as down"
    )
    small_outage_floor: int = Field(4, ge=1, description="customers the map shows for 1-4")
    duplicate_window_min: float = Field(
        30.0, ge=0, description="re-issued ids: same place, starts within this many minutes"
    )
    max_quarantine_share: float = Field(0.05, ge=0, le=1)


class StationSettings(_Section):
    """The weather station that stands for the territory."""

    id: str
    name: str
    latitude: float
    longitude: float
    elevation: int = 0
    country: str = "US"
    timezone: str = "America/New_York"


class WeatherSettings(_Section):
    """Daily weather history through meteostat (local mirror by default)."""

    mode: Literal["local", "online"] = "local"
    noaa_daily_file: str = Field(description="NOAA GHCN-Daily CSV, relative to data_dir")
    mirror_dir: Path | None = Field(
        None, description="meteostat-layout mirror; default <home>/meteostat"
    )
    station: StationSettings
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    min_coverage: float = Field(
        0.8, ge=0, le=1, description="share of history hours that must have weather"
    )


class ForecastVariableSettings(_Section):
    """Overrides of how one forecast column is found in the files; unset fields keep the
    product's defaults (``features.forecast_grids.DEFAULT_VARIABLES``)."""

    sources: tuple[str, ...] | None = Field(
        None, description="GRIB shortNames or dataset variable names to look for, in order"
    )
    components: tuple[tuple[str, str], ...] | None = Field(
        None, description="(u, v) name pairs whose speed gives the column (wind)"
    )
    level: float | None = Field(None, description="vertical level to select (hPa or m)")
    source_units: str | None = Field(None, description="units to assume instead of the file's")
    accumulated_from: Literal["issue", "previous_step"] | None = Field(
        None, description="where accumulations start, for files that do not record it"
    )
    min: float | None = Field(None, description="lowest plausible value, product unit")
    max: float | None = Field(None, description="highest plausible value, product unit")


class ForecastSettings(_Section):
    """Numerical weather forecast grids (GRIB/NetCDF) sampled at the areas, and whether the
    nightly flow scores the horizon with them (``use: forecast``) or with observed weather
    replayed (``use: replay``)."""

    use: Literal["replay", "forecast"] = Field(
        "replay", description="weather of the horizon: the newest forecast issued at or before "
        "the as-of time, or observed weather replayed")
    directory: str = Field(
        "gridded_weather/pygrib_sampledata",
        description="folder of forecast files, relative to data_dir unless absolute",
    )
    file_glob: str = Field("ds.*.bin", description="which files of the folder to read")
    variables: tuple[str, ...] = Field(
        ("fc_t2m_c", "fc_tmax_c", "fc_tmin_c", "fc_prcp_mm", "fc_snow_mm", "fc_wind_ms",
         "fc_gust_ms"),
        description="product columns to read where a file has them",
    )
    max_age_h: float = Field(
        24.0, gt=0, description="hours between the forecast's issue time and the as-of time "
        "above which the forecast is stale")
    fallback: Literal["stop", "replay"] = Field(
        "stop", description="when the forecast is stale, incomplete for the horizon or "
        "implausible: stop the run, or flag it and score with observed weather (replay)")
    overrides: dict[str, ForecastVariableSettings] = Field(default_factory=dict)
    method: Literal["nearest", "bilinear"] = "bilinear"
    points_per_area: int = Field(
        1, ge=1, le=64, description="1 = the area's point; n = it plus n-1 on a circle"
    )
    point_radius_km: float = Field(10.0, gt=0, description="radius of that circle, km")

    @model_validator(mode="after")
    def _overrides_are_read(self) -> ForecastSettings:
        stray = sorted(set(self.overrides) - set(self.variables))
        if stray:
            raise ValueError(f"overrides for columns not in forecast.variables: {stray}")
        if self.use == "forecast" and not self.directory.strip():
            raise ValueError("use: forecast needs forecast.directory (a folder of forecast "
                             "files)")
        return self


class TelemetryAssetSettings(_Section):
    """One monitored asset (e.g. a distribution transformer) and the area it serves."""

    asset_id: str
    area_id: str = Field(description="the forecast area (area_id) the asset belongs to")
    timezone: str = Field(
        "UTC", description="zone of the source's naive timestamps (ETT: Asia/Shanghai)"
    )
    name: str = ""


class TelemetrySettings(_Section):
    """Equipment telemetry (features/telemetry.py): file, adapter, assets and the thresholds of
    the anomaly checks and features."""

    enabled: bool = True
    adapter: Literal["long", "ett"] = "ett"
    file: str = Field(
        "ett_transformer/ETTh1.csv", description="telemetry file, relative to data_dir"
    )
    assets: tuple[TelemetryAssetSettings, ...] = ()
    stand_in: bool = Field(
        False, description="the telemetry does not overlap the outage history (demo stand-in)"
    )
    flat_line_h: int = Field(
        6, ge=2, description="identical values for this many hours in a row make a flat-line"
    )
    spike_k: float = Field(
        12.0, gt=0, description="jump size, in robust units of the past week's hourly changes"
    )
    spike_window_h: int = Field(168, ge=24, description="past hours that set the spike scale")
    normal_window_h: int = Field(
        720, ge=24, description="past hours that define an asset's normal loading"
    )
    load_quantile: float = Field(
        0.9, gt=0, lt=1, description="loading quantile (of the normal window) counted as high"
    )
    oil_fit_hours: int = Field(
        24 * 365, ge=168, description="first hours of an asset's history the oil model learns on"
    )
    oil_ridge: float = Field(1.0, ge=0, description="ridge penalty of the oil-temperature model")
    max_anomaly_share: float = Field(
        0.2, ge=0, le=1, description="share of flagged values above which the run stops"
    )


class DriverSettings(_Section):
    """Thresholds of the weather outage-driver features (features/weather_hourly.py)."""

    gust_ms: float = Field(20.0, gt=0, description="damaging gust, m/s (72 km/h)")
    wind_ms: float = Field(12.0, gt=0, description="strong sustained wind, m/s (43 km/h)")
    freezing_c: float = Field(0.0, description="air temperature at or below which rain freezes, °C")
    wet_snow_max_c: float = Field(2.0, description="warmest air at which snow is wet, °C")
    wet_snow_min_c: float = Field(-1.0, description="coldest air at which snow is wet, °C")
    hot_c: float = Field(32.0, description="heat threshold, °C")
    high_load_rel: float = Field(
        1.2, gt=0, description="loading this many times its normal counts as high"
    )
    leaf_on_months: tuple[int, ...] = Field(
        (5, 6, 7, 8, 9, 10), description="months with trees in leaf (more wind load on limbs)"
    )


class CustomerSettings(_Section):
    """Synthetic customer registry built from public customers-per-county counts."""

    counts_file: str = Field(description="EAGLE-I MCC.csv, relative to data_dir")
    seed: int = 20191201
    sample_fraction: float = Field(
        0.01, gt=0, le=1, description="synthetic customers generated per real customer"
    )
    max_per_area: int = Field(5000, ge=1)
    segment_shares: dict[str, float] = Field(
        default_factory=lambda: {
            "residential": 0.86,
            "commercial": 0.1,
            "industrial": 0.02,
            "critical": 0.02,
        }
    )
    language_shares: dict[str, float] = Field(default_factory=lambda: {"en": 0.95, "zh-CN": 0.05})
    opt_in_risk_share: float = Field(
        0.97, ge=0, le=1, description="synthetic customers consenting to risk advisories"
    )
    opt_in_outage_share: float = Field(
        0.99, ge=0, le=1, description="synthetic customers consenting to outage notices"
    )
    default_timezone: str = "America/New_York"
    timezone_by_area: dict[str, str] = Field(default_factory=dict)

    @field_validator("segment_shares")
    @classmethod
    def _segments(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(SEGMENTS)
        if unknown or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"segments must be among {SEGMENTS} and sum to 1, got {v}")
        return v

    @field_validator("language_shares")
    @classmethod
    def _languages(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(LANGUAGES)
        if unknown or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"languages must be among {LANGUAGES} and sum to 1, got {v}")
        return v


class AreaSettings(_Section):
    """What one forecast unit (area_id) is."""

    kind: Literal["county", "cell"] = "county"
    cell_size_deg: float = Field(0.25, gt=0)
    min_events: int = Field(
        20, ge=0, description="areas with fewer unplanned events in history are dropped"
    )
    states: tuple[str, ...] = Field(
        (), description="state FIPS prefixes to keep, e.g. ['21', '51']; empty keeps all"
    )
    counties_file: str = "reference_geo/geojson-counties-fips.json"
    include: tuple[str, ...] = Field(
        (), description="forecast only these area ids (a pilot, or a test slice); empty = all"
    )


class FeatureSettings(_Section):
    """History windows and weather exceedance thresholds."""

    history_windows_h: tuple[int, ...] = (24, 72, 168, 720)
    heavy_rain_mm: float = 25.0
    freezing_c: float = 0.0
    hot_c: float = 32.0
    snow_mm: float = 25.0


class ModelSettings(_Section):
    """Training period, per-area rule and LightGBM parameters."""

    horizon_h: int = Field(72, ge=1, le=240)
    train_start: datetime
    train_end: datetime = Field(description="exclusive end of training data (UTC)")
    test_start: datetime
    test_end: datetime = Field(description="exclusive end of the test period (UTC)")
    valid_hours: int = Field(
        24 * 60, ge=0, description="last hours before train_end used for early stopping"
    )
    min_positive_hours: int = Field(
        400, ge=1, description="an area gets its own model from this many positive hours"
    )
    seed: int = 7
    num_boost_round: int = Field(400, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    lgbm_params: dict[str, Any] = Field(default_factory=dict)
    per_area_params: dict[str, Any] = Field(default_factory=dict)
    area_mode: Literal["hybrid", "pooled", "per_area"] = Field(
        "hybrid", description="hybrid: an area's own model where it beats the pooled one on the "
        "validation slice; pooled: one model for all; per_area: every eligible area its own")
    calibration: Literal["auto", "none", "platt", "isotonic"] = Field(
        "auto", description="probability calibration on the validation slice; auto chooses "
        "on its later half")
    monotone: dict[str, Literal[-1, 0, 1]] = Field(
        default_factory=dict, description="feature -> 1 (risk never falls as it grows), -1, 0")
    monotone_method: Literal["basic", "intermediate", "advanced"] = "intermediate"

    @field_validator("train_start", "train_end", "test_start", "test_end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        # YAML gives datetime.timezone.utc, pydantic's own parsing of "...Z" strings gives
        # TzInfo(0): pandas refuses ranges between the two ("UTC != UTC"); one tzinfo for all
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> ModelSettings:
        if not self.train_start < self.train_end <= self.test_start < self.test_end:
            raise ValueError(
                "need train_start < train_end <= test_start < test_end; the test period must be "
                "later than the training period"
            )
        return self


class ComputeSettings(_Section):
    """Where training runs: in this process (the default) or fanned out over Dask.

    ``task_runner: dask`` runs each per-area model as its own Prefect task on a
    ``prefect_dask.DaskTaskRunner``: on the cluster at ``dask_address`` when given (start it
    with ``dask scheduler`` and ``dask worker tcp://host:8786``), else on a local cluster of
    ``n_workers`` x ``threads_per_worker`` started for the run. ``pooled_backend: dask`` fits
    the pooled model with ``lightgbm.dask`` on the same kind of cluster, for training data that
    outgrow one machine."""

    task_runner: Literal["local", "dask"] = Field(
        "local", description="local: per-area models fitted one after another in-process")
    dask_address: str | None = Field(
        None, description="scheduler of a running Dask cluster, e.g. tcp://10.0.0.5:8786; "
        "null starts a local cluster")
    n_workers: int = Field(2, ge=1, description="workers of the local cluster")
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = Field(
        False, description="local cluster workers as processes; each would start its own "
        "ephemeral Prefect server unless PREFECT_API_URL names a running one, so threads "
        "by default")
    pooled_backend: Literal["local", "dask"] = Field(
        "local", description="dask: the pooled model through lightgbm.dask "
        "(DaskLGBMClassifier); its trees differ slightly from the local ones")
    partitions: int = Field(
        0, ge=0, description="partitions of the pooled model's training rows (0: one per "
        "worker)")

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError(f"dask_address needs a protocol, e.g. tcp://{v}")
        return v


GATE_METRICS = ("roc_auc", "pr_auc", "brier", "brier_skill")
GateMetric = Literal["roc_auc", "pr_auc", "brier", "brier_skill"]


def _default_gate() -> dict[GateMetric, float]:
    return {"brier": 0.0, "roc_auc": 0.0}


class GateSettings(_Section):
    """Champion/challenger: a newly trained risk model is registered as ``challenger`` and
    becomes ``champion`` only if it beats the champion on every gate metric, both scored on
    the same rows of the test period (model.test_start..test_end)."""

    metrics: dict[GateMetric, float] = Field(
        default_factory=_default_gate,
        description="metric -> margin the challenger must beat the champion by (brier: lower "
        "by more than the margin; the others: higher by more than it)")
    require_beats_climatology: bool = Field(
        True, description="a challenger with Brier skill <= 0 against climatology is never "
        "promoted over an existing champion")

    @field_validator("metrics")
    @classmethod
    def _some(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError(f"name at least one gate metric of {GATE_METRICS}")
        if any(margin < 0 for margin in v.values()):
            raise ValueError("gate margins must be >= 0")
        return v


class WindowSettings(_Section):
    """How hourly risk becomes risk windows."""

    min_probability: float = Field(0.2, ge=0, le=1)
    min_lift: float = Field(
        1.5, ge=0, description="risk must also be this many times the area's usual rate"
    )
    min_hours: int = Field(1, ge=1)
    max_gap_h: int = Field(1, ge=0, description="merge runs separated by at most this many hours")
    top_drivers: int = Field(3, ge=1)


MESSAGE_TYPES = ("risk", "outage")


class SegmentPolicy(_Section):
    """How one customer segment is advised."""

    threshold: float = Field(ge=0, le=1, description="minimum peak probability of a window")
    steps_h: tuple[int, ...] = Field(
        (24,),
        min_length=1,
        description="hours before a window's start at which the segment is told, largest "
        "first; the first is the advisory, later ones are reminders when `reminders` is on",
    )
    reminders: bool = Field(
        False, description="also send a short reminder at each later step (beyond the cap)"
    )
    channels: tuple[str, ...] = Field(
        CHANNELS,
        min_length=1,
        description="channels this segment may be sent on, in fallback order for ties",
    )
    quiet_hours_override: bool = Field(
        False, description="send during quiet hours when holding would reach past the start"
    )

    @field_validator("steps_h")
    @classmethod
    def _steps(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError(f"steps_h must be distinct hours >= 0, got {list(v)}")
        return tuple(sorted(v, reverse=True))

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(v) - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown channels {sorted(unknown)}; known: {list(CHANNELS)}")
        return v

    @property
    def first_step_h(self) -> int:
        """Lead time of the advisory itself (hours before the window start)."""
        return self.steps_h[0]


class QuietHours(_Section):
    """Local hours (the customer's own IANA zone) when no message is sent; messages due then
    are held and released at ``end``."""

    start: int = Field(21, ge=0, le=23, description="local hour quiet hours begin")
    end: int = Field(8, ge=0, le=23, description="local hour held messages are released")


class CapSettings(_Section):
    """Frequency caps and what counts as a material change."""

    escalation_levels: tuple[float, ...] = Field(
        (0.3, 0.5, 0.7),
        description="peak-probability floors of the levels moderate, high, very high; an "
        "update is sent when a window's level rises",
    )
    min_shift_h: float = Field(
        2.0, gt=0, description="a window whose start or end moves this many hours is an update"
    )
    run_interval_h: int = Field(
        24, ge=1, description="hours to the next run: notices due later are left to it"
    )


class SmsSettings(_Section):
    """SMS length budget: GSM-7 160 septets (153 per part when concatenated), UCS-2 70
    characters (67 per part)."""

    max_segments: dict[str, int] = Field(
        default_factory=lambda: {"en": 1, "zh-CN": 2},
        description="parts of a concatenated SMS allowed per language",
    )
    driver_max_chars: int = Field(40, ge=8)


class PushSettings(_Section):
    """App push limits (FCM HTTP v1 and APNs): what the lock screen shows without cutting."""

    title_max_chars: int = Field(65, ge=10)
    body_max_chars: int = Field(240, ge=40)
    max_payload_bytes: int = Field(4096, ge=256, description="APNs payload limit")


class WechatSettings(_Section):
    """WeChat template message field limits (characters)."""

    keyword_max_chars: int = Field(20, ge=5)
    first_max_chars: int = Field(60, ge=10)
    remark_max_chars: int = Field(100, ge=10)


class ControlGroupSettings(_Section):
    """Randomised control group: customers who get no risk message, so that the effect of
    advisories can be measured. Membership is a stable hash of the customer id and salt."""

    share: float = Field(0.0, ge=0, le=0.5, description="share of customers held out (0-1)")
    salt: str = "forewarn-control-v1"


class AdvisorySettings(_Section):
    """The advisory policy (configs/policy.yaml, or the file the profile names)."""

    hotline: str = "1-800-981-0600"
    hotline_zh: str | None = None
    opt_out_en: str = Field("Reply STOP to opt out", description="how to opt out, English")
    opt_out_zh: str = Field("回复 TD 退订", description="how to opt out, Chinese")
    max_areas: int = Field(10, ge=1, description="advise only the top-ranked windows' areas")
    segments: dict[str, SegmentPolicy]
    quiet_hours: QuietHours = Field(default_factory=lambda: QuietHours.model_validate({}))
    caps: CapSettings = Field(default_factory=lambda: CapSettings.model_validate({}))
    sms: SmsSettings = Field(default_factory=lambda: SmsSettings.model_validate({}))
    push: PushSettings = Field(default_factory=lambda: PushSettings.model_validate({}))
    wechat: WechatSettings = Field(default_factory=lambda: WechatSettings.model_validate({}))
    control_group: ControlGroupSettings = Field(default_factory=lambda: ControlGroupSettings.model_validate({}))
    templates_dir: Path = CONFIG_DIR / "templates"

    @field_validator("segments")
    @classmethod
    def _all_segments(cls, v: dict[str, SegmentPolicy]) -> dict[str, SegmentPolicy]:
        missing = set(SEGMENTS) - set(v)
        if missing:
            raise ValueError(f"advisory policy lacks segments {sorted(missing)}")
        return v


class RestorationSettings(_Section):
    """Restoration-time model: quantiles of the hours to restoration, at first report and
    later (models/restoration.py). Training and test periods are the model section's."""

    enabled: bool = True
    changelog_file: str | None = Field(
        None, description="utility change log CSV (comments, ETR history), relative to data_dir")
    elapsed_h: tuple[float, ...] = Field(
        (0.0, 1.0, 2.0, 4.0, 8.0, 12.0),
        description="hours after the first report at which an estimate is made")
    max_end_uncertainty_min: float = Field(
        60.0, gt=0, description="an end known less exactly (scraper outage) is censored")
    calibration_days: int = Field(
        120, ge=7, description="last days of training kept apart to calibrate the interval")
    interval_coverage: float = Field(0.8, gt=0, lt=1, description="target P10-P90 coverage")
    regime_open_edges: tuple[float, ...] = Field(
        (100.0,), description="outages open territory-wide that separate calibration regimes")
    storm_customers_out: float = Field(
        10_000, gt=0, description="customers out territory-wide that make a storm day")
    min_rows: int = Field(2000, ge=10)
    seed: int = 11
    num_boost_round: int = Field(300, ge=1)
    lgbm_params: dict[str, Any] = Field(default_factory=dict)
    experiment: str = "forewarn-restoration"
    model_name: str = "forewarn-restoration"


DISPATCH_CHANNELS = (*CHANNELS, "webhook")


class ChannelLimits(_Section):
    """Sending limits shared by every channel adapter."""

    enabled: bool = True
    rate_per_s: float = Field(default=10.0, gt=0, description="messages per second (token bucket)")
    burst: int = Field(default=10, ge=1, description="messages that may go at once after a quiet spell")
    timeout_s: float = Field(default=10.0, gt=0, description="seconds per request to the provider")


class EmailChannelSettings(ChannelLimits):
    """SMTP relay. Login from FOREWARN_SMTP_USER / FOREWARN_SMTP_PASSWORD when set."""

    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    sender: str = "Forewarn <no-reply@example.invalid>"
    message_id_domain: str = "forewarn.invalid"


class WebhookChannelSettings(ChannelLimits):
    """JSON POST to the utility's own notifier; HMAC key from FOREWARN_WEBHOOK_SECRET."""

    url: str | None = Field(default=None, description="endpoint; the channel is off while unset")
    signature_header: str = "X-Forewarn-Signature"
    timestamp_header: str = "X-Forewarn-Timestamp"


class TwilioChannelSettings(ChannelLimits):
    """SMS and voice through the Twilio REST API shape (Messages.json, Calls.json).
    Account SID and auth token from FOREWARN_TWILIO_ACCOUNT_SID / FOREWARN_TWILIO_AUTH_TOKEN."""

    base_url: str = "https://api.twilio.com"
    from_number: str = Field(default="+15005550006", description="E.164 sender number")
    status_callback_url: str | None = Field(
        default=None, description="where the provider posts delivery receipts (idempotency key appended)"
    )
    voice_languages: dict[str, str] = Field(
        default_factory=lambda: {"en": "en-US", "zh-CN": "cmn-CN"},
        description="TwiML <Say language> per message language",
    )


class FcmChannelSettings(ChannelLimits):
    """App push through FCM HTTP v1; OAuth2 access token from FOREWARN_FCM_ACCESS_TOKEN."""

    base_url: str = "https://fcm.googleapis.com"
    project_id: str = "forewarn-demo"


class WechatChannelSettings(ChannelLimits):
    """WeChat official-account template messages. Access token from
    FOREWARN_WECHAT_ACCESS_TOKEN, or fetched with FOREWARN_WECHAT_APPID / _APPSECRET."""

    base_url: str = "https://api.weixin.qq.com"
    template_id: str = Field(default="forewarn-risk-advisory", description="default template id")
    url: str | None = Field(default=None, description="page opened when the message is tapped")


class ChannelsSettings(_Section):
    """Provider endpoints, sender ids and rate limits per channel (no credentials here)."""

    email: EmailChannelSettings = Field(default_factory=EmailChannelSettings)
    webhook: WebhookChannelSettings = Field(default_factory=WebhookChannelSettings)
    sms: TwilioChannelSettings = Field(default_factory=TwilioChannelSettings)
    voice: TwilioChannelSettings = Field(
        default_factory=lambda: TwilioChannelSettings(rate_per_s=1.0, burst=1))
    app_push: FcmChannelSettings = Field(default_factory=FcmChannelSettings)
    wechat: WechatChannelSettings = Field(default_factory=WechatChannelSettings)

    def limits(self, channel: str) -> ChannelLimits:
        """The settings of one channel by its dispatch name (see DISPATCH_CHANNELS)."""
        if channel not in DISPATCH_CHANNELS:
            raise KeyError(f"unknown channel {channel!r}; known: {list(DISPATCH_CHANNELS)}")
        return getattr(self, channel)


class DispatchSettings(_Section):
    """How the dispatcher drains the outbox."""

    batch_size: int = Field(default=200, ge=1, description="rows claimed per transaction")
    commit_every: int = Field(
        default=20, ge=1, description="sends recorded per transaction; also the most messages that a "
        "crash can leave sent-but-unrecorded (they are resent with the same idempotency key)"
    )
    concurrency: int = Field(
        default=4, ge=1, le=64, description="messages sent in parallel (threads); 1 = in order"
    )
    max_attempts: int = Field(default=5, ge=1, description="tries per channel before falling back")
    backoff_base_s: float = Field(default=30.0, gt=0, description="delay after the first failure")
    backoff_max_s: float = Field(default=3600.0, gt=0, description="cap of the retry delay")
    jitter: float = Field(default=0.2, ge=0, le=1, description="delay is drawn in [d*(1-jitter), d]")
    lease_s: float = Field(
        default=300.0, gt=0, description="a row left in 'sending' longer than this is taken again"
    )
    escalate_after_s: float = Field(
        default=900.0, gt=0, description="critical customers: wait this long for an acknowledgement "
        "before trying the next channel"
    )
    fallback: tuple[str, ...] = Field(
        default=("app_push", "sms", "voice", "email"),
        description="critical customers: channels tried after their own, in this order",
    )

    @field_validator("fallback")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in DISPATCH_CHANNELS]
        if unknown:
            raise ValueError(f"unknown channels {unknown}; known: {list(DISPATCH_CHANNELS)}")
        return v


class ChannelSecrets(_Section):
    """Provider credentials, from the environment only (never YAML, never logged)."""

    smtp_user: SecretStr | None = None
    smtp_password: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    fcm_access_token: SecretStr | None = None
    wechat_access_token: SecretStr | None = None
    wechat_appid: str | None = None
    wechat_appsecret: SecretStr | None = None


def channel_secrets(environ: dict[str, str] | None = None) -> ChannelSecrets:
    """Credentials of the channels from ``FOREWARN_<NAME>`` variables (e.g.
    FOREWARN_WEBHOOK_SECRET); unset or empty variables give None."""
    env = os.environ if environ is None else environ
    values = {
        name: env.get(f"FOREWARN_{name.upper()}") or None for name in ChannelSecrets.model_fields
    }
    return ChannelSecrets.model_validate(values)


class BacktestSettings(_Section):
    """Rolling-origin backtests (forewarn backtest)."""

    fold_days: int = Field(91, ge=1, description="days per fold")
    top_k: int = Field(10, ge=1, description="areas in the precision-at-k of daily rankings")
    big_day_customers_out: float = Field(
        10_000, gt=0, description="customers out territory-wide that make a big day")
    experiment: str = "forewarn-backtest"


API_SCOPES = ("read", "write")
API_TOKENS_ENV = "FOREWARN_API_TOKENS"
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class SubscriberSettings(_Section):
    """A downstream system told (signed CloudEvents webhook) when a new run is published."""

    url: str = Field(description="http(s) endpoint that receives the POST")
    secret_env: str = Field(
        pattern=_ENV_NAME,
        description="name of the environment variable holding the HMAC-SHA256 key (the key "
        "itself never goes in YAML)",
    )
    name: str | None = Field(default=None, description="label for logs; default the URL's host")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"subscriber url must be http(s), got {v!r}")
        return v


class ApiSettings(_Section):
    """The HTTP API for downstream notifiers (serving/api) and the run-published webhook.
    Bearer tokens come from the environment only (FOREWARN_API_TOKENS, see api_tokens)."""

    version: str = Field(default="1.0.0", description="API version, the OpenAPI info.version")
    default_limit: int = Field(default=100, ge=1, description="page size when the client gives none")
    max_limit: int = Field(default=1000, ge=1, le=1000, description="largest page served")
    max_body_bytes: int = Field(
        default=65536, ge=1024, le=16 * 1024 * 1024,
        description="largest request body accepted (feedback, acknowledgements); larger is 413",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000", description="public address of the API, for links in webhooks"
    )
    event_source: str = Field(
        default="urn:forewarn", description="CloudEvents `source` of the events this deployment sends"
    )
    subscribers: tuple[SubscriberSettings, ...] = ()
    timeout_s: float = Field(default=10.0, gt=0, description="seconds per webhook request")
    attempts: int = Field(default=3, ge=1, le=10, description="tries per subscriber on transient errors")


class ApiToken(_Section):
    """One bearer token: who holds it (``name``, safe to log) and what it may do."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    token: SecretStr
    scopes: frozenset[Literal["read", "write"]]

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("API tokens must be at least 16 characters")
        if any(c.isspace() for c in v.get_secret_value()):
            raise ValueError("API tokens must not contain spaces (a Bearer header cannot "
                             "carry them reliably); use e.g. openssl rand -hex 24")
        return v

    @field_validator("scopes")
    @classmethod
    def _some_scope(cls, v: frozenset[str]) -> frozenset[str]:
        if not v:
            raise ValueError("no scope given: end the entry with read, write or read+write")
        return v


def api_tokens(environ: dict[str, str] | None = None) -> tuple[ApiToken, ...]:
    """Bearer tokens of the API from ``FOREWARN_API_TOKENS``: comma-separated
    ``name:token:scope+scope`` entries (scopes ``read``, ``write``), e.g.
    ``notifier:3f9c...:read,app:77ab...:read+write``. Unset or empty gives no token (every
    authenticated route then answers 401). A malformed entry raises SettingsError naming the
    entry by its position and name, never by its token."""
    env = os.environ if environ is None else environ
    raw = (env.get(API_TOKENS_ENV) or "").strip()
    tokens: list[ApiToken] = []
    for i, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise SettingsError(f"{API_TOKENS_ENV} entry {i + 1}: expected name:token:scopes")
        name, token, scopes = parts
        try:
            tokens.append(ApiToken.model_validate(
                {"name": name, "token": token, "scopes": [s for s in scopes.split("+") if s]}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                                 f"{_message(err['msg'])}" for err in exc.errors())
            raise SettingsError(f"{API_TOKENS_ENV} entry {i + 1} ({name!r}): {problems}") from exc
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise SettingsError(f"{API_TOKENS_ENV}: token names must be unique, got {names}")
    holders: dict[str, str] = {}
    for t in tokens:  # one token under two names: who called, and with which scopes, is unclear
        digest = hashlib.sha256(t.token.get_secret_value().encode("utf-8")).hexdigest()
        if digest in holders:
            raise SettingsError(f"{API_TOKENS_ENV}: entries {holders[digest]!r} and {t.name!r} "
                                "have the same token; give each holder its own")
        holders[digest] = t.name
    return tuple(tokens)


def subscriber_secret(sub: SubscriberSettings, environ: dict[str, str] | None = None
                      ) -> SecretStr | None:
    """The HMAC key of a subscriber from the variable its ``secret_env`` names (None if unset)."""
    env = os.environ if environ is None else environ
    value = env.get(sub.secret_env)
    return SecretStr(value) if value else None


_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day", 1, 31, ()),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                  "sep", "oct", "nov", "dec")),
                ("weekday", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))


def _cron_value(token: str, low: int, names: tuple[str, ...]) -> int | None:
    if token.isdigit():
        return int(token)
    if token.lower() in names:
        return names.index(token.lower()) + low
    return None


def _cron_fields(v: str) -> str:
    """A 5-field cron with every value in its field's range (numbers, names of months and
    weekdays, ``*``, ranges ``a-b``, steps ``/n`` and lists), checked here so that a typo
    stops every command at once instead of only ``forewarn deploy``, with Prefect's bare
    'Invalid cron string'."""
    fields = v.split()
    if len(fields) != 5:
        raise ValueError(f"{v!r} is not a 5-field cron (minute hour day month weekday)")
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            span, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) >= 1):
                raise ValueError(f"{v!r}: {field} step {step!r} is not a whole number >= 1")
            if span == "*":
                continue
            ends = [_cron_value(t, low, names) for t in span.split("-", 1)]
            if None in ends or not span:
                raise ValueError(f"{v!r}: {field} {part!r} is not a number, range, list, step "
                                 f"or * (e.g. '0 3 * * 1-6')")
            if any(not low <= e <= high for e in ends if e is not None):
                raise ValueError(f"{v!r}: {field} {span!r} is outside {low}-{high}")
    return v


class DeploymentSettings(_Section):
    """Scheduled Prefect deployments (``forewarn deploy``): when each job runs, in which time
    zone, how many runs of one deployment may run at once, and how long an I/O task may take
    before it counts as hung."""

    timezone: str = Field("UTC", description="IANA zone the cron strings are read in (DST-safe)")
    nightly_cron: str = Field(
        "0 3 * * 1-6", description="nightly scoring run (the weekly retrain covers the other night)")
    retrain_cron: str = Field("0 3 * * 0", description="weekly run that retrains, gates and scores")
    refresh_cron: str = Field("15 * * * *", description="hourly check for a newer forecast")
    nightly_retrain: bool = Field(
        False, description="whether the scheduled nightly run trains; false: it scores with the "
        "registered champion and trains only when there is none")
    concurrency_limit: int = Field(
        1, ge=1, description="runs of one deployment at once; later ones wait (refresh: skipped)")
    io_timeout_s: float = Field(
        1800, gt=0, description="seconds an I/O task attempt (read, write, registry) may take "
        "before it fails as TimedOut (and is retried like any I/O failure)")
    tags: tuple[str, ...] = ("forewarn",)

    @field_validator("nightly_cron", "retrain_cron", "refresh_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _cron_fields(v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as "
                             "America/New_York)") from exc
        return v


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(None, description="default sqlite:///<home>/mlflow.db")
    experiment: str = "forewarn-risk"
    model_name: str = "forewarn-risk"


class Settings(_Section):
    profile: str
    policy_file: Path = Field(POLICY_FILE, description="advisory policy YAML")
    paths: PathsSettings
    outages: OutageSettings
    weather: WeatherSettings
    forecast: ForecastSettings
    customers: CustomerSettings
    areas: AreaSettings
    features: FeatureSettings
    model: ModelSettings
    compute: ComputeSettings = Field(default_factory=lambda: ComputeSettings.model_validate({}))
    gate: GateSettings = Field(default_factory=lambda: GateSettings.model_validate({}))
    windows: WindowSettings
    advisories: AdvisorySettings
    restoration: RestorationSettings
    backtest: BacktestSettings
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    mlflow: MlflowSettings
    telemetry: TelemetrySettings = Field(default_factory=lambda: TelemetrySettings.model_validate({}))
    drivers: DriverSettings = Field(default_factory=lambda: DriverSettings.model_validate({}))
    deployments: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings.model_validate({}))

    def data_path(self, relative: str) -> Path:
        return self.paths.data_dir / relative

    def input_files(self) -> dict[str, Path]:
        """Every input file the nightly job reads, by setting name."""
        files = {
            "outages.events_file": self.outages.events_file,
            "outages.snapshots_file": self.outages.snapshots_file,
            "customers.counts_file": self.customers.counts_file,
            "areas.counties_file": self.areas.counties_file,
        }
        if self.weather.mode == "local":
            files["weather.noaa_daily_file"] = self.weather.noaa_daily_file
        return {name: self.data_path(rel) for name, rel in files.items()}

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{(self.paths.home / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        """Where MLflow stores models and artifacts of new experiments (under the home)."""
        return (self.paths.home / "mlartifacts").resolve().as_uri()

    @property
    def mirror_dir(self) -> Path:
        return self.weather.mirror_dir or (self.paths.home / "meteostat")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: top level must be a mapping")
    return data


def _with_policy(raw: dict[str, Any], profile_dir: Path) -> dict[str, Any]:
    """Merge the advisory policy file under ``advisories`` (keys given in base, profile or
    overrides win). ``policy_file`` is relative to the profile's folder, else configs/."""
    given = raw.get("policy_file")
    path = POLICY_FILE
    if given:
        path = Path(given)
        if not path.is_absolute():
            local = profile_dir / path
            path = local if local.is_file() else CONFIG_DIR / path
    policy = _read_yaml(path)
    return raw | {"policy_file": path, "advisories": _merge(policy, raw.get("advisories") or {})}


def load_settings(
    profile: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from base.yaml, an optional profile file, the environment and
    explicit overrides (in that order of precedence, last wins)."""
    env = dict(os.environ if environ is None else environ)
    raw = _read_yaml(BASE_FILE)
    name = "base"
    where = str(BASE_FILE)
    if profile is not None:
        path = Path(profile)
        raw = _merge(raw, _read_yaml(path))
        name = path.stem
        where = f"{path} over {BASE_FILE.name}"
    paths = dict(raw.get("paths") or {})
    paths["data_dir"] = env.get("FOREWARN_DATA_DIR") or paths.get("data_dir") or DEFAULT_DATA_DIR
    paths["home"] = env.get("FOREWARN_HOME") or paths.get("home") or DEFAULT_HOME
    raw["paths"] = paths
    if env.get("FOREWARN_MLFLOW_TRACKING_URI"):
        raw.setdefault("mlflow", {})["tracking_uri"] = env["FOREWARN_MLFLOW_TRACKING_URI"]
    raw.setdefault("profile", name)
    if overrides:
        raw = _merge(raw, overrides)
    raw = _with_policy(raw, Path(profile).parent if profile is not None else CONFIG_DIR)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {_message(err['msg'])}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings ({name}, {where}): {problems}") from exc


def _message(msg: str) -> str:
    """Pydantic's message without its 'Value error, ' prefix (the rest is ours)."""
    return msg.removeprefix("Value error, ")


def tool_environment(settings: Settings) -> dict[str, str]:
    """Environment the tools (Prefect, MLflow, meteostat) need so that all their state goes
    under the Forewarn home and nothing is sent anywhere. Applied by the CLI with
    ``os.environ.setdefault`` before those tools are imported, so the caller's values win."""
    home = settings.paths.home.resolve()
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        "MS_CACHE_ENABLE": "false",
        "MS_NETWORK_MAX_RETRIES": "0" if settings.weather.mode == "local" else "3",
    }
