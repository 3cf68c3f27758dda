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
from rich.markup import escape
from typer import _click  # the click typer ships and builds its commands with
from typer.core import TyperGroup

from configs.settings import Settings, SettingsError, load_settings, tool_environment
from flows.progress import console_handlers, progress_bars, wants_bars
from serving.privacy import mask_handlers


def _reflow(text: str | None) -> str | None:
    """Help text with the source's line wrapping undone inside each paragraph (typer's rich
    mode keeps single line breaks, which break lines mid-sentence on a narrow terminal);
    paragraphs whose lines are indented (lists, examples) stay as written."""
    if not text:
        return text
    paragraphs = []
    for paragraph in text.strip("\n").split("\n\n"):
        lines = paragraph.splitlines()
        indented = any(line[:1].isspace() for line in lines[1:])
        paragraphs.append(paragraph if indented else " ".join(ln.strip() for ln in lines))
    return "\n\n".join(paragraphs)


class _Commands(TyperGroup):
    """The forewarn command group: every command's help and epilog reflowed for the terminal
    (commands added later get the same treatment)."""

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            command.help = _reflow(command.help)
            command.epilog = _reflow(command.epilog)
        return command


def examples(*commands: str) -> str:
    """A command's epilog: "Examples" and one command line per line (rich markup escaped,
    so "[--feedback replies.csv]" prints as written)."""
    return "[b]Examples[/b]\n" + "\n".join(f"  {escape(c)}" for c in commands)


app = typer.Typer(
    name="forewarn",
    help="Forecast where the grid will lose power and warn the customers there before it does.",
    epilog=examples("forewarn nightly --config configs/kentucky.yaml --as-of 2023-07-01T00:00:00Z",
                    "forewarn COMMAND --help   (options and examples of one command)"),
    cls=_Commands,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="profile YAML, e.g. "
                                         "configs/kentucky.yaml (merged over configs/base.yaml)")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="no progress bars, and only warnings and errors on the console (the "
    "log file under <home>/logs has everything); bars show only when stderr is a terminal")]


class _Failure(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(exc)).strip()


def _setup(config: Path, need_data: bool = True, quiet: bool = False) -> Settings:
    try:
        cfg = load_settings(config)
    except SettingsError as exc:
        raise _Failure(_one_line(exc)) from exc
    if need_data:
        _check_inputs(cfg, config)
    cfg.paths.home.mkdir(parents=True, exist_ok=True)
    for key, value in tool_environment(cfg).items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_to_file(cfg.paths.home)
    _mask_contacts_in_logs()
    if quiet:
        for handler in console_handlers():
            handler.setLevel(max(handler.level, logging.WARNING))
    for noisy in ("great_expectations", "great_expectations.data_context.types.base", "alembic",
                  "mlflow", "httpx", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return cfg


def log_to_file(home: Path) -> logging.FileHandler:
    """Log everything to <home>/logs/forewarn.log, tracebacks included, with contact details
    masked (serving.privacy); also the handler of ``forewarn.failures``. Returns the handler."""
    log_file = home / "logs" / "forewarn.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full = logging.FileHandler(log_file, encoding="utf-8")
    full.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    mask_handlers(full)
    logging.getLogger().handlers.insert(0, full)  # before the console strips tracebacks
    failures = logging.getLogger("forewarn.failures")
    failures.propagate = False
    failures.addHandler(full)
    return full


def _mask_contacts_in_logs() -> None:
    """Defence in depth: every handler the CLI's logs reach (console, file, Prefect's API
    handlers once Prefect is imported) masks e-mail addresses, phone numbers and WeChat ids."""
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "forewarn.failures"):
        mask_handlers(*logging.getLogger(name).handlers)


def _check_inputs(cfg: Settings, config: Path) -> None:
    if not cfg.paths.data_dir.is_dir():
        raise _Failure(f"data directory not found: {cfg.paths.data_dir} (set FOREWARN_DATA_DIR)")
    missing = [f"{name} = {path}" for name, path in cfg.input_files().items() if not path.is_file()]
    if missing:
        raise _Failure(f"input file not found: {', '.join(missing)} (data directory "
                       f"{cfg.paths.data_dir}; set FOREWARN_DATA_DIR or fix the profile {config})")


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
    _mask_contacts_in_logs()
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


@app.command(epilog=examples(
    "forewarn nightly --config configs/kentucky.yaml --as-of 2023-07-01T00:00:00Z",
    "forewarn nightly   (the latest as-of with history and weather for the whole horizon)",
    "forewarn nightly --as-of 2023-03-02T12:00:00Z --out /tmp/runs --quiet"))
def nightly(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="issue time, UTC on the hour, e.g. 2023-07-01T00:00:00Z; default: the "
        "latest time with outage history and weather for the whole horizon")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="parent folder of the run directory (default <home>/runs)")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the nightly job: check, train, score 72 h, write windows and advisories.

    Reads and checks the sources, trains and evaluates the model against climatology on a
    later period, registers it in MLflow, scores the horizon, and writes the run directory.
    On a terminal a progress bar advances stage by stage.
    """
    try:
        cfg = _setup(config, quiet=quiet)
        if as_of is not None:
            as_of = _check_as_of(as_of)
        from flows.nightly import nightly as nightly_flow

        _tracebacks_to_file_only()
        with progress_bars(wants_bars(quiet)):
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
        f"({m['training'].get('areas_scored_by_own_model', 0)} areas scored by their own "
        f"model, the rest pooled); champion {m['model']['name']} v{m['model']['version']}",
        f"  gate: {'; '.join(m['model']['gate']['reasons'])}",
        "  test period (later than training), the champion:",
        f"    {'':<14}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}",
        f"    {'model':<14}{o['model_roc_auc']:>9.3f}{o['model_pr_auc']:>9.3f}"
        f"{o['model_brier']:>9.4f}",
        f"    {'climatology':<14}{o['climatology_roc_auc']:>9.3f}{o['climatology_pr_auc']:>9.3f}"
        f"{o['climatology_brier']:>9.4f}",
        f"    Brier skill vs climatology {o['brier_skill']:+.3f}; prevalence "
        f"{o['prevalence']:.4f}",
        f"  risk windows {m['windows']}; advisories {m['advisories']['decided']} "
        f"({m['advisories']['inserted']} new in the outbox, "
        f"{m['advisories']['duplicates']} already there; by kind "
        f"{m['advisories'].get('by_kind', {})}; "
        f"{m['advisories'].get('withheld_control_group', 0)} withheld for the control group)",
        f"  quarantined rows {m['quarantined_rows']}",
        f"outputs: {m['run_dir']}",
    ]
    if m.get("subscribers_notified"):
        lines.insert(-1, "  run-published event: " + ", ".join(
            f"{d['subscriber']} {d['outcome']}" for d in m["subscribers_notified"]))
    fc = m.get("forecast", {})
    if fc.get("status") == "used":
        lines.insert(1, f"  forecast issued {fc['issue_ts']} ({fc['age_h']:g} h before the "
                        f"as-of), {', '.join(Path(f).name for f in fc['files'])}")
    elif fc.get("status") == "refused":
        lines.insert(1, f"  forecast refused ({fc['refused']}), scored with replayed weather: "
                        f"{fc['reason']}")
    typer.echo("\n".join(lines))


@app.command(epilog=examples(
    "forewarn backtest --config configs/kentucky.yaml --start 2023-01-01 --end 2024-01-01",
    "forewarn backtest --start 2022-01-01 --end 2023-01-01 --out /tmp/backtest-2022"))
def backtest(
    start: Annotated[str, typer.Option("--start", help="first day of the first fold, UTC")],
    end: Annotated[str, typer.Option("--end", help="end of the last fold (exclusive), UTC")],
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    out: Annotated[Path | None, typer.Option(
        "--out", help="folder for metrics.json and the plots (default <home>/backtests/...)")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Rolling-origin backtest: train before each fold, predict it, score beside baselines.

    Folds of backtest.fold_days days cover [start, end); each trains on everything from
    model.train_start to its own start. Writes metrics.json (per fold and overall, by lead
    time and season, daily ranking, big days, reliability) and plots, and logs a parent
    MLflow run with one nested run per fold. On a terminal a progress bar advances fold by
    fold.
    """
    try:
        cfg = _setup(config, quiet=quiet)
        lo, hi = _utc_day(start, "--start"), _utc_day(end, "--end")
        from flows.backtest import backtest as backtest_flow

        _tracebacks_to_file_only()
        target = out or cfg.paths.home / "backtests" / f"{lo:%Y%m%d}-{hi:%Y%m%d}"
        with progress_bars(wants_bars(quiet)):
            result = backtest_flow(cfg, lo, hi, target)
    except _known_errors() as exc:
        _fail(exc)
        return
    overall = result["metrics"]["overall"]
    typer.echo(f"backtest {lo:%Y-%m-%d}..{hi:%Y-%m-%d}: {len(result['metrics']['folds'])} "
               f"folds, {int(overall['n']):,} area-hours, prevalence {overall['prevalence']:.4f}")
    typer.echo(f"  {'':12} {'ROC-AUC':>8} {'PR-AUC':>8} {'Brier':>8} {'BSS':>7} {'ECE':>7}")
    for name in ("model", "climatology", "recent_rate", "raw_pooled", "raw_per_area",
                 "raw_hybrid", "cal_none", "cal_platt", "cal_isotonic"):
        m = overall[name]
        typer.echo(f"  {name:12} {m['roc_auc']:8.3f} {m['pr_auc']:8.3f} {m['brier']:8.4f} "
                   f"{m['brier_skill_vs_climatology']:+7.3f} {m['ece']:7.4f}")
    per_area = result["metrics"]["per_area"]
    typer.echo(f"  lowest Brier: area rule {overall['area_mode_winner']} (before calibration), "
               f"calibration {overall['calibration_winner']}; the model beats climatology in "
               f"{sum(a['beats_climatology'] for a in per_area.values()):.0f} of "
               f"{len(per_area)} areas")
    ranking = result["metrics"]["ranking"]
    big = result["metrics"]["big_days"]["model"]
    typer.echo(f"  daily ranking: {ranking['model']['top25_share']:.1%} of areas with an "
               f"outage in the top 25 % (climatology {ranking['climatology']['top25_share']:.1%}"
               f", perfect foresight {ranking['oracle']['top25_share']:.1%})")
    typer.echo(f"  big days: {big['hits']:.0f} of {big['events']:.0f} forecast, POD "
               f"{big['pod']:.2f}, FAR {big['far']:.2f}, CSI {big['csi']:.2f}, mean lead "
               f"{big['lead_time_h_mean']:.0f} h; MLflow run {result['mlflow_run_id']}")
    typer.echo(f"outputs: {result['out']}")


def _utc_day(text: str, flag: str) -> Any:
    import pandas as pd

    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise _Failure(f"{flag} {text!r} is not a date; use e.g. 2023-01-01") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@app.command(epilog=examples(
    "forewarn advise --run .forewarn/runs/<run_id>",
    "forewarn advise --run .forewarn/runs/<run_id> --feedback replies.csv"))
def advise(
    run: Annotated[Path, typer.Option("--run", help="a finished run directory written by "
                                      "`forewarn nightly` (holds run.json)")],
    feedback: Annotated[Path | None, typer.Option(
        "--feedback", help="customer replies (CSV or JSONL); those who replied STOP get "
        "nothing")] = None,
    config: ConfigOpt = Path("configs/kentucky.yaml"),
) -> None:
    """Decide and enqueue the advisories of a finished run; safe to repeat.

    Applies the advisory policy (configs/policy.yaml) to the run's risk windows, the customer
    registry and what the outbox already holds, and enqueues the new messages. A second call
    for the same run enqueues nothing.
    """
    try:
        cfg = _load(config)
        from flows.advise import advise_run

        summary = advise_run(cfg, run, feedback)
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(summary, indent=2))


@app.command(epilog=examples(
    "forewarn report --run .forewarn/runs/<run_id>",
    "forewarn report --run .forewarn/runs/<run_id> --feedback replies.csv"))
def report(
    run: Annotated[Path, typer.Option("--run", help="a finished run directory")],
    feedback: Annotated[Path | None, typer.Option(
        "--feedback", help="customer replies, CSV or JSONL (customer_id, received_utc, "
        "type or text)")] = None,
    config: ConfigOpt = Path("configs/kentucky.yaml"),
) -> None:
    """Report how a run's advisories did: precision, lead time, reach, feedback.

    Joins the run's advisories with the outages that followed (outage history), customer
    feedback, delivery states in the outbox and the control group; writes
    advice_report.json into the run directory and prints it.
    """
    try:
        cfg = _setup(config)
        from flows.report import report_run

        result = report_run(cfg, run, feedback)
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "per_event"}, indent=2))


@app.command("report-html", epilog=examples(
    "forewarn report-html --run .forewarn/runs/<run_id>",
    "xdg-open .forewarn/runs/<run_id>/report.html"))
def report_html(
    run: Annotated[Path, typer.Option("--run", help="a finished run directory (with run.json)")],
    config: ConfigOpt = Path("configs/kentucky.yaml"),
) -> None:
    """Rebuild a run's operator views: report.html and its Great Expectations Data Docs.

    report.html (one file, opens offline) shows the run's facts and contract results, a map of
    the areas coloured by peak risk, the top windows, territory risk per hour and the
    advisory counts. Data Docs are rebuilt under data_docs/ from contract_validations.json
    (runs made before it existed get the report alone). The nightly run builds both.
    """
    try:
        cfg = _load(config)
        if not (run / "run.json").is_file():
            raise _Failure(f"{run} is not a finished run directory (no run.json)")
        from serving.report_html import publish_run_views

        views = publish_run_views(run, cfg.data_path(cfg.areas.counties_file))
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(f"report: {run / views.report}")
    typer.echo(f"data docs: {run / views.data_docs}" if views.data_docs else
               "data docs: none (the run has no contract_validations.json)")
    typer.echo(f"built in {views.seconds:.1f} s")


def _load(config: Path) -> Settings:
    """Settings without the input-data checks (advise reads a run directory, not sources)."""
    try:
        cfg = load_settings(config)
    except SettingsError as exc:
        raise _Failure(_one_line(exc)) from exc
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return cfg


@app.command("weather-mirror", epilog=examples(
    "forewarn weather-mirror --config configs/kentucky.yaml --start-year 2019",
    "forewarn weather-mirror --start-year 2022 --end-year 2023 --quiet"))
def weather_mirror(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    start_year: Annotated[int, typer.Option(help="first year to convert")] = 1900,
    end_year: Annotated[int, typer.Option(help="last year to convert")] = 2100,
    quiet: QuietOpt = False,
) -> None:
    """Convert the NOAA daily station file into a local meteostat mirror.

    Writes meteostat's own layout, <home>/meteostat/daily/{year}/{station}.csv.gz, so that
    meteostat reads it with no network. On a terminal a progress bar advances year by year.
    """
    try:
        cfg = _setup(config, quiet=quiet)
        from features.weather import convert_noaa_daily

        with progress_bars(wants_bars(quiet)):
            files, result = convert_noaa_daily(
                cfg.data_path(cfg.weather.noaa_daily_file), cfg.mirror_dir,
                cfg.weather.station, years=range(start_year, end_year + 1),
                quarantine_dir=cfg.paths.quarantine_dir,
                max_quarantine_share=cfg.weather.max_quarantine_share,
            )
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(json.dumps({"files": len(files), "mirror": str(cfg.mirror_dir),
                           "contract": result.to_dict()}, indent=2, default=str))


@app.command(epilog=examples(
    "forewarn dispatch --config configs/kentucky.yaml --dry-run",
    "forewarn dispatch --limit 500",
    "FOREWARN_TWILIO_ACCOUNT_SID=... FOREWARN_TWILIO_AUTH_TOKEN=... forewarn dispatch --quiet"))
def dispatch(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="show what is due (counts by channel and state); send nothing, "
        "change nothing")] = False,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="send at most this many outbox rows in this run")] = None,
    customers: Annotated[Path | None, typer.Option(
        "--customers", help="customer registry (Parquet) for the contact book; default "
        "<home>/customers.parquet, written by `forewarn nightly`")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Send what is due in the outbox; safe to repeat, also beside another dispatcher.

    Claims due rows, sends each on the customer's channel (falling back along the chain,
    escalating critical customers until they acknowledge), and records the outcome. Provider
    endpoints and rate limits come from the profile; credentials from FOREWARN_* variables.
    On a terminal a progress bar counts the messages handled of those due.
    """
    try:
        if limit is not None and limit < 1:
            raise _Failure(f"--limit must be at least 1, got {limit}")
        cfg = _setup(config, need_data=False, quiet=quiet)
        from configs.settings import channel_secrets
        from serving.channels import build_channels
        from serving.contacts import RegistryContactBook
        from serving.dispatch import Dispatcher, due_summary, state_counts

        book = RegistryContactBook.from_file(customers or cfg.paths.customers_file)
        url = cfg.paths.outbox_url
        if dry_run:
            due = due_summary(url, book, cfg.dispatch, limit=limit)
            lines = [f"due now: {sum(due.values())} (dry run: nothing sent, nothing changed)"]
            lines += [f"  {channel:<10}{state:<9}{n:>8}" for (channel, state), n in
                      sorted(due.items())]
            typer.echo("\n".join(lines))
            return
        channels, unavailable = build_channels(cfg.channels, channel_secrets())
        for name, reason in sorted(unavailable.items()):
            logging.getLogger("forewarn.dispatch").info("channel %s unavailable: %s", name,
                                                        reason)
        dispatcher = Dispatcher(url, cfg.dispatch, channels, book, cfg.channels)
        try:
            with progress_bars(wants_bars(quiet)):
                report = dispatcher.run(limit=limit)
        finally:
            dispatcher.close()
            for channel in channels.values():
                channel.close()
        states = state_counts(url)
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(json.dumps({"run": report.to_dict(), "outbox": dict(sorted(states.items())),
                           "unavailable_channels": sorted(unavailable)}, indent=2))


@app.command(epilog=examples(
    "FOREWARN_API_TOKENS=notifier:$(openssl rand -hex 24):read forewarn serve --port 8000",
    "forewarn serve --host 0.0.0.0 --port 8080   (behind a proxy only)"))
def serve(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    host: Annotated[str, typer.Option(help="interface to listen on (keep 127.0.0.1 behind a "
                                      "proxy)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Start the API for downstream notifiers (FastAPI under uvicorn).

    Serves the runs under <home>/runs and writes feedback and acknowledgements to the outbox
    database. Bearer tokens come from FOREWARN_API_TOKENS="name:token:read+write,...".
    """
    try:
        cfg = _setup(config, need_data=False)
        from configs.settings import api_tokens
        from serving.api import create_app

        tokens = api_tokens()
        if not tokens:
            logging.getLogger("forewarn.api").warning(
                "FOREWARN_API_TOKENS is empty: every route but /health answers 401")
        import uvicorn

        api = create_app(cfg, tokens=tokens)
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(f"Forewarn API on http://{host}:{port} (docs at /docs, runs {cfg.paths.runs_dir})")
    uvicorn.run(api, host=host, port=port, log_level="info", access_log=True)


PREFECT_PORT = 4200


def _prefect_server_home(cfg: Settings) -> Path:
    return (cfg.paths.home / "prefect-server").resolve()


@app.command("prefect-server", epilog=examples(
    "forewarn prefect-server --config configs/kentucky.yaml --port 4200"))
def prefect_server(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = PREFECT_PORT,
) -> None:
    """Start a local Prefect server (API, scheduler, UI) for the scheduled deployments.

    Its database lives under <home>/prefect-server (PREFECT_HOME). Schedules need this real
    server: the temporary one `forewarn nightly` starts cannot schedule runs. Leave it
    running and, in another shell, export the API URL it prints and run `forewarn deploy`.
    """
    try:
        cfg = _setup(config, need_data=False)
    except _known_errors() as exc:
        _fail(exc)
        return
    home = _prefect_server_home(cfg)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": ""}
    typer.echo(f"Prefect server on http://127.0.0.1:{port} (UI; database under {home}). In "
               f"another shell:\n  export PREFECT_API_URL=http://127.0.0.1:{port}/api")
    os.execvpe(sys.executable, [sys.executable, "-m", "prefect", "server", "start", "--host",
                                "127.0.0.1", "--port", str(port)], env)


def _prefect_api_url() -> str | None:
    """The Prefect API the deployments would register with (PREFECT_API_URL, from the
    environment or the Prefect profile); None when only a temporary server would be used."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


@app.command(epilog=examples(
    "forewarn prefect-server &",
    "export PREFECT_API_URL=http://127.0.0.1:4200/api",
    "forewarn deploy --config configs/kentucky.yaml"))
def deploy(config: ConfigOpt = Path("configs/kentucky.yaml")) -> None:
    """Serve the scheduled deployments: nightly, weekly retrain and hourly refresh.

    Registers the three deployments (cron strings and time zone from the profile's
    `deployments` section) with the Prefect server at PREFECT_API_URL and runs their
    scheduled runs in this process until stopped (Ctrl-C pauses the schedules). Needs a
    running server: start one with `forewarn prefect-server`.
    """
    try:
        cfg = _setup(config)
        # runs start in child processes: pin the paths the settings resolved here
        os.environ.setdefault("FOREWARN_HOME", str(cfg.paths.home.resolve()))
        os.environ.setdefault("FOREWARN_DATA_DIR", str(cfg.paths.data_dir.resolve()))
        url = _prefect_api_url()
        if url is None:
            raise _Failure("no Prefect server configured: schedules need one; start it with "
                           "`forewarn prefect-server`, then export "
                           f"PREFECT_API_URL=http://127.0.0.1:{PREFECT_PORT}/api")
        from prefect import serve as prefect_serve

        from flows.deployments import build_deployments

        deployments = build_deployments(cfg, config)
    except _known_errors() as exc:
        _fail(exc)
        return
    d = cfg.deployments
    typer.echo(f"serving {', '.join(x.name for x in deployments)} against {url}: nightly "
               f"{d.nightly_cron!r}, weekly retrain {d.retrain_cron!r}, hourly refresh "
               f"{d.refresh_cron!r} ({d.timezone}); Ctrl-C stops")
    prefect_serve(*deployments)


@app.command("notify-run", epilog=examples(
    "forewarn notify-run --run .forewarn/runs/20230701T0000Z-20261203T171500Z-a1b2c3"))
def notify_run(
    run: Annotated[Path, typer.Option("--run", help="a finished run directory (with run.json)")],
    config: ConfigOpt = Path("configs/kentucky.yaml"),
) -> None:
    """Send the signed run-published CloudEvent to every subscriber in api.subscribers.

    Exit code 1 when a delivery failed for good.
    """
    try:
        cfg = _setup(config, need_data=False)
        if not (run / "run.json").is_file():
            raise _Failure(f"{run} is not a finished run directory (no run.json)")
        from serving.run_events import notify_subscribers

        deliveries = notify_subscribers(run, cfg)
    except _known_errors() as exc:
        _fail(exc)
        return
    typer.echo(json.dumps([d.__dict__ for d in deliveries], indent=2))
    if any(d.outcome == "failed" for d in deliveries):
        raise typer.Exit(code=1)


@app.command(epilog=examples(
    "forewarn ui --port 5000   (then open http://127.0.0.1:5000)"))
def ui(
    config: ConfigOpt = Path("configs/kentucky.yaml"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the product's tracking store."""
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
