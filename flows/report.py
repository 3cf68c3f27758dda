"""``forewarn report --run DIR``: how a run's advisories did, from the data that came after.

Reads the run's advisories and control-group record, the outage history (outcomes), the
outbox delivery states and optional customer feedback, and writes ``advice_report.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from configs.settings import Settings
from features.areas import assign_areas
from features.outages import load_outage_history
from serving.feedback import advisories_frame, advisory_report, read_feedback
from serving.outbox import read_delivery
from serving.publish import (
    ADVISORIES_JSONL,
    CONTROL_JSONL,
    MANIFEST_JSON,
    read_verified_manifest,
    write_json,
)

REPORT_JSON = "advice_report.json"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def report_run(cfg: Settings, run_dir: Path, feedback_file: Path | None) -> dict[str, Any]:
    """Build the report of ``run_dir`` and write it there; returns it."""
    if not (run_dir / MANIFEST_JSON).is_file():
        raise FileNotFoundError(f"{run_dir / MANIFEST_JSON} not found: not a finished run")
    manifest = read_verified_manifest(run_dir)
    advisories = advisories_frame(_jsonl(run_dir / ADVISORIES_JSONL))
    control = pd.DataFrame(_jsonl(run_dir / CONTROL_JSONL))
    history = load_outage_history(cfg.outages, cfg.paths.data_dir, cfg.paths.quarantine_dir)
    outages = assign_areas(history.events, cfg.areas)
    feedback = read_feedback(feedback_file) if feedback_file is not None else None
    result = {
        "run_id": manifest["run_id"],
        "as_of": manifest["as_of"],
        "outcomes_through": str(history.end),
        **advisory_report(
            advisories, outages, feedback=feedback,
            delivery=read_delivery(cfg.paths.outbox_url), control=control,
        ),
    }
    write_json(run_dir / REPORT_JSON, result)
    return result
