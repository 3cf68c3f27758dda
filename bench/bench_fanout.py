"""Per-area training in this process against the same fits fanned out as Prefect tasks on a
local Dask cluster (and, with --pooled, the pooled model locally and through lightgbm.dask),
on the real Kentucky data. Prints seconds and peak memory. Not a test: run it by hand,
    .venv/bin/python bench/bench_fanout.py [--config configs/kentucky.yaml] [--areas 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from datetime import date
from pathlib import Path


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/kentucky.yaml")
    parser.add_argument("--areas", type=int, default=0,
                        help="fit only the first N eligible areas (0: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pooled", action="store_true", help="also time the pooled model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="forewarn-bench-"))
    from configs.settings import load_settings, tool_environment

    cfg = load_settings(args.config, environ={**os.environ, "FOREWARN_HOME": str(tmp)})
    for key, value in tool_environment(cfg).items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from prefect import flow

    from features.areas import read_counties
    from features.customers import read_customer_counts
    from features.dataset import build_dataset
    from features.outages import load_outage_history
    from features.weather import convert_noaa_daily, load_daily_weather
    from flows.training import area_models, task_runner
    from models.experiment import training_set
    from models.train import area_params, fit_areas, fit_pooled

    history = load_outage_history(cfg.outages, cfg.paths.data_dir, tmp)
    convert_noaa_daily(cfg.data_path(cfg.weather.noaa_daily_file), tmp / "ms",
                       cfg.weather.station, years=range(2019, 2025))
    weather = load_daily_weather(cfg.weather, tmp / "ms", date(2019, 11, 1), date(2024, 1, 5))
    data = build_dataset(history, read_counties(cfg.data_path(cfg.areas.counties_file)),
                         read_customer_counts(cfg.data_path(cfg.customers.counts_file)),
                         weather, cfg)
    ts = training_set(data, cfg.features, cfg.model)
    jobs = ts.jobs[: args.areas] if args.areas else ts.jobs
    params = area_params(ts.feature_names, cfg.model)
    job_rows = sum(len(j.x_train) + len(j.x_valid) for j in jobs)
    print(f"{len(ts.rows):,} training rows, {len(ts.jobs)} areas eligible for their own "
          f"model, {len(jobs)} fitted ({job_rows:,} rows); peak so far {peak_mb():.0f} MB")

    @flow(name="bench-warm-up")
    def warm_up() -> None:  # starts the ephemeral Prefect API outside the timings
        return None

    warm_up()
    results: list[tuple[str, float, float]] = []
    t = time.perf_counter()
    local = fit_areas(jobs, params, cfg.model)
    results.append(("per-area, one after another in-process", time.perf_counter() - t,
                    peak_mb()))
    compute = cfg.compute.model_copy(update={"task_runner": "dask",
                                             "n_workers": args.workers})
    t = time.perf_counter()
    fanned = area_models.with_options(task_runner=task_runner(compute))(
        jobs, params, cfg.model)
    results.append((f"per-area, Prefect tasks on a local Dask cluster ({args.workers} x 1 "
                    "threads, incl. start)", time.perf_counter() - t, peak_mb()))
    same = fanned == local
    t = time.perf_counter()  # again: the first timing can include a busy machine's noise
    fit_areas(jobs, params, cfg.model)
    results.append(("per-area, in-process again", time.perf_counter() - t, peak_mb()))
    if args.pooled:
        from models.cluster import dask_client, fit_pooled_dask

        t = time.perf_counter()
        fit_pooled(ts.rows, ts.feature_names, cfg.model)
        results.append(("pooled, in-process", time.perf_counter() - t, peak_mb()))
        t = time.perf_counter()
        with dask_client(compute) as client:
            fit_pooled_dask(ts.rows, ts.feature_names, cfg.model, client)
        results.append(("pooled, lightgbm.dask on a local cluster (incl. start)",
                        time.perf_counter() - t, peak_mb()))
    print(f"{'step':<72}{'seconds':>9}{'peak MB':>10}")
    for name, sec, mb in results:
        print(f"{name:<72}{sec:>9.1f}{mb:>10.0f}")
    print(f"Dask per-area models identical to the in-process ones: {same}")
    print(f"cores: {os.cpu_count()}, LightGBM num_threads: {params.get('num_threads')}")


if __name__ == "__main__":
    main()
