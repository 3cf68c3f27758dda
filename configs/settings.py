"""The one reader of configuration: YAML profiles plus environment.

``load_settings(profile)`` merges ``configs/base.yaml`` with a profile file, applies the
environment (``FOREWARN_DATA_DIR``, ``FOREWARN_HOME``, ``FOREWARN_MLFLOW_TRACKING_URI``) and
returns one validated :class:`Settings`. Each function of the product receives only its own
section. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_DIR = Path(__file__).resolve().parent
BASE_FILE = CONFIG_DIR / "base.yaml"
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


class WindowSettings(_Section):
    """How hourly risk becomes risk windows."""

    min_probability: float = Field(0.2, ge=0, le=1)
    min_lift: float = Field(
        1.5, ge=0, description="risk must also be this many times the area's usual rate"
    )
    min_hours: int = Field(1, ge=1)
    max_gap_h: int = Field(1, ge=0, description="merge runs separated by at most this many hours")
    top_drivers: int = Field(3, ge=1)


class SegmentPolicy(_Section):
    threshold: float = Field(ge=0, le=1, description="minimum peak probability of a window")
    lead_hours: int = Field(24, ge=0, description="send at least this long before the window")


class AdvisorySettings(_Section):
    """First-cut advisory policy (issue 4 deepens it)."""

    hotline: str = "1-800-981-0600"
    hotline_zh: str | None = None
    max_areas: int = Field(10, ge=1, description="advise only the top-ranked windows' areas")
    segments: dict[str, SegmentPolicy]
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


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(None, description="default sqlite:///<home>/mlflow.db")
    experiment: str = "forewarn-risk"
    model_name: str = "forewarn-risk"


class Settings(_Section):
    profile: str
    paths: PathsSettings
    outages: OutageSettings
    weather: WeatherSettings
    forecast: ForecastSettings
    customers: CustomerSettings
    areas: AreaSettings
    features: FeatureSettings
    model: ModelSettings
    windows: WindowSettings
    advisories: AdvisorySettings
    restoration: RestorationSettings
    mlflow: MlflowSettings

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
    if profile is not None:
        path = Path(profile)
        raw = _merge(raw, _read_yaml(path))
        name = path.stem
    paths = dict(raw.get("paths") or {})
    paths["data_dir"] = env.get("FOREWARN_DATA_DIR") or paths.get("data_dir") or DEFAULT_DATA_DIR
    paths["home"] = env.get("FOREWARN_HOME") or paths.get("home") or DEFAULT_HOME
    raw["paths"] = paths
    if env.get("FOREWARN_MLFLOW_TRACKING_URI"):
        raw.setdefault("mlflow", {})["tracking_uri"] = env["FOREWARN_MLFLOW_TRACKING_URI"]
    raw.setdefault("profile", name)
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings ({name}): {problems}") from exc


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
