"""Training beyond one process, on a real four-county slice: the per-area models fanned out
as Prefect tasks on a local Dask cluster are the very models fitted one after another in
this process; the pooled model trains through lightgbm.dask and ranks held-out hours about as
well as the local one."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from configs.settings import ComputeSettings, SettingsError, load_settings
from features import columns as C

REPO = Path(__file__).resolve().parents[1]
AREAS = ["21111", "21067", "21185", "21013"]  # Jefferson, Fayette, Oldham, Bell


@pytest.fixture(scope="module")
def prepared(real_history, data_dir, tmp_path_factory):
    """The real loaders (their functions, no Prefect API) on four counties; training rows of
    June 2021 through 2022 (about 55,000) and test positions in June-July 2023."""
    from conftest import four_county_data

    from models.experiment import training_set

    cfg, data = four_county_data(data_dir, real_history, tmp_path_factory.mktemp("home"),
                                 AREAS, num_boost_round=60)
    return cfg, data, training_set(data, cfg.features, cfg.model)


@pytest.fixture(scope="module")
def in_process(prepared):
    """The per-area model texts fitted one after another in this process."""
    from models.train import area_params, fit_areas

    cfg, _, ts = prepared
    return fit_areas(ts.jobs, area_params(ts.feature_names, cfg.model), cfg.model)


def _dask(compute: ComputeSettings, **changes) -> ComputeSettings:
    return compute.model_copy(update={"task_runner": "dask", **changes})


def _assert_same_models(fanned: dict[str, str], local: dict[str, str], ts) -> None:
    assert list(fanned) == list(local)
    for area, text in local.items():
        assert fanned[area] == text, f"area {area}: the Dask fit differs"
        job = next(j for j in ts.jobs if j.area == area)
        x = job.x_valid.to_numpy("float32")
        np.testing.assert_array_equal(lgb.Booster(model_str=fanned[area]).predict(x),
                                      lgb.Booster(model_str=text).predict(x))


def test_the_slice_has_several_areas_to_fan_out_and_fits_repeat_exactly(prepared, in_process):
    from models.train import area_params, fit_area

    cfg, _, ts = prepared
    assert 50_000 < len(ts.rows) < 150_000
    assert [j.area for j in ts.jobs] == sorted(AREAS)  # all four have >= 300 positive hours
    job = ts.jobs[0]
    assert fit_area(job, area_params(ts.feature_names, cfg.model), cfg.model) == in_process[
        job.area]
    # and the text really depends on the job: another area gives other trees
    assert in_process[ts.jobs[0].area] != in_process[ts.jobs[1].area]


def test_per_area_fan_out_on_a_local_dask_cluster_equals_the_single_process_models(
        prefect_api, prepared, in_process):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect_dask import DaskTaskRunner

    from flows.training import area_models, task_runner
    from models.train import area_params

    cfg, _, ts = prepared
    compute = _dask(cfg.compute)  # no address: a local threaded cluster of 2 x 1
    runner = task_runner(compute)
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1,
                                     "processes": False, "dashboard_address": None}
    state = area_models.with_options(task_runner=runner)(
        ts.jobs, area_params(ts.feature_names, cfg.model), cfg.model, return_state=True)
    _assert_same_models(state.result(), in_process, ts)
    with get_client(sync_client=True) as client:  # one task run per area, all completed
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert sorted(r.name.split("-")[0] for r in runs) == ["fit_one_area"] * len(ts.jobs)
    assert all(r.state is not None and r.state.is_completed() for r in runs)


def test_fan_out_to_a_cluster_address_runs_on_that_cluster(prefect_api, prepared, in_process):
    from distributed import LocalCluster
    from prefect import flow

    from flows.training import fit_area_models
    from models.train import area_params

    cfg, _, ts = prepared
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        compute = _dask(cfg.compute, dask_address=cluster.scheduler_address)

        @flow(name="fan-out-to-address")
        def run() -> dict[str, str]:
            return fit_area_models(ts.jobs, area_params(ts.feature_names, cfg.model),
                                   cfg.model, compute)

        fanned = run()
        prefixes = cluster.scheduler.task_prefixes
        ran = {str(name): prefix.state_counts["memory"] for name, prefix in prefixes.items()}
    _assert_same_models(fanned, in_process, ts)
    assert ran == {"fit_one_area": len(ts.jobs)}  # every area a task finished on that cluster


def test_pooled_model_through_lightgbm_dask_ranks_held_out_hours_like_the_local_one(prepared):
    from models.cluster import dask_client, fit_pooled_dask
    from models.experiment import predict_period
    from models.train import assemble_risk_model, fit_pooled

    cfg, data, ts = prepared
    local = fit_pooled(ts.rows, ts.feature_names, cfg.model)
    with dask_client(cfg.compute) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        pooled = fit_pooled_dask(ts.rows, ts.feature_names, cfg.model, client)
    assert 1 <= pooled.num_trees() <= cfg.model.num_boost_round
    # LightGBM's distributed learning keeps the monotone constraints but only the basic method
    assert pooled.params["monotone_constraints_method"] == "basic"
    assert [int(v) for v in pooled.params["monotone_constraints"]] == [
        int(v) for v in local.params["monotone_constraints"]]
    assert any(int(v) for v in pooled.params["monotone_constraints"])
    aucs = {}
    for name, booster in (("dask", pooled), ("local", local)):
        model = assemble_risk_model(ts.rows, ts.feature_names, booster, {}, {},
                                    ts.climatology, ts.customers_per_outage_hour, cfg.model)
        rows = predict_period(model, data, cfg.features, ts.test_positions)
        aucs[name] = roc_auc_score(rows[C.LABEL], rows[C.PROB])
    assert len(rows) > 5000  # June-July 2023, four counties
    assert aucs["dask"] > 0.75, aucs
    assert abs(aucs["dask"] - aucs["local"]) < 0.03, aucs


def test_compute_settings_default_to_in_process_and_refuse_an_address_without_protocol():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.training import task_runner

    compute = load_settings(environ={}).compute
    assert (compute.task_runner, compute.pooled_backend, compute.dask_address) == (
        "local", "local", None)
    assert compute.processes is False
    assert isinstance(task_runner(compute), ThreadPoolTaskRunner)
    remote = task_runner(_dask(compute, dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(SettingsError, match="dask_address needs a protocol"):
        load_settings(environ={}, overrides={"compute": {"dask_address": "10.0.0.5:8786"}})
    with pytest.raises(SettingsError, match="compute.task_runner"):
        load_settings(environ={}, overrides={"compute": {"task_runner": "ray"}})
