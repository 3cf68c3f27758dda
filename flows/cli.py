"""The ``forewarn`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from configs.settings import Settings, SettingsError, load_settings, tool_environment

app = typer.Typer(
    name="forewarn",
    help="Forecast where the grid will lose power and warn the customers there before it does.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="profile YAML, e.g. "
                                         "configs/kentucky.yaml (merged over configs/base.yaml)")]


class _Failure(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(exc)).strip()


def _setup(config: Path) -> Settings:
    try:
        cfg = load_settings(config)
    except SettingsError as exc:
        raise _Failure(_one_line(exc)) from exc
    if not cfg.paths.data_dir.is_dir():
        raise _Failure(f"data directory not found: {cfg.paths.data_dir} (set FOREWARN_DATA_DIR)")
    missing = [f"{name} = {path}" for name, path in cfg.input_files().items() if not path.is_file()]
    if missing:
        raise _Failure(f"input file not found: {', '.join(missing)} (data directory "
                       f"{cfg.paths.data_dir}; set FOREWARN_DATA_DIR or fix the profile {config})")
    cfg.paths.home.mkdir(parents=True, exist_ok=True)
    for key, value in tool_environment(cfg).items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_file = cfg.paths.home / "logs" / "forewarn.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full = logging.FileHandler(log_file, encoding="utf-8")
    full.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers.insert(0, full)  # before the console strips tracebacks
    failures = logging.getLogger("forewarn.failures")
    failures.propagate = False
    failures.addHandler(full)
    for noisy in ("great_expectations", "great_expectations.data_context.types.base", "alembic",
                  "mlflow", "httpx", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return cfg


class _NoTraceback(logging.Filter):
    """Console handlers show what failed in one line; the traceback goes to the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            record.exc_info = None
            record.exc_text = None
            record.msg = str(record.msg).split("\n", 1)[0]
        return True


def _tracebacks_to_file_only() -> None:
    """Prefect logs failed task and flow runs with their traceback on the console; keep the
    console to one line per failure (the full text is in <home>/logs/forewarn.log)."""
    strip = _NoTraceback()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                handler.addFilter(strip)


def _fail(exc: BaseException) -> None:
    # Prefect logs "Stopping temporary server" at exit; the reason should be the last line
    logging.getLogger("prefect").setLevel(logging.WARNING)
    failures = logging.getLogger("forewarn.failures")
    if failures.handlers:  # the log file exists once the settings were read
        failures.error("run failed", exc_info=exc)
    typer.echo(f"forewarn: error: {_one_line(exc)}", err=True)
    raise typer.Exit(code=2)


def _known_errors() -> tuple[type[BaseException], ...]:
    from features.contracts import ContractError

    return (_Failure, ContractError, SettingsError, ValueError, FileNotFoundError, KeyError)


@app.command()
def nightly(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="issue time, UTC on the hour, e.g. 2023-07-01T00:00:00Z; default: the "
        "latest time with outage history and weather for the whole horizon")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="parent folder of the run directory (default <home>/runs)")] = None,
) -> None:
    """Run the nightly job: check, train, score 72 h, write windows and advisories.

    Reads and checks the sources, trains and evaluates the model against climatology on a
    later period, registers it in MLflow, scores the horizon, and writes the run directory.

    Example: forewarn nightly --config configs/kentucky.yaml --as-of 2023-07-01T00:00:00Z
    """
    try:
        cfg = _setup(config)
        if as_of is not None:
            as_of = _check_as_of(as_of)
        from flows.nightly import nightly as nightly_flow

        _tracebacks_to_file_only()
        manifest = nightly_flow(cfg, as_of=as_of, out=out)
    except _known_errors() as exc:
        _fail(exc)
        return
    _report(manifest)


def _check_as_of(text: str) -> str:
    """The as-of time as ISO-8601 UTC, or a one-line error before any data is read."""
    import pandas as pd

    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise _Failure(f"--as-of {text!r} is not a time; use ISO-8601 like "
                       "2023-07-01T00:00:00Z") from exc
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.floor("h"):
        raise _Failure(f"--as-of {text!r} must be on the hour (UTC), e.g. {ts.floor('h'):%Y-%m-%dT%H:00:00Z}")
    return ts.isoformat()


def _report(m: dict[str, Any]) -> None:
    o = m["metrics_overall"]
    lines = [
        f"run {m['run_id']}  as-of {m['as_of']}  ({m['weather_source']} weather)",
        f"  areas {m['dataset']['areas']}; trained on {m['training']['rows_train']:,} rows "
        f"({m['training']['per_area_models']} per-area models + pooled); model version "
        f"{m['model']['version']}",
        "  test period (later than training):",
        f"    {'':<14}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}",
        f"    {'model':<14}{o['model_roc_auc']:>9.3f}{o['model_pr_auc']:>9.3f}"
        f"{o['model_brier']:>9.4f}",
        f"    {'climatology':<14}{o['climatology_roc_auc']:>9.3f}{o['climatology_pr_auc']:>9.3f}"
        f"{o['climatology_brier']:>9.4f}",
        f"    Brier skill vs climatology {o['brier_skill']:+.3f}; prevalence "
        f"{o['prevalence']:.4f}",
        f"  risk windows {m['windows']}; advisories {m['advisories']['decided']} "
        f"({m['advisories']['inserted']} new in the outbox, "
        f"{m['advisories']['duplicates']} already there)",
        f"  quarantined rows {m['quarantined_rows']}",
        f"outputs: {m['run_dir']}",
    ]
    fc = m.get("forecast", {})
    if fc.get("status") == "used":
        lines.insert(1, f"  forecast issued {fc['issue_ts']} ({fc['age_h']:g} h before the "
                        f"as-of), {', '.join(Path(f).name for f in fc['files'])}")
    elif fc.get("status") == "refused":
        lines.insert(1, f"  forecast refused ({fc['refused']}), scored with replayed weather: "
                        f"{fc['reason']}")
    typer.echo("\n".join(lines))


@app.command("weather-mirror")
def weather_mirror(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    start_year: Annotated[int, typer.Option(help="first year to convert")] = 1900,
    end_year: Annotated[int, typer.Option(help="last year to convert")] = 2100,
) -> None:
    """Convert the NOAA daily station file into a local meteostat mirror.

    Writes meteostat's own layout, <home>/meteostat/daily/{year}/{station}.csv.gz, so that
    meteostat reads it with no network.

    Example: forewarn weather-mirror --config configs/kentucky.yaml --start-year 2019
    """
    try:
        cfg = _setup(config)
        from features.weather import convert_noaa_daily

        files, result = convert_noaa_daily(
            cfg.data_path(cfg.weather.noaa_daily_file), cfg.mirror_dir, cfg.weather.station,
            years=range(start_year, end_year + 1), quarantine_dir=cfg.paths.quarantine_dir,
            max_quarantine_share=cfg.weather.max_quarantine_share,
        )
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(json.dumps({"files": len(files), "mirror": str(cfg.mirror_dir),
                           "contract": result.to_dict()}, indent=2, default=str))


@app.command()
def ui(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the product's tracking store.

    Example: forewarn ui --port 5000, then open http://127.0.0.1:5000
    """
    try:
        cfg = _setup(config)
    except _known_errors() as exc:
        _fail(exc)
        return
    store = cfg.tracking_uri
    artifacts = cfg.artifact_location
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} (store {store})")
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", store,
                               "--default-artifact-root", artifacts])


if __name__ == "__main__":
    app()
