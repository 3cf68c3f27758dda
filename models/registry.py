"""MLflow: the only module that imports it. Runs, the model bundle and the registry alias."""

from __future__ import annotations

import json
import logging
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class ForewarnModelPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
        """Serves a pickled Forewarn model (``RiskModel``: outage probabilities;
        ``DurationModel``: P10/P50/P90 hours to restoration) through its predict()."""

        def load_context(self, context):
            with open(context.artifacts["bundle"], "rb") as fh:
                self.model = pickle.load(fh)

        # pd.DataFrame is a hint MLflow accepts without inferring a schema from it; without a
        # hint it warns on every log and load
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
            return self.model.predict(model_input)

    return ForewarnModelPyfunc


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}" if prefix else str(k), v, out)
    elif isinstance(value, int | float) and value == value:
        out[prefix.replace("-", "_").replace("+", "p")] = float(value)


def log_and_register(
    model: Any,
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    artifact_location: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    artifacts: dict[str, Any],
    tags: dict[str, str],
    name: str = "risk_model",
    text_artifacts: dict[str, str] | None = None,
    alias: str = CHAMPION,
) -> dict[str, str]:
    """Log a training run (params, flattened metrics, JSON artifacts, the model as an MLflow
    pyfunc), register it under ``model_name`` and point ``alias`` at it (``champion``, or
    ``challenger`` for a model that must pass the gate first).

    A new experiment keeps its artifacts at ``artifact_location``. Returns run_id,
    model_version and model_uri.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        # without a location MLflow would write artifacts to ./mlruns of whatever folder
        # the job runs in
        client.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    flat: dict[str, float] = {}
    _flatten("", metrics, flat)
    with mlflow.start_run(run_name=tags.get("run_name")) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags(tags)
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(flat)
        for filename, doc in artifacts.items():
            mlflow.log_dict(doc, filename)
        for filename, text in (text_artifacts or {}).items():
            mlflow.log_text(text, filename)
        bundle = Path(tmp) / f"{name}.pkl"
        bundle.write_bytes(pickle.dumps(model))
        info = _log_pyfunc(mlflow, bundle, model_name, name)
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, "metrics", json.dumps(
        {k: round(v, 5) for k, v in flat.items() if k.startswith("overall_")}))
    log.info("registered %s version %s as %s (run %s)", model_name, version, alias, run_id)
    return {"run_id": run_id, "model_version": version,
            "model_uri": f"models:/{model_name}@{alias}"}


def alias_version(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> str | None:
    """The version behind ``alias``, or None when the model or the alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
            model_name, alias).version)
    except MlflowException:
        return None


def load_version(tracking_uri: str, model_name: str, version: str) -> Any:
    """The Forewarn model object of one registered version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    return loaded.unwrap_python_model().model


def record_gate(tracking_uri: str, model_name: str, run_id: str,
                decision: dict[str, Any]) -> None:
    """Apply a gate decision: point ``champion`` at the challenger if it was promoted; keep
    the decision on the challenger's model version (tags) and its run (``gate.json``)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    version = decision["challenger_version"]
    if decision["promote"]:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "gate",
                                 "promoted" if decision["promote"] else "rejected")
    client.set_model_version_tag(model_name, version, "gate_reasons",
                                 "; ".join(decision["reasons"])[:4000])
    client.set_tag(run_id, "gate", "promoted" if decision["promote"] else "rejected")
    client.log_dict(run_id, decision, "gate.json")
    log.info("gate for %s v%s: %s", model_name, version, "; ".join(decision["reasons"]))


def load_champion(tracking_uri: str, model_name: str) -> tuple[Any, str]:
    """The model behind the ``champion`` alias and its version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    version = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
        model_name, CHAMPION).version
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
    return loaded.unwrap_python_model().model, str(version)


def _log_pyfunc(mlflow: Any, bundle: Path, model_name: str, name: str) -> Any:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=_pyfunc_class()(),
        artifacts={"bundle": str(bundle)},
        pip_requirements=_requirements(),
        registered_model_name=model_name,
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("lightgbm", "pandas", "numpy", "scikit-learn",
                                            "mlflow")]


def log_backtest(
    *,
    tracking_uri: str,
    experiment: str,
    artifact_location: str,
    metrics: dict[str, Any],
    plots: list[Path],
    params: dict[str, Any],
    run_name: str,
) -> str:
    """A parent run with the overall backtest metrics, metrics.json and the plots, and one
    nested run per fold with that fold's metrics. Returns the parent run id."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as parent:
        mlflow.set_tags({"kind": "backtest"})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        flat: dict[str, float] = {}
        for part in ("overall", "by_lead", "by_season", "ranking", "big_days"):
            _flatten(part, metrics[part], flat)
        mlflow.log_metrics(flat)
        mlflow.log_dict(metrics, "metrics.json")
        for plot in plots:
            mlflow.log_artifact(str(plot), "plots")
        for fold in metrics["folds"]:
            with mlflow.start_run(run_name=fold["fold"], nested=True):
                mlflow.log_params({"train_start": fold["train_start"],
                                   "test_start": fold["start"], "test_end": fold["end"]})
                fold_flat: dict[str, float] = {}
                _flatten("", {k: v for k, v in fold.items()
                              if k in ("model", "climatology", "recent_rate", "ranking",
                                       "n", "prevalence", "seconds")}, fold_flat)
                mlflow.log_metrics(fold_flat)
        run_id = parent.info.run_id
    log.info("backtest logged to MLflow run %s (%d folds)", run_id, len(metrics["folds"]))
    return str(run_id)
