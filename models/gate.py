"""Champion/challenger promotion: a pure decision over two models' scores on the same rows.

A new risk model is registered as ``challenger``. It becomes ``champion`` only if, on the
same rows of the test period (later than both models' training), it beats the champion on
every gate metric by more than that metric's margin. Where the two cannot be compared
fairly (the champion was trained into the test period, or needs features the current
profile does not build) the champion stays, and the reason says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from configs.settings import GateSettings

# gate metric -> (key in evaluate_predictions()["overall"], +1 higher is better / -1 lower)
METRIC_KEYS: dict[str, tuple[str, int]] = {
    "roc_auc": ("model_roc_auc", 1),
    "pr_auc": ("model_pr_auc", 1),
    "brier": ("model_brier", -1),
    "brier_skill": ("brier_skill", 1),
}


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why; ``scores`` holds each gate metric of both models."""

    promote: bool
    reasons: list[str]
    challenger_version: str
    champion_version: str | None
    period: str
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def missing_features(champion_features: list[str], available: set[str]) -> str | None:
    """Why the champion cannot score this profile's feature rows at all, or None."""
    missing = sorted(set(champion_features) - available)
    if missing:
        return (f"the champion needs features this profile no longer builds "
                f"({', '.join(missing[:5])}), so it cannot score")
    return None


def trained_into(champion_info: dict[str, Any], test_start: pd.Timestamp) -> str | None:
    """Why the champion's scores on the test period would not be out of sample, or None."""
    trained_to = champion_info.get("train_end")
    if trained_to and pd.Timestamp(trained_to) > test_start:
        return (f"the champion was trained through {trained_to}, into the test period that "
                f"starts {test_start}: no fair comparison there")
    return None


def decide_promotion(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    cfg: GateSettings,
    *,
    challenger_version: str,
    champion_version: str | None,
    period: str,
    unusable: str | None = None,
    incomparable: str | None = None,
) -> GateDecision:
    """Promote or keep, from each model's ``overall`` metrics on the same rows.

    No champion yet, or one that cannot score this profile (``unusable``): the challenger is
    promoted (scoring needs a champion), with a reason that says whether it beats
    climatology. A champion that cannot be compared fairly (``incomparable``) stays.
    Otherwise the challenger must beat climatology (if configured) and be better than the
    champion on every gate metric by more than its margin."""
    def side(m: dict[str, float] | None) -> dict[str, float | None]:
        return {name: (float(m[key]) if m is not None and key in m else None)
                for name, (key, _) in METRIC_KEYS.items() if name in cfg.metrics}

    scores = {"challenger": side(challenger), "champion": side(champion)}
    skill = float(challenger.get("brier_skill", float("nan")))
    beats_clim = skill > 0
    clim_note = (f"Brier skill against climatology {skill:+.4f}"
                 f" ({'beats' if beats_clim else 'does not beat'} climatology)")

    def decision(promote: bool, reasons: list[str]) -> GateDecision:
        return GateDecision(promote, reasons, challenger_version, champion_version, period,
                            scores)

    if champion_version is None:
        return decision(True, [f"no champion yet; challenger {clim_note}"])
    if unusable:
        return decision(True, [f"challenger v{challenger_version} promoted: {unusable}; "
                               f"challenger {clim_note}"])
    if incomparable or champion is None:
        return decision(False, [f"champion v{champion_version} kept: "
                                f"{incomparable or 'it has no scores on the test period'}"])
    reasons: list[str] = []
    promote = True
    if cfg.require_beats_climatology and not beats_clim:
        promote = False
        reasons.append(f"challenger {clim_note}")
    for name, margin in cfg.metrics.items():
        key, sign = METRIC_KEYS[name]
        new, old = float(challenger[key]), float(champion[key])
        gain = sign * (new - old)
        better = gain > margin
        promote &= better
        reasons.append(f"{name}: challenger {new:.5f} vs champion {old:.5f} "
                       f"({'better' if better else 'not better'} by more than {margin:g})")
    verdict = (f"challenger v{challenger_version} promoted over v{champion_version}" if promote
               else f"champion v{champion_version} kept")
    return decision(promote, [verdict, *reasons])
