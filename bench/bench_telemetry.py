"""Telemetry throughput: reading, contracts (Great Expectations row rules, then the gap,
flat-line and spike checks) and features, on the real ETTh1 file and on a generated
long-format frame of many assets (100 transformers x 2 years by default, written to a
temporary parquet file and read back; synthetic, not derived from ETT).

Prints, per stage, seconds, long-format rows per second and peak memory (ru_maxrss of the
process, MB). Not a test: run it by hand,
    .venv/bin/python bench/bench_telemetry.py [--assets 100] [--years 2] [--signals 3]
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from configs.settings import TelemetryAssetSettings, load_settings
from features import columns as C
from features import telemetry as T
from features.contracts import _gx

ETT_FILE = "ett_transformer/ETTh1.csv"
GENERATED_SIGNALS = ("load_hufl", "load_hull", "oil_temp", "load_mufl", "load_mull",
                     "load_lufl", "load_lull")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(assets: int, years: int, signals: int, seed: int = 1) -> pd.DataFrame:
    """Long-format telemetry: daily and yearly load cycles with noise, oil temperature
    following load and season, per asset a different scale; UTC hours."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2020-01-01", periods=24 * 365 * years, freq="h", tz="UTC")
    h = np.arange(len(hours))
    day = np.sin(2 * np.pi * (h % 24 - 6) / 24)
    season = np.cos(2 * np.pi * h / (24 * 365.25))
    parts = []
    for a in range(assets):
        scale = rng.uniform(5, 20)
        load = scale * (1 + 0.3 * day + 0.2 * season) + rng.normal(0, 0.05 * scale, len(h))
        values = {
            "load_hufl": load,
            "load_hull": 0.3 * load + rng.normal(0, 0.3, len(h)),
            "oil_temp": 15 + 12 * season + 0.8 * load + rng.normal(0, 1, len(h)),
            "load_mufl": 0.6 * load, "load_mull": 0.2 * load,
            "load_lufl": 0.4 * load, "load_lull": 0.1 * load,
        }
        for signal in GENERATED_SIGNALS[:signals]:
            parts.append(pd.DataFrame({
                C.TEL_ASSET: f"tx-{a:03d}", C.TS: hours, C.TEL_SIGNAL: signal,
                C.TEL_VALUE: values[signal],
                C.TEL_UNIT: "degC" if signal == "oil_temp" else "MW"}))
    return pd.concat(parts, ignore_index=True)


def run(name: str, read, cfg) -> None:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    long = read()
    t_read = time.perf_counter() - t
    rows = len(long)
    t = time.perf_counter()
    clean, contract = T.check_telemetry(long, cfg, source=name)
    t_gx = time.perf_counter() - t
    t = time.perf_counter()
    wide = T.hourly_wide(clean)
    anomalies = T.detect_anomalies(wide, cfg, source=name)
    t_anom = time.perf_counter() - t
    t = time.perf_counter()
    model = T.OilTemperatureModel(cfg.oil_fit_hours, cfg.oil_ridge).fit(anomalies.masked)
    per_asset = {a: T.asset_features(f, cfg, model, a) for a, f in anomalies.masked.items()}
    area = T.area_features(per_asset, cfg.assets)
    t_feat = time.perf_counter() - t
    total = t_read + t_gx + t_anom + t_feat
    for stage, seconds in (("read", t_read), ("row contract (GX)", t_gx),
                           ("gaps/flat-lines/spikes", t_anom), ("oil model + features", t_feat),
                           ("total", total)):
        print(f"{name:28} {stage:24} {seconds:8.2f} {rows / seconds:12,.0f} {peak_mb():8.0f}")
    print(f"{'':28} rows {rows:,}, assets {len(wide)}, area-hours {len(area):,}, "
          f"quarantined {contract.rows_quarantined}, anomalies {anomalies.counts()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/kentucky.yaml")
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--signals", type=int, default=3, choices=range(1, 8),
                        help="signals per generated asset (3: the ones the features use)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    settings = load_settings(args.config)
    t = time.perf_counter()
    _gx()
    print(f"great_expectations import (once per process): {time.perf_counter() - t:.1f} s")
    print(f"{'input':28} {'stage':24} {'seconds':>8} {'rows/s':>12} {'peak MB':>8}")

    ett_cfg = settings.telemetry
    asset = ett_cfg.assets[0] if ett_cfg.assets else TelemetryAssetSettings(
        asset_id="ett-h1", area_id="21067", timezone="Asia/Shanghai")
    ett_cfg = ett_cfg.model_copy(update={"assets": (asset,)})
    run("ETTh1 (real)", lambda: T.read_ett(settings.data_path(ETT_FILE), asset), ett_cfg)

    assets = tuple(TelemetryAssetSettings(asset_id=f"tx-{a:03d}", area_id=f"area-{a % 25:02d}")
                   for a in range(args.assets))
    gen_cfg = settings.telemetry.model_copy(update={"assets": assets, "adapter": "long"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "telemetry.parquet"
        generate(args.assets, args.years, args.signals).to_parquet(path, index=False)
        label = f"{args.assets} assets x {args.years} y x {args.signals} sig"
        run(label, lambda: T.read_long(path), gen_cfg)


if __name__ == "__main__":
    main()
