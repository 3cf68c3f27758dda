"""The nightly Prefect flow: load, check, build, train, score, publish, advise.

The flow body only sequences tasks; each task wraps one function of ``features``, ``models``
or ``serving``. Reading sources, writing outputs and the registry get retries; pure
transforms never do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import pandas as pd
from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from configs.settings import Settings
from features.areas import read_counties
from features.contracts import ContractResult
from features.customers import generate_registry, read_customer_counts_checked
from features.dataset import Dataset, build_dataset, weather_span
from features.forecast_weather import ScoringWeather, scoring_weather
from features.outages import OutageHistory, load_outage_history
from features.restoration import GridState, UtilityUpdates, read_lgeku_changelog
from features.telemetry import run_telemetry
from features.weather import convert_noaa_daily, load_daily_weather
from features.weather_hourly import driver_features, load_hourly_weather
from flows.training import fit_area_models, pooled_model
from models.experiment import (
    TrainingSet,
    evaluate_on_test_period,
    evaluate_training,
    finish_training,
    training_set,
)
from models.explain import Explanations
from models.gate import GateDecision, decide_promotion, missing_features, trained_into
from models.registry import (
    CHALLENGER,
    alias_version,
    load_champion,
    load_version,
    log_and_register,
    record_gate,
)
from models.restoration import (
    DurationModel,
    comparison_markdown,
    estimate_open_outages,
    train_restoration_model,
    window_durations,
)
from models.scoring import resolve_issue_time, score_horizon
from models.train import RiskModel, area_params
from models.windows import build_windows
from serving.advisories import control_records, decide_advisories, restorations_from_events
from serving.contacts import save_registry
from serving.outbox import enqueue, read_history
from serving.publish import (
    RunId,
    input_record,
    sha256_file,
    write_advice_inputs,
    write_manifest,
    write_outputs,
)
from serving.report_html import RunViews, publish_run_views

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
progress = logging.getLogger("forewarn.progress.nightly")  # see flows/progress.py

# the flow's stages in the order it runs them (progress: "stage 8 of 14")
STAGES = ("load_outages", "load_weather", "load_reference", "telemetry", "build_dataset",
          "forecast", "weather_drivers", "train_and_evaluate", "register", "gate",
          "restoration_model", "score", "advise", "publish", "report")

WEATHER_NOTES = {
    "replay": "no forecast used: observed daily weather of the target days stands in for the "
              "forecast (replay); skill with real forecasts will be lower",
    "forecast": "the horizon's days come from the forecast named under 'forecast' (daily "
                "aggregates in the station's local days); the 3 days before the as-of day "
                "are observed at the station",
}


# ------------------------------------------------------------------ tasks (one function each)
# NO_CACHE: a nightly run must recompute from today's inputs, and hashing multi-million-row
# frames for cache keys would cost more than it saves. Retries are for I/O failures only: a
# broken file or a bug fails the same way every time.


def io_failure(task: object, task_run: object, state: State) -> bool:
    """Prefect retry condition: retry only when the task failed on I/O (disk, network,
    database), never on bad data (ContractError) or a bug."""
    from sqlalchemy.exc import OperationalError

    try:
        state.result()
    except FileNotFoundError:
        return False
    except (OSError, OperationalError):
        return True
    except Exception:  # noqa: BLE001 - any other failure is not worth a retry
        return False
    return False


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def load_outages(cfg: Settings) -> OutageHistory:
    return load_outage_history(cfg.outages, cfg.paths.data_dir, cfg.paths.quarantine_dir)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def load_weather(cfg: Settings, start: date, end: date
                 ) -> tuple[pd.DataFrame, ContractResult | None]:
    contract = None
    if cfg.weather.mode == "local":
        _, contract = convert_noaa_daily(
            cfg.data_path(cfg.weather.noaa_daily_file), cfg.mirror_dir, cfg.weather.station,
            years=range(start.year, end.year + 1), quarantine_dir=cfg.paths.quarantine_dir,
            max_quarantine_share=cfg.weather.max_quarantine_share,
        )
    return load_daily_weather(cfg.weather, cfg.mirror_dir, start, end), contract


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def load_reference(cfg: Settings) -> tuple[pd.DataFrame, pd.DataFrame, ContractResult]:
    counts, result = read_customer_counts_checked(
        cfg.data_path(cfg.customers.counts_file), cfg.paths.quarantine_dir)
    counties = read_counties(cfg.data_path(cfg.areas.counties_file))
    return counts, counties, result


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def telemetry_summary(cfg: Settings) -> dict[str, Any]:
    if not (cfg.telemetry.enabled and cfg.telemetry.assets):
        return {"enabled": False}
    return run_telemetry(cfg.telemetry, cfg.paths.data_dir, cfg.paths.quarantine_dir,
                         cfg.paths.home / "telemetry" / "oil_model.pkl").summary


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def weather_drivers(cfg: Settings, weather: pd.DataFrame, issue: pd.Timestamp) -> dict[str, Any]:
    """Which outage-driver features the weather at hand supports over the horizon (hourly
    meteostat, daily only, or none) and their highest values: the run's model card. The risk
    model does not use them yet; the record says what a model could use here."""
    hours = pd.date_range(issue + pd.Timedelta(hours=1), periods=cfg.model.horizon_h, freq="h",
                          name="ts")
    try:
        hourly = load_hourly_weather(cfg.weather, cfg.mirror_dir,
                                     hours[0] - pd.Timedelta(hours=72), hours[-1])
    except OSError as exc:  # an unreachable endpoint degrades to daily, as a mirror gap does
        log.warning("hourly weather unavailable (%s); drivers from daily weather only", exc)
        hourly = None
    frame, sources = driver_features(hours, cfg.drivers, cfg.weather.station.timezone,
                                     hourly=hourly, daily=weather)
    peaks = {name: (None if frame[name].isna().all() else round(float(frame[name].max()), 2))
             for name in sources}
    return {"sources": sources, "horizon_max": peaks, "in_model": False,
            "available": sorted(n for n, s in sources.items() if s != "unavailable"),
            "unavailable": sorted(n for n, s in sources.items() if s == "unavailable")}


@task(cache_policy=NO_CACHE)
def assemble(history: OutageHistory, counties: pd.DataFrame, counts: pd.DataFrame,
             weather: pd.DataFrame, cfg: Settings) -> Dataset:
    return build_dataset(history, counties, counts, weather, cfg)


@task(cache_policy=NO_CACHE)
def prepare_training(data: Dataset, cfg: Settings) -> TrainingSet:
    return training_set(data, cfg.features, cfg.model)


@task(cache_policy=NO_CACHE)
def evaluate(prepared: TrainingSet, pooled: Any, fitted: dict[str, str], data: Dataset,
             cfg: Settings, train_seconds: float) -> tuple[RiskModel, dict]:
    model, test_rows, seconds = finish_training(prepared, pooled, fitted, data, cfg.features,
                                                cfg.model, train_seconds)
    return model, evaluate_training(model, test_rows, seconds)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def register(model: RiskModel, metrics: dict, data: Dataset, cfg: Settings) -> dict[str, str]:
    return log_and_register(
        model,
        tracking_uri=cfg.tracking_uri,
        experiment=cfg.mlflow.experiment,
        model_name=cfg.mlflow.model_name,
        artifact_location=cfg.artifact_location,
        params={"profile": cfg.profile, "area_kind": cfg.areas.kind, "areas": len(data.areas),
                "features": ",".join(model.feature_names), **model.info,
                **{f"lgbm_{k}": v for k, v in cfg.model.lgbm_params.items()},
                "min_positive_hours": cfg.model.min_positive_hours,
                "horizon_h": cfg.model.horizon_h, "weather": "daily station, replayed"},
        metrics={"overall": metrics["overall"], "by_lead": metrics["by_lead"]},
        artifacts={"metrics.json": metrics, "dataset.json": data.summary,
                   "per_area_decisions.json": model.info.get("per_area_decisions", {})},
        tags={"run_name": f"{cfg.profile}-train-to-{cfg.model.train_end:%Y-%m-%d}",
              "profile": cfg.profile, "test_period": f"{cfg.model.test_start:%Y-%m-%d}.."
              f"{cfg.model.test_end:%Y-%m-%d}"},
        alias=CHALLENGER,
    )


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def incumbent(cfg: Settings) -> tuple[RiskModel | None, str | None]:
    """The registered champion before this run's challenger (None, None if there is none)."""
    version = alias_version(cfg.tracking_uri, cfg.mlflow.model_name)
    if version is None:
        return None, None
    return load_version(cfg.tracking_uri, cfg.mlflow.model_name, version), version


@task(cache_policy=NO_CACHE)
def gate(challenger: RiskModel, metrics: dict, registered: dict[str, str],
         champion_model: RiskModel | None, champion_version: str | None, data: Dataset,
         cfg: Settings) -> tuple[GateDecision, dict | None]:
    """Score the champion on the challenger's test rows and decide whether to promote.
    Returns the decision and the champion's metrics there (None if it cannot score)."""
    period = f"{cfg.model.test_start:%Y-%m-%d}..{cfg.model.test_end:%Y-%m-%d}"
    champion_metrics, unusable, incomparable = None, None, None
    if champion_model is not None:
        unusable = missing_features(champion_model.feature_names, set(challenger.feature_names))
        incomparable = trained_into(champion_model.info, pd.Timestamp(cfg.model.test_start))
        if unusable is None:
            champion_metrics = evaluate_on_test_period(champion_model, data, cfg.features,
                                                       cfg.model)
            champion_metrics["training"] = {k: v for k, v in champion_model.info.items()
                                            if k != "per_area_decisions"}
            champion_metrics["in_sample"] = incomparable is not None
    decision = decide_promotion(
        metrics["overall"], champion_metrics["overall"] if champion_metrics else None,
        cfg.gate, challenger_version=registered["model_version"],
        champion_version=champion_version, period=period, unusable=unusable,
        incomparable=incomparable)
    return decision, champion_metrics


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def apply_gate(decision: GateDecision, registered: dict[str, str], cfg: Settings) -> None:
    record_gate(cfg.tracking_uri, cfg.mlflow.model_name, registered["run_id"],
                decision.to_dict())


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def load_updates(cfg: Settings) -> tuple[UtilityUpdates | None, ContractResult | None]:
    if not cfg.restoration.changelog_file:
        return None, None
    return read_lgeku_changelog(
        cfg.data_path(cfg.restoration.changelog_file), cfg.paths.quarantine_dir,
        cfg.outages.max_quarantine_share)


@task(cache_policy=NO_CACHE)
def train_restoration(data: Dataset, updates: UtilityUpdates | None, weather: pd.DataFrame,
                      cfg: Settings) -> tuple[DurationModel, dict, GridState]:
    return train_restoration_model(data.events, updates, weather, data.areas, cfg.restoration,
                                   cfg.model, cfg.features, cfg.weather.station.timezone)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def register_restoration(model: DurationModel, report: dict, cfg: Settings) -> dict[str, str]:
    rc = cfg.restoration
    return log_and_register(
        model,
        tracking_uri=cfg.tracking_uri,
        experiment=rc.experiment,
        model_name=rc.model_name,
        artifact_location=f"{cfg.artifact_location}/{rc.experiment}",
        params={"profile": cfg.profile, "elapsed_h": list(rc.elapsed_h),
                "quantiles": "0.1,0.5,0.9 on log1p(hours)", "num_boost_round":
                rc.num_boost_round, "calibration_days": rc.calibration_days,
                "regime_open_edges": list(rc.regime_open_edges),
                "max_end_uncertainty_min": rc.max_end_uncertainty_min,
                **{f"lgbm_{k}": v for k, v in rc.lgbm_params.items()}},
        metrics={"first_report": report["headline_first_report"],
                 "comparison": report["comparison"]},
        artifacts={"restoration_report.json": report},
        text_artifacts={"comparison.md": comparison_markdown(report["comparison"])},
        tags={"run_name": f"{cfg.profile}-restoration-to-{cfg.model.train_end:%Y-%m-%d}",
              "profile": cfg.profile, "test_period": f"{cfg.model.test_start:%Y-%m-%d}.."
              f"{cfg.model.test_end:%Y-%m-%d}"},
        name="duration_model",
    )


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def restoration_champion(cfg: Settings) -> tuple[DurationModel, str]:
    return load_champion(cfg.tracking_uri, cfg.restoration.model_name)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def restoration_champion_version(cfg: Settings) -> str | None:
    """The registered restoration champion's version (None if there is none yet)."""
    return alias_version(cfg.tracking_uri, cfg.restoration.model_name)


@task(cache_policy=NO_CACHE)
def grid_state(data: Dataset, updates: UtilityUpdates | None) -> GridState:
    return GridState(data.events, updates)


@task(cache_policy=NO_CACHE)
def champion_metrics(model: RiskModel, data: Dataset, cfg: Settings) -> dict:
    """The champion's metrics on this profile's test period (what metrics.json describes
    when the run does not train)."""
    metrics = evaluate_on_test_period(model, data, cfg.features, cfg.model)
    metrics["training"] = {k: v for k, v in model.info.items() if k != "per_area_decisions"}
    return metrics


@task(cache_policy=NO_CACHE)
def add_durations(model: DurationModel, windows: pd.DataFrame, data: Dataset, state: GridState,
                  weather: pd.DataFrame, as_of: pd.Timestamp, cfg: Settings) -> pd.DataFrame:
    return window_durations(model, windows, data.areas, state, weather, as_of,
                            cfg.weather.station.timezone, cfg.features)


@task(cache_policy=NO_CACHE)
def open_outages(model: DurationModel, data: Dataset, state: GridState, weather: pd.DataFrame,
                 as_of: pd.Timestamp, updates: UtilityUpdates | None, cfg: Settings
                 ) -> pd.DataFrame:
    return estimate_open_outages(model, data.events, state, weather, as_of,
                                 cfg.weather.station.timezone, cfg.features, updates)


@task(cache_policy=NO_CACHE)
def issue_time(as_of: str | None, data: Dataset, weather: pd.DataFrame, cfg: Settings
               ) -> pd.Timestamp:
    return resolve_issue_time(as_of, data.panel, weather, cfg.model.horizon_h,
                              cfg.weather.station.timezone,
                              replay=cfg.forecast.use == "replay")


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def horizon_weather(data: Dataset, weather: pd.DataFrame, as_of: pd.Timestamp, cfg: Settings
                    ) -> ScoringWeather:
    return scoring_weather(cfg.forecast, cfg.paths.data_dir, data.areas, weather, as_of,
                           cfg.model.horizon_h, cfg.weather.station.timezone, cfg.features)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def champion(cfg: Settings) -> tuple[RiskModel, str]:
    return load_champion(cfg.tracking_uri, cfg.mlflow.model_name)


@task(cache_policy=NO_CACHE)
def score(model: RiskModel, data: Dataset, wx: ScoringWeather, as_of: pd.Timestamp,
          cfg: Settings) -> tuple:
    weather = data.weather_hourly if wx.hourly is None else wx.hourly
    return score_horizon(model, data.panel, data.areas, weather, as_of, cfg.features)


@task(cache_policy=NO_CACHE)
def windows_from(hourly: pd.DataFrame, drivers: Explanations, data: Dataset, cfg: Settings,
                 meta: dict[str, str]) -> pd.DataFrame:
    return build_windows(hourly, data.areas, drivers, cfg.windows, meta)


@task(cache_policy=NO_CACHE)
def customers_for(data: Dataset, cfg: Settings) -> pd.DataFrame:
    return generate_registry(data.areas, cfg.customers)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def save_contacts(customers: pd.DataFrame, cfg: Settings) -> Path:
    """The registry the dispatcher's contact book reads (contacts stay out of the outbox)."""
    return save_registry(customers, cfg.paths.customers_file)


@task(cache_policy=NO_CACHE)
def restored_outages(data: Dataset, as_of: pd.Timestamp, cfg: Settings) -> pd.DataFrame:
    return restorations_from_events(data.events, as_of, cfg.advisories.caps.run_interval_h)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def sent_history(cfg: Settings) -> pd.DataFrame:
    return read_history(cfg.paths.outbox_url)


@task(cache_policy=NO_CACHE)
def advise(windows: pd.DataFrame, customers: pd.DataFrame, history: pd.DataFrame,
           restorations: pd.DataFrame, outages: pd.DataFrame | None, as_of: pd.Timestamp,
           cfg: Settings) -> list:
    return decide_advisories(windows, customers, history, cfg.advisories, as_of,
                             restorations=restorations, outages=outages)


@task(cache_policy=NO_CACHE)
def withheld(windows: pd.DataFrame, customers: pd.DataFrame, history: pd.DataFrame,
             as_of: pd.Timestamp, cfg: Settings) -> pd.DataFrame:
    return control_records(windows, customers, history, cfg.advisories, as_of)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def enqueue_advisories(advisories: list, cfg: Settings) -> dict[str, int]:
    result = enqueue(cfg.paths.outbox_url, advisories)
    return {"inserted": result.inserted, "duplicates": result.duplicates}


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def publish(run_dir: Path, windows: pd.DataFrame, hourly: pd.DataFrame, advisories: list,
            metrics: dict, meta: dict[str, str], outages: pd.DataFrame | None
            ) -> dict[str, str]:
    return write_outputs(run_dir, windows=windows, hourly=hourly,
                         advisories=[a.to_dict() for a in advisories], metrics=metrics,
                         meta=meta, open_outages=outages)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def publish_advice_inputs(run_dir: Path, areas: pd.DataFrame, restorations: pd.DataFrame,
                          control: pd.DataFrame) -> dict[str, str]:
    return write_advice_inputs(run_dir, areas, restorations, control)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def report(run_dir: Path, contracts: list[ContractResult], manifest: dict[str, Any],
           cfg: Settings) -> RunViews:
    """Data Docs of the run's contract validations and report.html, before run.json."""
    records = [r for r in (c.validation_record() for c in contracts) if r is not None]
    return publish_run_views(run_dir, cfg.data_path(cfg.areas.counties_file),
                             validations=records, manifest=manifest)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=io_failure, cache_policy=NO_CACHE)
def finish(run_dir: Path, manifest: dict[str, Any]) -> Path:
    return write_manifest(run_dir, manifest)


@task(cache_policy=NO_CACHE)
def announce(run_dir: Path, cfg: Settings) -> list[dict[str, Any]]:
    """Tell the subscribed downstream systems (api.subscribers) that the run is published:
    one signed CloudEvent each, retried inside on transient errors. A subscriber that cannot
    be reached does not fail the published run; the outcome is logged and returned, and
    `forewarn notify-run` sends the same event (same id) again."""
    from serving.run_events import notify_subscribers

    return [asdict(d) for d in notify_subscribers(run_dir, cfg)]


# ------------------------------------------------------------------------------- the flow


def _by_kind(advisories: list) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for advisory in advisories:
        kinds[advisory.kind] = kinds.get(advisory.kind, 0) + 1
    return dict(sorted(kinds.items()))


def _io(cfg: Settings, io_task: Task[P, R]) -> Task[P, R]:
    """The I/O task with the configured per-attempt timeout (deployments.io_timeout_s); a
    timed-out attempt is a TimeoutError, an OSError, so ``io_failure`` retries it."""
    return io_task.with_options(timeout_seconds=cfg.deployments.io_timeout_s)


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time one stage into ``timings`` (seconds) and report it as progress."""
    if name in STAGES:
        step = STAGES.index(name)
        progress.info("stage %d of %d: %s", step + 1, len(STAGES), name.replace("_", " "),
                      extra={"step": step, "steps": len(STAGES)})
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 2)


@flow(name="forewarn-nightly", log_prints=False)
def nightly(cfg: Settings, as_of: str | None = None, out: Path | None = None,
            retrain: bool = True) -> dict[str, Any]:
    """One nightly run: ranked risk windows for the next horizon, advisories enqueued, and the
    output contract in a new run directory. With ``retrain`` (the default of ``forewarn
    nightly``) it trains a challenger, registers and gates it; without, it scores with the
    registered champions and trains only a model that has none yet. Returns the manifest."""
    logger = get_run_logger()
    timings: dict[str, float] = {}
    with _stage(timings, "load_outages"):
        history = _io(cfg, load_outages)(cfg)
    first, last = weather_span(history, cfg.model.horizon_h, cfg.weather.station.timezone)
    with _stage(timings, "load_weather"):
        weather, weather_contract = _io(cfg, load_weather)(cfg, first, last)
    with _stage(timings, "load_reference"):
        counts, counties, counts_contract = _io(cfg, load_reference)(cfg)
    with _stage(timings, "telemetry"):
        telemetry = _io(cfg, telemetry_summary)(cfg)
    with _stage(timings, "build_dataset"):
        data = assemble(history, counties, counts, weather, cfg)
    issue = cast(pd.Timestamp, issue_time(as_of, data, weather, cfg))
    with _stage(timings, "forecast"):  # before training: a refused forecast stops the run early
        wx = cast(ScoringWeather, _io(cfg, horizon_weather)(data, weather, issue, cfg))
    timings |= wx.timings_s
    with _stage(timings, "weather_drivers"):
        drivers_card = _io(cfg, weather_drivers)(cfg, weather, issue)
    previous, previous_version = _io(cfg, incumbent)(cfg)
    if retrain or previous is None:
        if not retrain:
            logger.info("no champion of %s registered yet: training one", cfg.mlflow.model_name)
        with _stage(timings, "train_and_evaluate"):
            prepared = cast(TrainingSet, prepare_training(data, cfg))
            with _stage(timings, "train_pooled"):  # here or lightgbm.dask (compute.pooled_backend)
                pooled = pooled_model(prepared.rows, prepared.feature_names, cfg.model,
                                      cfg.compute)
            with _stage(timings, "train_areas"):  # here or one task per area on Dask
                fitted = fit_area_models(prepared.jobs, area_params(prepared.feature_names,
                                                                    cfg.model),
                                         cfg.model, cfg.compute)
            model, metrics = evaluate(prepared, pooled, fitted, data, cfg,
                                      timings["train_pooled"] + timings["train_areas"])
        with _stage(timings, "register"):
            registered = _io(cfg, register)(model, metrics, data, cfg)
        with _stage(timings, "gate"):
            decision, previous_metrics = gate(model, metrics, registered, previous,
                                              previous_version, data, cfg)
            _io(cfg, apply_gate)(decision, registered, cfg)
            logger.info("model gate: %s", "; ".join(decision.reasons))
            scorer, version = _io(cfg, champion)(cfg)
        if not decision.promote and previous_metrics is not None:
            metrics = previous_metrics  # metrics.json describes the model in use
        model_record: dict[str, Any] = {
            "retrained": True, "mlflow_run_id": registered["run_id"],
            "challenger_version": registered["model_version"], "gate": decision.to_dict()}
    else:
        scorer, version = previous, cast(str, previous_version)
        with _stage(timings, "evaluate_champion"):
            metrics = champion_metrics(scorer, data, cfg)
        logger.info("not retrained: scoring with champion %s v%s", cfg.mlflow.model_name,
                    version)
        model_record = {"retrained": False, "mlflow_run_id": None, "challenger_version": None,
                        "gate": {"promote": False, "reasons": [
                            f"not retrained: champion v{version} scores this run"]}}
    restoration: dict[str, Any] = {"enabled": cfg.restoration.enabled}
    durations: DurationModel | None = None
    updates: UtilityUpdates | None = None
    updates_contract: ContractResult | None = None
    state: GridState | None = None
    if cfg.restoration.enabled:
        with _stage(timings, "restoration_model"):
            updates, updates_contract = _io(cfg, load_updates)(cfg)
            if retrain or _io(cfg, restoration_champion_version)(cfg) is None:
                duration_model, restoration_report, state = train_restoration(
                    data, updates, weather, cfg)
                duration_registered = _io(cfg, register_restoration)(
                    duration_model, restoration_report, cfg)
                restoration |= {"retrained": True,
                                "mlflow_run_id": duration_registered["run_id"],
                                "first_report": restoration_report["headline_first_report"],
                                "outages": restoration_report["outages"]}
            else:
                state = grid_state(data, updates)
                restoration |= {"retrained": False}
            durations, duration_version = _io(cfg, restoration_champion)(cfg)
        restoration |= {"model": cfg.restoration.model_name, "version": duration_version}
    run_id = RunId.new(issue).value
    meta = {"model_version": version, "run_id": run_id, "weather_source": wx.source,
            "forecast_issue_ts": str(wx.record.get("issue_ts", "")),
            "forecast_files": ";".join(p.name for p in wx.files) if wx.source == "forecast"
            else ""}
    with _stage(timings, "score"):
        hourly, drivers = score(scorer, data, wx, issue, cfg)
        windows = windows_from(hourly, drivers, data, cfg, meta)
        outages = None
        if durations is not None and state is not None:
            windows = add_durations(durations, windows, data, state, weather, issue, cfg)
            outages = open_outages(durations, data, state, weather, issue, updates, cfg)
            restoration["open_outages_at_as_of"] = len(cast(pd.DataFrame, outages))
    with _stage(timings, "advise"):
        customers = customers_for(data, cfg)
        _io(cfg, save_contacts)(customers, cfg)
        restorations = restored_outages(data, issue, cfg)
        sent = _io(cfg, sent_history)(cfg)
        advisories = advise(windows, customers, sent, restorations, outages, issue, cfg)
        control = withheld(windows, customers, sent, issue, cfg)
        outbox = _io(cfg, enqueue_advisories)(advisories, cfg)
    contracts = [*history.contracts, *(c for c in (weather_contract, counts_contract,
                                                   updates_contract) if c is not None)]
    if cfg.restoration.enabled and cfg.restoration.changelog_file:
        extra_inputs = [input_record(cfg.data_path(cfg.restoration.changelog_file))]
    else:
        extra_inputs = []
    run_dir = (out or cfg.paths.runs_dir) / run_id
    with _stage(timings, "publish"):
        checksums = _io(cfg, publish)(run_dir, windows, hourly, advisories,
                                      metrics | {"restoration": restoration}, meta, outages)
        checksums |= _io(cfg, publish_advice_inputs)(run_dir, data.areas, restorations, control)
    manifest = {
        "run_id": run_id,
        "as_of": issue.isoformat(),
        "created_utc": pd.Timestamp.now(tz="UTC").isoformat(),
        "profile": cfg.profile,
        "horizon_h": cfg.model.horizon_h,
        "weather_source": wx.source,
        "weather_note": WEATHER_NOTES[wx.source] + (
            f" (forecast refused: {wx.record['reason']})" if "reason" in wx.record else ""),
        "forecast": wx.record,
        "model": {"name": cfg.mlflow.model_name, "version": version, "alias": "champion",
                  "tracking_uri": cfg.tracking_uri, **model_record,
                  "trained_through": str(scorer.info.get("train_end", cfg.model.train_end)),
                  "as_of_inside_training": bool(issue < pd.Timestamp(cfg.model.train_end))},
        "inputs": [input_record(p) for p in history.source_files]
        + [input_record(cfg.data_path(cfg.weather.noaa_daily_file)),
           input_record(cfg.data_path(cfg.customers.counts_file)),
           input_record(cfg.data_path(cfg.areas.counties_file))] + extra_inputs
        + [input_record(p) for p in wx.files],
        "contracts": [c.to_dict() for c in contracts],
        "quarantined_rows": sum(c.rows_quarantined for c in contracts),
        "restoration": restoration,
        "telemetry": telemetry,
        "weather_drivers": drivers_card,
        "dataset": data.summary,
        "metrics_overall": metrics["overall"],
        "training": metrics["training"],
        # pandas has no type stubs here, so mypy sees Prefect's coroutine overload
        "windows": len(cast(pd.DataFrame, windows)),
        "customers": {"synthetic": True, "registry_size": len(cast(pd.DataFrame, customers))},
        "advisories": {"decided": len(advisories), **outbox,
                       "by_kind": _by_kind(advisories),
                       "withheld_control_group": len(cast(pd.DataFrame, control))},
        "outputs": checksums,
        "timings_s": timings,
    }
    with _stage(timings, "report"):  # the views are rebuilt by `forewarn report-html`
        views = cast(RunViews, _io(cfg, report)(run_dir, contracts, manifest, cfg))
    if views.validations:  # data; the HTML views are derived and rebuilt, so not checksummed
        manifest["outputs"] = checksums | {
            views.validations: sha256_file(run_dir / views.validations)}
    manifest["views"] = {"report": views.report, "data_docs": views.data_docs}
    _io(cfg, finish)(run_dir, manifest)
    progress.info("run written", extra={"step": len(STAGES), "steps": len(STAGES)})
    logger.info("run %s written to %s", run_id, run_dir)
    announced = announce(run_dir, cfg) if cfg.api.subscribers else []
    return manifest | {"run_dir": str(run_dir), "subscribers_notified": announced}
