"""The output contract for downstream notifiers (schema version in every file).

A run directory holds ``risk_windows.parquet`` and ``risk_windows.json`` (same rows),
``risk_hourly.parquet``, ``advisories.jsonl``, ``metrics.json``, ``outage_estimates.parquet``
(outages on the map at the as-of time with their estimated restoration) and the ``run.json``
manifest. A change to a column is a new ``SCHEMA_VERSION`` (1.1: windows carry
duration_p10_h / duration_p50_h / duration_p90_h, and outage_estimates.parquet; 1.2: windows
and hourly rows carry forecast_issue_ts and forecast_files, empty under replay).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = "1.2"
WINDOWS_PARQUET = "risk_windows.parquet"
WINDOWS_JSON = "risk_windows.json"
HOURLY_PARQUET = "risk_hourly.parquet"
ADVISORIES_JSONL = "advisories.jsonl"
METRICS_JSON = "metrics.json"
OUTAGES_PARQUET = "outage_estimates.parquet"
MANIFEST_JSON = "run.json"
AREAS_PARQUET = "areas.parquet"  # area_id, customers_served, timezone (+ area_name): the registry
RESTORATIONS_PARQUET = "restorations.parquet"  # outages restored just before the as-of
CONTROL_JSONL = "control_group.jsonl"  # risk messages withheld from the control group


@dataclass(frozen=True)
class RunId:
    """A run id that sorts by creation time and names its as-of time, e.g.
    ``20231228T2300Z-20261203T171500Z-a1b2c3``."""

    value: str

    @classmethod
    def new(cls, as_of: pd.Timestamp, now: datetime | None = None) -> RunId:
        now = now or datetime.now(UTC)
        salt = hashlib.sha256(os.urandom(8)).hexdigest()[:6]
        return cls(f"{as_of:%Y%m%dT%H%MZ}-{now:%Y%m%dT%H%M%SZ}-{salt}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_record(path: Path) -> dict[str, Any]:
    """Path, size and checksum of an input file, for the manifest."""
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _json_default(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, doc: Any) -> Path:
    """Write JSON atomically (temp file then rename), so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def _windows_records(windows: pd.DataFrame) -> list[dict[str, Any]]:
    records = json.loads(windows.to_json(orient="records", date_format="iso", date_unit="s"))
    return records


def write_outputs(
    run_dir: Path,
    *,
    windows: pd.DataFrame,
    hourly: pd.DataFrame,
    advisories: Sequence[dict[str, Any]],
    metrics: dict[str, Any],
    meta: dict[str, str],
    open_outages: pd.DataFrame | None = None,
) -> dict[str, str]:
    """Write the contract files into ``run_dir``; returns file name -> sha256. ``meta``
    (model_version, run_id, weather_source, forecast_issue_ts, forecast_files) is stamped on
    every hourly row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    version = {"schema_version": SCHEMA_VERSION}
    flat = windows.assign(drivers=windows["drivers"].map(
        lambda d: json.dumps(d, ensure_ascii=False)))
    flat.to_parquet(run_dir / WINDOWS_PARQUET, index=False)
    write_json(run_dir / WINDOWS_JSON, version | {"windows": _windows_records(windows)})
    hourly.assign(**meta).to_parquet(run_dir / HOURLY_PARQUET, index=False)
    _write_jsonl(run_dir / ADVISORIES_JSONL, advisories)
    write_json(run_dir / METRICS_JSON, version | metrics)
    names: tuple[str, ...] = (WINDOWS_PARQUET, WINDOWS_JSON, HOURLY_PARQUET, ADVISORIES_JSONL,
                              METRICS_JSON)
    if open_outages is not None:
        open_outages.to_parquet(run_dir / OUTAGES_PARQUET, index=False)
        names += (OUTAGES_PARQUET,)
    return {name: sha256_file(run_dir / name) for name in names}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
    tmp.replace(path)


def write_advice_inputs(
    run_dir: Path, areas: pd.DataFrame, restorations: pd.DataFrame, control: pd.DataFrame
) -> dict[str, str]:
    """What ``forewarn advise --run`` needs besides the windows (the areas the synthetic
    registry is built from, the restorations known at as-of), and the control-group record.
    Returns file name -> sha256."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cols = ["area_id", "customers_served", "timezone"]
    cols += ["area_name"] if "area_name" in areas.columns else []
    areas[cols].to_parquet(run_dir / AREAS_PARQUET, index=False)
    restorations.to_parquet(run_dir / RESTORATIONS_PARQUET, index=False)
    _write_jsonl(run_dir / CONTROL_JSONL, control.to_dict(orient="records"))
    names = (AREAS_PARQUET, RESTORATIONS_PARQUET, CONTROL_JSONL)
    return {name: sha256_file(run_dir / name) for name in names}


class RunDamaged(ValueError):
    """A finished run directory whose run.json cannot be read or is no manifest, or whose
    output files are missing or differ from the sha256 its run.json recorded. Nothing is read
    from such a run (its numbers could be quietly wrong). ``str()`` names the file with its
    path and says what to do (the CLI's line); ``public_message`` names it by run id and file
    name only (for API clients, who must not see server paths)."""

    def __init__(self, run_dir: Path, name: str, problem: str,
                 manifest: Mapping[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.problem = problem
        super().__init__(f"{self.run_dir / name}: {problem}; the run directory is damaged: "
                         f"{_damaged_hint(manifest)}")

    @property
    def public_message(self) -> str:
        return (f"run {self.run_dir.name}: {self.name}: {self.problem}; the run directory is "
                "damaged: restore it or publish a new run")


def _damaged_hint(manifest: Mapping[str, Any] | None) -> str:
    as_of = (manifest or {}).get("as_of")
    again = f" --as-of {as_of}" if as_of else ""
    return f"restore the run directory from a copy, or make a new run with `forewarn nightly{again}`"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a finished run; RunDamaged naming the file when it is not a JSON
    object, lists its ``outputs`` other than as an object, or has no ISO-8601 ``as_of``
    (every reader relies on those two). FileNotFoundError when it is absent: the run is not
    finished."""
    path = Path(run_dir) / MANIFEST_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDamaged(run_dir, MANIFEST_JSON, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RunDamaged(run_dir, MANIFEST_JSON, "not a JSON object")
    if doc.get("outputs") is not None and not isinstance(doc["outputs"], dict):
        raise RunDamaged(run_dir, MANIFEST_JSON, "`outputs` is not an object")
    try:
        datetime.fromisoformat(doc["as_of"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDamaged(run_dir, MANIFEST_JSON, "no valid ISO-8601 `as_of` time") from exc
    return doc


def output_problem(path: Path, expected: str,
                   digest: Callable[[Path], str] = sha256_file) -> str | None:
    """What is wrong with the run output ``path`` whose run.json sha256 is ``expected``
    (None when nothing is): missing, unreadable or changed since publishing. ``digest``: how
    to hash it (the API passes one cached per file version)."""
    if not path.is_file():
        return "missing or not a file, but run.json lists it among the run's outputs"
    try:
        actual = digest(path)
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__})"
    if actual != expected:
        return ("does not match the sha256 run.json recorded for it (changed or damaged after "
                "the run was published); nothing was read from the run")
    return None


def verify_outputs(run_dir: Path, manifest: dict[str, Any],
                   digest: Callable[[Path], str] = sha256_file) -> None:
    """Check every output file ``run.json`` lists (``outputs``: name -> sha256) against its
    checksum; RunDamaged naming the first file that is missing or differs. Runs written
    before the manifest listed outputs pass unchecked."""
    for name, expected in sorted((manifest.get("outputs") or {}).items()):
        if (problem := output_problem(Path(run_dir) / str(name), str(expected), digest)):
            raise RunDamaged(run_dir, str(name), problem, manifest)


def read_verified_manifest(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a finished run whose outputs all match their recorded checksums."""
    manifest = read_manifest(run_dir)
    verify_outputs(run_dir, manifest)
    return manifest


def read_advice_inputs(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame,
                                               pd.DataFrame]:
    """Manifest, windows (drivers decoded), areas and restorations of a finished run.
    Raises FileNotFoundError naming the missing file when the run is incomplete, RunDamaged
    when a file differs from the checksum in run.json."""
    for name in (MANIFEST_JSON, WINDOWS_PARQUET, AREAS_PARQUET, RESTORATIONS_PARQUET):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"{run_dir / name} not found: --run needs a finished run directory written "
                "by `forewarn nightly` (run.json is written last)"
            )
    manifest = read_verified_manifest(run_dir)
    areas = pd.read_parquet(run_dir / AREAS_PARQUET)
    restorations = pd.read_parquet(run_dir / RESTORATIONS_PARQUET)
    return manifest, read_windows(run_dir), areas, restorations


def read_open_outages(run_dir: Path) -> pd.DataFrame | None:
    """Outages on the map at the run's as-of time with their estimated restoration, or None
    for a run without restoration estimates."""
    path = run_dir / OUTAGES_PARQUET
    return pd.read_parquet(path) if path.is_file() else None


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """``run.json``: written last, so its presence means the run is complete."""
    return write_json(run_dir / MANIFEST_JSON, {"schema_version": SCHEMA_VERSION} | manifest)


def latest_manifest(runs_dir: Path) -> dict[str, Any] | None:
    """The run.json of the most recently created finished run under ``runs_dir`` (runs
    without run.json are unfinished and skipped); None when there is none."""
    manifests = [json.loads(p.read_text(encoding="utf-8"))
                 for p in runs_dir.glob(f"*/{MANIFEST_JSON}")]
    if not manifests:
        return None
    return max(manifests, key=lambda m: pd.Timestamp(m["created_utc"]))


def read_windows(run_dir: Path) -> pd.DataFrame:
    """Risk windows of a finished run, drivers decoded."""
    frame = pd.read_parquet(run_dir / WINDOWS_PARQUET)
    return frame.assign(drivers=frame["drivers"].map(json.loads))
