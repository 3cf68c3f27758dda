"""Stage timings of the nightly pipeline on the real Kentucky data, without Prefect.

Prints seconds, rows/s and peak memory per stage. Not a test: run it by hand,
    .venv/bin/python bench/bench_pipeline.py [--config configs/kentucky.yaml]
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

from configs.settings import load_settings
from features.areas import read_counties
from features.build import feature_names, make_rows, sample_labelled_rows
from features.customers import generate_registry, read_customer_counts
from features.dataset import build_dataset
from features.outages import load_outage_history
from features.weather import convert_noaa_daily, load_daily_weather
from models.experiment import fit_and_evaluate
from models.scoring import score_horizon
from models.windows import build_windows
from serving.advisories import decide_advisories


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/kentucky.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_settings(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="forewarn-bench-"))
    rows: list[tuple[str, float, int, float]] = []

    def stage(name: str, n_rows: int, t0: float) -> None:
        rows.append((name, time.perf_counter() - t0, n_rows, peak_mb()))

    t = time.perf_counter()
    history = load_outage_history(cfg.outages, cfg.paths.data_dir, tmp)
    stage("read + check outages (events)", len(history.events), t)
    t = time.perf_counter()
    convert_noaa_daily(cfg.data_path(cfg.weather.noaa_daily_file), tmp / "ms",
                       cfg.weather.station, years=range(2019, 2025))
    weather = load_daily_weather(cfg.weather, tmp / "ms", date(2019, 11, 1), date(2024, 1, 5))
    stage("weather mirror + meteostat load (days)", len(weather), t)
    counts = read_customer_counts(cfg.data_path(cfg.customers.counts_file))
    counties = read_counties(cfg.data_path(cfg.areas.counties_file))
    t = time.perf_counter()
    data = build_dataset(history, counties, counts, weather, cfg)
    stage("areas + hourly panel (area-hours)", data.panel.counts.size, t)
    t = time.perf_counter()
    a, tt, lead = sample_labelled_rows(data.panel, pd.Timestamp(cfg.model.train_start),
                                       pd.Timestamp(cfg.model.train_end), cfg.model.horizon_h, 7)
    from features.build import Climatology

    clim = Climatology.fit(data.panel, pd.Timestamp(cfg.model.train_end))
    frame = make_rows(data.panel, data.areas, data.weather_hourly, clim, a, tt, lead, cfg.features)
    stage(f"feature rows ({len(feature_names(cfg.features))} features)", len(frame), t)
    del frame
    t = time.perf_counter()
    model, metrics = fit_and_evaluate(data, cfg.features, cfg.model)
    stage("train + evaluate (training rows)", metrics["training"]["rows_train"], t)
    as_of = pd.Timestamp("2023-06-25", tz="UTC")
    t = time.perf_counter()
    hourly, expl = score_horizon(model, data.panel, data.areas, data.weather_hourly, as_of,
                                 cfg.features)
    windows = build_windows(hourly, data.areas, expl, cfg.windows,
                            {"model_version": "bench", "run_id": "bench",
                             "weather_source": "replay"})
    stage("score 72 h + windows (area-hours)", len(hourly), t)
    t = time.perf_counter()
    customers = generate_registry(data.areas, cfg.customers)
    advisories = decide_advisories(windows, customers, None, cfg.advisories, as_of)
    stage(f"registry + advisories ({len(advisories)} advisories; customers)", len(customers), t)

    print(f"{'stage':<58}{'seconds':>9}{'rows':>12}{'rows/s':>12}{'peak MB':>10}")
    for name, sec, n, mb in rows:
        print(f"{name:<58}{sec:>9.2f}{n:>12,}{n / sec if sec else 0:>12,.0f}{mb:>10.0f}")
    o = metrics["overall"]
    print(f"2023: model ROC-AUC {o['model_roc_auc']:.3f} (climatology "
          f"{o['climatology_roc_auc']:.3f}), Brier skill {o['brier_skill']:+.3f}")


if __name__ == "__main__":
    main()
