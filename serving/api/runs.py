"""Reading published run directories for the API: which runs exist, which is the latest, and
their files (cached per file version), plus the pure filters and paging the routes apply.

A run counts once its ``run.json`` exists (serving.publish writes it last). The latest run is
the one with the greatest run id: ids start with the as-of time, then the creation time
(serving.publish.RunId), so it is the newest forecast, and the newest rerun of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from serving import publish
from serving.api.models import RUN_ID_PATTERN

_RUN_ID = re.compile(RUN_ID_PATTERN)
_TS_MIN = pd.Timestamp.min.tz_localize("UTC")
_TS_MAX = pd.Timestamp.max.tz_localize("UTC")


class RunNotFound(LookupError):
    """No such run (or no run published yet); the message says which."""


class RunFileMissing(LookupError):
    """The run exists but lacks an optional output file (e.g. outage_estimates.parquet)."""


@dataclass(frozen=True)
class Run:
    """A complete run directory and its manifest."""

    run_id: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def schema_version(self) -> str:
        return str(self.manifest.get("schema_version") or publish.SCHEMA_VERSION)

    @property
    def as_of(self) -> str:
        return str(self.manifest.get("as_of"))

    @property
    def outputs(self) -> dict[str, str]:
        """Output file name -> sha256, from the manifest."""
        return {str(k): str(v) for k, v in (self.manifest.get("outputs") or {}).items()}


class RunStore:
    """The run directories under one folder (``<home>/runs`` by default)."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir

    def run_ids(self) -> list[str]:
        """Ids of complete runs, oldest first."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir()
                      if _RUN_ID.match(p.name) and (p / publish.MANIFEST_JSON).is_file())

    def latest(self) -> Run:
        ids = self.run_ids()
        if not ids:
            raise RunNotFound("no run has been published yet")
        return self.get(ids[-1])

    def get(self, run_id: str) -> Run:
        """The run ``run_id``; ids that could leave the runs folder are never looked up."""
        if not _RUN_ID.match(run_id):
            raise RunNotFound(f"run {run_id!r} is not a valid run id")
        path = self.runs_dir / run_id / publish.MANIFEST_JSON
        try:
            manifest = _read_json(str(path), path.stat().st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise RunNotFound(f"run {run_id!r} not found (or not finished)") from exc
        except OSError as exc:
            raise publish.RunDamaged(path.parent, path.name,
                                     f"cannot be read ({type(exc).__name__})") from exc
        return Run(run_id=run_id, directory=path.parent, manifest=manifest)

    def resolve(self, run_id: str | None) -> Run:
        """The run named, or the latest one when ``run_id`` is None."""
        return self.latest() if run_id is None else self.get(run_id)

    def windows(self, run: Run) -> pd.DataFrame:
        """Risk windows, drivers decoded (list of dicts per row)."""
        path = run.directory / publish.WINDOWS_PARQUET
        return _read_windows(str(run.directory), _checked(path, run))

    def hourly(self, run: Run) -> pd.DataFrame:
        path = run.directory / publish.HOURLY_PARQUET
        return _read_parquet(str(path), _checked(path, run))

    def advisories(self, run: Run) -> tuple[dict[str, Any], ...]:
        path = run.directory / publish.ADVISORIES_JSONL
        return _read_jsonl(str(path), _checked(path, run))

    def outages(self, run: Run) -> pd.DataFrame:
        path = run.directory / publish.OUTAGES_PARQUET
        return _read_parquet(str(path), _checked(path, run))

    def area_name(self, run: Run, area_id: str) -> str | None:
        """The area's name from its windows, else from the run's area table (None when
        neither names it, e.g. a run written before the table carried names)."""
        windows = self.windows(run)
        names = windows.loc[windows["area_id"].astype(str) == area_id, "area_name"].dropna()
        if len(names):
            return str(names.iloc[0])
        path = run.directory / publish.AREAS_PARQUET
        if not path.is_file():
            return None
        areas = _read_parquet(str(path), _checked(path, run))
        if "area_name" not in areas.columns:
            return None
        found = areas.loc[areas["area_id"].astype(str) == area_id, "area_name"].dropna()
        return str(found.iloc[0]) if len(found) else None

    def verify(self, run: Run) -> None:
        """Every output run.json lists matches its sha256 (publish.RunDamaged otherwise);
        checked once per file version."""
        for name in sorted(run.outputs):
            _checked(run.directory / name, run)


def _checked(path: Path, run: Run) -> int:
    """The modification time of a run file (the cache key of its reader) after checking it
    against the sha256 run.json recorded for it (publish.output_problem, hashed once per file
    version): publish.RunDamaged when it is missing, unreadable or changed, so a damaged run
    is never served as numbers; RunFileMissing for an absent file run.json does not list."""
    expected = run.outputs.get(path.name)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError as exc:
        if expected is None:
            raise RunFileMissing(f"run {run.run_id} has no {path.name}") from exc
        mtime_ns = -1  # the check below reports it missing
    if expected is not None and (problem := _problem(str(path), mtime_ns, expected)):
        raise publish.RunDamaged(run.directory, path.name, problem, run.manifest)
    return mtime_ns


@lru_cache(maxsize=256)
def _problem(path: str, mtime_ns: int, expected: str) -> str | None:
    return publish.output_problem(Path(path), expected)


# Cached by (path, modification time): a rewritten file is read again, an unchanged one never.
@lru_cache(maxsize=64)
def _read_json(path: str, mtime_ns: int) -> dict[str, Any]:
    return publish.read_manifest(Path(path).parent)


@lru_cache(maxsize=16)
def _read_windows(run_dir: str, mtime_ns: int) -> pd.DataFrame:
    return publish.read_windows(Path(run_dir))


@lru_cache(maxsize=16)
def _read_parquet(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_parquet(path)


@lru_cache(maxsize=8)
def _read_jsonl(path: str, mtime_ns: int) -> tuple[dict[str, Any], ...]:
    with open(path, encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh if line.strip())


# ---------------------------------------------------------------------- filters and paging


def utc_bound(value: datetime | None) -> pd.Timestamp | None:
    """A client's time bound as a UTC Timestamp; times beyond what pandas holds (before 1677
    or after 2262) become the earliest or latest it does, so they filter nothing out."""
    if value is None:
        return None
    if value.year <= 1678:
        return _TS_MIN
    if value.year >= 2261:
        return _TS_MAX
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def filter_windows(
    windows: pd.DataFrame,
    *,
    min_probability: float | None = None,
    area_id: str | None = None,
    time_from: datetime | None = None,
    time_to: datetime | None = None,
) -> pd.DataFrame:
    """Windows whose peak probability is at least ``min_probability`` (0-1), of ``area_id``,
    overlapping [time_from, time_to) (UTC), ranked (1 first)."""
    keep = pd.Series(True, index=windows.index)
    if min_probability is not None:
        keep &= windows["peak_prob"] >= min_probability
    if area_id is not None:
        keep &= windows["area_id"].astype(str) == area_id
    lo, hi = utc_bound(time_from), utc_bound(time_to)
    if lo is not None:
        keep &= windows["end"] > lo
    if hi is not None:
        keep &= windows["start"] < hi
    return windows[keep].sort_values(["rank", "start", "window_id"], kind="stable")


def filter_advisories(
    rows: Sequence[dict[str, Any]],
    *,
    area_id: str | None = None,
    segment: str | None = None,
    kind: str | None = None,
    window_id: str | None = None,
) -> list[dict[str, Any]]:
    """Advisories matching every filter given, in file order (window rank, start, customer)."""
    wanted = {k: v for k, v in (("area_id", area_id), ("segment", segment), ("kind", kind),
                                ("window_id", window_id)) if v is not None}
    return [row for row in rows if all(str(row.get(k)) == v for k, v in wanted.items())]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with missing values (NaN, NaT) as None, so they serialise as null."""
    return [{k: (None if _missing(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _missing(value: Any) -> bool:
    if isinstance(value, list | dict | tuple):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def page_of(items: Sequence[Any], limit: int, offset: int) -> tuple[list[Any], int | None]:
    """One page and the offset of the next (None on the last page)."""
    chunk = list(items[offset:offset + limit])
    following = offset + limit
    return chunk, following if following < len(items) else None

