"""Deciding advisories for 1,000,000 synthetic customers (target: at most 30 s).

Builds a synthetic registry (the product's own generator, sample fraction 1) over ``--areas``
areas, a storm's worth of risk windows (``--windows-per-area`` in every area, ranked, peak
probabilities 0.2-0.95, some with a restoration-time estimate), then times
``decide_advisories`` with the shipped policy (control group included) from an empty history,
and again with the first pass as history (a rerun: nothing new). Prints seconds,
customers/s, advisories and peak memory. Not a test: run it by hand,
    .venv/bin/python bench/bench_advise.py [--customers 1000000]
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np
import pandas as pd

from configs.settings import load_settings
from features.customers import generate_registry
from serving.advisories import decide_advisories, history_from_advisories

AS_OF = pd.Timestamp("2023-07-01T16:00:00Z")  # noon in Kentucky, outside quiet hours


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_windows(area_ids: list[str], per_area: int, seed: int = 7) -> pd.DataFrame:
    """Risk windows of a large storm: ``per_area`` windows in each area over the next 72 h."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, area in enumerate(area_ids):
        for j in range(per_area):
            start = AS_OF + pd.Timedelta(hours=int(rng.integers(2, 66)))
            hours = int(rng.integers(1, 10))
            peak = float(rng.uniform(0.2, 0.95))
            rows.append({
                "window_id": f"{area}-{j}", "area_id": area, "area_name": f"Area {area}",
                "start": start, "end": start + pd.Timedelta(hours=hours), "hours": hours,
                "peak_prob": peak, "mean_prob": peak * 0.7,
                "expected_customers": float(rng.uniform(10, 5000)),
                "drivers": [{"feature": "prcp_mm", "text_en": f"daily rain {20 + i % 30} mm",
                             "text_zh": f"日降雨量{20 + i % 30}毫米", "contribution": 0.3},
                            {"feature": "recent", "text_en": f"{j + 3} outages in this area in "
                             "the last 24 h", "text_zh": f"过去24小时本地区停电{j + 3}次",
                             "contribution": 0.2}],
                "rank": 0, "run_id": "bench",
                "duration_p50_h": 3.0 if i % 2 else np.nan, "duration_p10_h": 1.0,
                "duration_p90_h": 8.0,
            })
    frame = pd.DataFrame(rows)
    frame["rank"] = frame["expected_customers"].rank(ascending=False, method="first").astype(int)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--areas", type=int, default=120)
    parser.add_argument("--windows-per-area", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_settings("configs/kentucky.yaml")
    per_area = -(-args.customers // args.areas)
    area_ids = [f"21{i:03d}" for i in range(1, 2 * args.areas, 2)][: args.areas]
    areas = pd.DataFrame({
        "area_id": area_ids,
        "customers_served": per_area,
        "timezone": [cfg.customers.timezone_by_area.get(a, "America/New_York") for a in area_ids],
    })
    customers_cfg = cfg.customers.model_copy(update={"sample_fraction": 1.0,
                                                     "max_per_area": per_area})
    t = time.perf_counter()
    customers = generate_registry(areas, customers_cfg).head(args.customers)
    print(f"registry: {len(customers):,} synthetic customers in {len(areas)} areas "
          f"({time.perf_counter() - t:.1f} s, not part of the decision)")
    windows = make_windows(area_ids, args.windows_per_area)
    policy = cfg.advisories.model_copy(update={"max_areas": len(area_ids)})

    t = time.perf_counter()
    first = decide_advisories(windows, customers, None, policy, AS_OF)
    seconds = time.perf_counter() - t
    kinds = pd.Series([a.kind for a in first]).value_counts().to_dict()
    print(f"decide (empty history): {seconds:.1f} s, {len(customers) / seconds:,.0f} customers/s,"
          f" {len(windows)} windows, {len(first):,} advisories {kinds}, "
          f"peak memory {peak_mb():,.0f} MB")

    history = history_from_advisories(first)
    t = time.perf_counter()
    again = decide_advisories(windows, customers, history, policy, AS_OF)
    seconds = time.perf_counter() - t
    print(f"decide (rerun, {len(history):,} in history): {seconds:.1f} s, "
          f"{len(customers) / seconds:,.0f} customers/s, {len(again)} new advisories, "
          f"peak memory {peak_mb():,.0f} MB")


if __name__ == "__main__":
    main()
