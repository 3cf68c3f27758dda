"""``forewarn advise --run DIR``: decide and enqueue the advisories of a finished run.

The same engine as the nightly flow's advise stage (``decide_advisories`` over the run's
windows, the synthetic registry rebuilt from the run's areas, and the outbox history), without
Prefect: it is one short sequence of I/O and one pure decision. Safe to repeat: what is already
in the outbox is neither decided nor enqueued again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from configs.settings import Settings
from features.customers import generate_registry
from serving.advisories import decide_advisories
from serving.feedback import apply_opt_outs, read_feedback
from serving.outbox import enqueue, read_history
from serving.publish import read_advice_inputs, read_open_outages


def advise_run(cfg: Settings, run_dir: Path, feedback: Path | None = None) -> dict[str, Any]:
    """Decide and enqueue for the run in ``run_dir``; customers who replied STOP in the
    ``feedback`` file (CSV or JSONL) get nothing. Returns counts (decided, inserted,
    duplicates, by kind) and the run's id and as-of time (UTC)."""
    manifest, windows, areas, restorations = read_advice_inputs(run_dir)
    as_of = pd.Timestamp(manifest["as_of"])
    customers = generate_registry(areas, cfg.customers)
    if feedback is not None:
        customers = apply_opt_outs(customers, read_feedback(feedback))
    history = read_history(cfg.paths.outbox_url)
    advisories = decide_advisories(
        windows, customers, history, cfg.advisories, as_of,
        restorations=restorations, outages=read_open_outages(run_dir),
        run_id=manifest["run_id"],
    )
    result = enqueue(cfg.paths.outbox_url, advisories)
    kinds: dict[str, int] = {}
    for advisory in advisories:
        kinds[advisory.kind] = kinds.get(advisory.kind, 0) + 1
    return {
        "run_id": manifest["run_id"],
        "as_of": manifest["as_of"],
        "outbox": cfg.paths.outbox_url,
        "decided": len(advisories),
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "by_kind": dict(sorted(kinds.items())),
    }
