"""The scheduled Prefect deployments, built from the ``deployments`` section of the settings.

``build_deployments`` returns three runner deployments, served together by ``forewarn
deploy`` (``prefect.serve``) against a real Prefect server (``forewarn prefect-server``):

| deployment | flow | when (cron, in ``deployments.timezone``) |
|---|---|---|
| ``nightly`` | ``forewarn-scheduled-nightly``, retrain = ``nightly_retrain`` | ``nightly_cron`` |
| ``weekly-retrain`` | ``forewarn-scheduled-nightly``, retrain = true | ``retrain_cron`` |
| ``hourly-refresh`` | ``forewarn-refresh`` | ``refresh_cron`` |

Each runs at most ``concurrency_limit`` at once; a nightly or weekly run that overruns makes
the next one wait (ENQUEUE), an hourly refresh that finds one still running is cancelled
(CANCEL_NEW): the next hour checks again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from configs.settings import DeploymentSettings, Settings
from flows.scheduled import refresh, scheduled_nightly

NIGHTLY = "nightly"
WEEKLY_RETRAIN = "weekly-retrain"
HOURLY_REFRESH = "hourly-refresh"


def _limit(d: DeploymentSettings, strategy: ConcurrencyLimitStrategy) -> ConcurrencyLimitConfig:
    return ConcurrencyLimitConfig(limit=d.concurrency_limit, collision_strategy=strategy)


def build_deployments(settings: Settings, config_path: str | Path) -> list[RunnerDeployment]:
    """The nightly, weekly-retrain and hourly-refresh deployments of the profile at
    ``config_path`` (passed to every run as an absolute path, so runs do not depend on the
    serving process's working directory)."""
    d = settings.deployments
    config = str(Path(config_path).resolve())
    tags = [*d.tags, settings.profile]
    specs: list[tuple[Any, str, str, dict[str, Any], ConcurrencyLimitStrategy, str]] = [
        (scheduled_nightly, NIGHTLY, d.nightly_cron,
         {"config": config, "retrain": d.nightly_retrain}, ConcurrencyLimitStrategy.ENQUEUE,
         "Score the next horizon with the registered champion, advise, publish a run "
         "directory; trains only when no champion exists" if not d.nightly_retrain else
         "Train, gate, score, advise and publish"),
        (scheduled_nightly, WEEKLY_RETRAIN, d.retrain_cron,
         {"config": config, "retrain": True}, ConcurrencyLimitStrategy.ENQUEUE,
         "Retrain: train a challenger, register and gate it against the champion, then "
         "score, advise and publish as every night"),
        (refresh, HOURLY_REFRESH, d.refresh_cron, {"config": config},
         ConcurrencyLimitStrategy.CANCEL_NEW,
         "Rescore with the champion when a forecast newer than the latest run's arrived "
         "(nothing to do with forecast.use: replay)"),
    ]
    return [
        entry.to_deployment(
            name=name,
            schedule=Cron(cron, timezone=d.timezone),
            parameters=parameters,
            concurrency_limit=_limit(d, strategy),
            tags=tags,
            description=description,
            # import path, not a file path: runs work whatever the serving process's cwd
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for entry, name, cron, parameters, strategy, description in specs
    ]
