"""The champion/challenger gate: the pure decision, and applying it in a real MLflow registry."""

from __future__ import annotations

import pandas as pd
import pytest

from configs.settings import GateSettings, SettingsError, load_settings
from models.gate import decide_promotion, missing_features, trained_into

CFG = GateSettings.model_validate({})  # brier and roc_auc, margins 0, must beat climatology


def _m(brier: float, roc: float, skill: float = 0.02, pr: float = 0.3) -> dict[str, float]:
    return {"model_brier": brier, "model_roc_auc": roc, "brier_skill": skill,
            "model_pr_auc": pr}


def _decide(challenger, champion, cfg=CFG, **kw):
    return decide_promotion(challenger, champion, cfg, challenger_version="5",
                            champion_version=kw.pop("champion_version", "4"),
                            period="2023-01-01..2024-01-01", **kw)


def test_a_challenger_better_on_every_gate_metric_is_promoted():
    d = _decide(_m(0.0240, 0.851), _m(0.0245, 0.849))
    assert d.promote
    assert d.reasons[0] == "challenger v5 promoted over v4"
    assert d.scores["challenger"] == {"brier": 0.024, "roc_auc": 0.851}
    assert d.scores["champion"] == {"brier": 0.0245, "roc_auc": 0.849}


def test_worse_on_one_metric_or_merely_equal_keeps_the_champion():
    worse_roc = _decide(_m(0.0240, 0.845), _m(0.0245, 0.849))
    assert not worse_roc.promote
    assert worse_roc.reasons[0] == "champion v4 kept"
    assert any(r.startswith("roc_auc: challenger 0.84500 vs champion 0.84900 (not better")
               for r in worse_roc.reasons)
    same = _decide(_m(0.0245, 0.849), _m(0.0245, 0.849))
    assert not same.promote  # a rerun that trains the same model changes nothing


def test_margins_come_from_the_config():
    cfg = GateSettings.model_validate({"metrics": {"brier": 0.001}})
    assert not _decide(_m(0.0240, 0.80), _m(0.0245, 0.85), cfg).promote  # gain 0.0005 < 0.001
    assert _decide(_m(0.0230, 0.80), _m(0.0245, 0.85), cfg).promote  # roc_auc not gated
    with pytest.raises(ValueError):
        GateSettings.model_validate({"metrics": {}})
    with pytest.raises(ValueError):
        GateSettings.model_validate({"metrics": {"brier": -0.1}})
    with pytest.raises(SettingsError, match="gate"):
        load_settings(overrides={"gate": {"metrics": {"accuracy": 0.0}}}, environ={})


def test_a_challenger_that_does_not_beat_climatology_never_replaces_a_champion():
    d = _decide(_m(0.0240, 0.851, skill=-0.01), _m(0.0245, 0.849))
    assert not d.promote
    assert "does not beat climatology" in d.reasons[1]
    lax = GateSettings.model_validate({"require_beats_climatology": False})
    assert _decide(_m(0.0240, 0.851, skill=-0.01), _m(0.0245, 0.849), lax).promote


def test_the_first_model_and_one_replacing_an_unusable_champion_are_promoted():
    first = _decide(_m(0.03, 0.8, skill=-0.01), None, champion_version=None)
    assert first.promote and "no champion yet" in first.reasons[0]
    assert "does not beat climatology" in first.reasons[0]
    why = missing_features(["wx_prcp_mm", "wind_gust"], {"wx_prcp_mm"})
    assert why is not None and "wind_gust" in why
    assert missing_features(["wx_prcp_mm"], {"wx_prcp_mm", "x"}) is None
    d = _decide(_m(0.03, 0.8), None, unusable=why)
    assert d.promote and "cannot score" in d.reasons[0]


def test_a_champion_trained_into_the_test_period_is_kept_and_says_why():
    start = pd.Timestamp("2023-01-01", tz="UTC")
    why = trained_into({"train_end": "2023-06-01 00:00:00+00:00"}, start)
    assert why is not None and "into the test period" in why
    assert trained_into({"train_end": "2023-01-01 00:00:00+00:00"}, start) is None
    d = _decide(_m(0.01, 0.95), _m(0.03, 0.8), incomparable=why)
    assert not d.promote and "into the test period" in d.reasons[0]


def test_the_decision_moves_the_alias_and_is_kept_in_the_registry(tmp_path):
    from mlflow import MlflowClient

    from models.registry import (
        CHALLENGER,
        alias_version,
        load_version,
        log_and_register,
        record_gate,
    )

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    name = "gate-test"

    def register(model: dict, alias: str) -> dict[str, str]:
        return log_and_register(model, tracking_uri=uri, experiment="gate", model_name=name,
                                artifact_location=str(tmp_path / "art"), params={},
                                metrics={"overall": {"x": 1.0}}, artifacts={},
                                tags={"run_name": alias}, alias=alias)

    assert alias_version(uri, name) is None  # nothing registered yet
    first = register({"v": 1}, "champion")
    second = register({"v": 2}, CHALLENGER)
    assert alias_version(uri, name) == first["model_version"] == "1"
    assert alias_version(uri, name, CHALLENGER) == "2"
    assert load_version(uri, name, "2") == {"v": 2}
    kept = _decide(_m(0.03, 0.8), _m(0.02, 0.9), champion_version="1")
    record_gate(uri, name, second["run_id"], {**kept.to_dict(), "challenger_version": "2"})
    client = MlflowClient(tracking_uri=uri)
    assert alias_version(uri, name) == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags["gate"] == "rejected" and "champion v1 kept" in tags["gate_reasons"]
    assert client.get_run(second["run_id"]).data.tags["gate"] == "rejected"
    third = register({"v": 3}, CHALLENGER)
    won = _decide(_m(0.01, 0.95), _m(0.02, 0.9), champion_version="1")
    record_gate(uri, name, third["run_id"], {**won.to_dict(), "challenger_version": "3"})
    assert alias_version(uri, name) == "3"
    assert client.get_model_version(name, "3").tags["gate"] == "promoted"
