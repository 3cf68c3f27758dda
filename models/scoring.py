"""Scoring the coming hours and evaluating a model on a later period."""

from __future__ import annotations

import numpy as np
import pandas as pd

from configs.settings import FeatureSettings
from features import columns as C
from features.build import make_rows, scoring_rows
from features.labels import HourlyPanel
from models.explain import Explanations
from models.metrics import evaluate
from models.train import RiskModel


def score_horizon(
    model: RiskModel,
    panel: HourlyPanel,
    areas: pd.DataFrame,
    weather_hourly: pd.DataFrame,
    as_of: pd.Timestamp,
    cfg: FeatureSettings,
) -> tuple[pd.DataFrame, Explanations]:
    """Hourly risk for every area over [as_of, as_of + H) and what drove each hour.

    Columns: AREA, TS, ISSUE_TS, LEAD_H, PROB, CLIMATOLOGY, ``lift``, EXPECTED_CUSTOMERS
    (customers expected to lose power in the hour, capped by customers served), MODEL_KIND.
    """
    a, t, lead = scoring_rows(panel, as_of, model.horizon_h)
    rows = make_rows(panel, areas, weather_hourly, model.climatology, a, t, lead, cfg)
    prob = model.predict(rows)
    served = areas.set_index(C.AREA)[C.CUSTOMERS_SERVED].reindex(rows[C.AREA]).to_numpy(float)
    per_hour = model.customers_per_outage_hour.reindex(rows[C.AREA]).fillna(
        model.customers_per_outage_hour.median()).to_numpy(float)
    hourly = pd.DataFrame(
        {
            C.AREA: rows[C.AREA].to_numpy(),
            C.TS: rows[C.TS].to_numpy(),
            C.ISSUE_TS: rows[C.ISSUE_TS].to_numpy(),
            C.LEAD_H: lead.astype("int64"),
            C.PROB: prob,
            C.CLIMATOLOGY: rows["clim_rate"].to_numpy(float),
            C.EXPECTED_CUSTOMERS: np.minimum(prob * per_hour, served),
            C.MODEL_KIND: model.kinds(rows[C.AREA].to_numpy()),
        }
    )
    hourly["lift"] = hourly[C.PROB] / np.maximum(hourly[C.CLIMATOLOGY], 1e-9)
    return hourly, Explanations(rows, model.contributions)


def evaluate_model(model: RiskModel, test_rows: pd.DataFrame) -> dict:
    """Model against climatology on labelled rows of a period later than training: overall,
    per lead bucket, and split by which model (per-area or pooled) scored the area."""
    known = test_rows[test_rows[C.LABEL].notna()].copy()
    known[C.PROB] = model.predict(known)
    known[C.MODEL_KIND] = model.kinds(known[C.AREA].to_numpy())
    out = evaluate(known, C.LABEL, C.PROB, "clim_rate", C.LEAD_H)
    out["by_model_kind"] = {
        kind: evaluate(part, C.LABEL, C.PROB, "clim_rate", C.LEAD_H)["overall"]
        for kind, part in known.groupby(C.MODEL_KIND)
    }
    out["test_start"] = str(known[C.TS].min())
    out["test_end"] = str(known[C.TS].max())
    return out
