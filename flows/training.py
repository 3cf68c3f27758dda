"""Training beyond one process: the per-area models as Prefect tasks on a Dask task runner,
and the pooled model on the same kind of cluster through ``lightgbm.dask``.

``compute.task_runner: local`` (the default) keeps every fit in the calling process;
``dask`` maps :func:`fit_one_area` over the areas in the :func:`area_models` flow, run with
the runner :func:`task_runner` builds from the compute settings.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import pandas as pd
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from configs.settings import ComputeSettings, ModelSettings
from models.train import AreaJob, fit_area, fit_areas, fit_pooled


def task_runner(cfg: ComputeSettings) -> TaskRunner[Any]:
    """The task runner of the per-area fan-out: a ``DaskTaskRunner`` on the cluster at
    ``dask_address``, or on a local cluster started for the flow (threads by default:
    worker processes would each start their own ephemeral Prefect server unless
    ``PREFECT_API_URL`` names a running one); one thread for ``task_runner: local``."""
    if cfg.task_runner == "local":
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": cfg.n_workers, "threads_per_worker": cfg.threads_per_worker,
        "processes": cfg.processes, "dashboard_address": None})


@task(cache_policy=NO_CACHE)
def fit_one_area(job: AreaJob, params: dict[str, Any], cfg: ModelSettings) -> str:
    return fit_area(job, params, cfg)


@flow(name="forewarn-area-models")
def area_models(jobs: list[AreaJob], params: dict[str, Any], cfg: ModelSettings
                ) -> dict[str, str]:
    """Every area's own model (LightGBM model text by area id), one task per area on the
    flow's task runner."""
    futures = fit_one_area.map(jobs, params=unmapped(params), cfg=unmapped(cfg))
    return {job.area: future.result() for job, future in zip(jobs, futures, strict=True)}


@task(cache_policy=NO_CACHE)
def fit_areas_here(jobs: list[AreaJob], params: dict[str, Any], cfg: ModelSettings
                   ) -> dict[str, str]:
    return fit_areas(jobs, params, cfg)


def fit_area_models(jobs: list[AreaJob], params: dict[str, Any], model_cfg: ModelSettings,
                    compute: ComputeSettings) -> dict[str, str]:
    """The per-area models where ``compute`` says: one task fitting them one after another
    in this process, or the :func:`area_models` flow fanning them out on Dask, one task per
    area. Both give the same model texts. Call it from a flow."""
    if compute.task_runner == "local":
        return fit_areas_here(jobs, params, model_cfg)
    return area_models.with_options(task_runner=task_runner(compute))(jobs, params, model_cfg)


@task(cache_policy=NO_CACHE)
def pooled_model(rows: pd.DataFrame, feature_names: list[str], model_cfg: ModelSettings,
                 compute: ComputeSettings) -> lgb.Booster:
    """The pooled model, in this process or (``pooled_backend: dask``) with
    ``lightgbm.dask`` on the configured cluster."""
    if compute.pooled_backend == "local":
        return fit_pooled(rows, feature_names, model_cfg)
    from models.cluster import dask_client, fit_pooled_dask

    with dask_client(compute) as client:
        return fit_pooled_dask(rows, feature_names, model_cfg, client, compute.partitions)
