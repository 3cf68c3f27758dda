"""Reading and sampling real forecast grids at every Kentucky county centroid.

For the NWS NDFD CONUS grid (Lambert, 1073 x 689, 2-D lat/lon, 4 leads) and the GFS 2.5°
global grid (all product variables), prints seconds to read, seconds to sample (nearest and
bilinear, 1 and 5 points per county), points and values (point x lead x variable; for a
read, grid cells) per second, and peak memory (ru_maxrss of the process, MB). Not a test:
run it by hand,
    .venv/bin/python bench/bench_forecast_grids.py [--config configs/kentucky.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
import warnings
from pathlib import Path

from configs.settings import load_settings
from features import columns as C
from features.areas import read_counties
from features.forecast_grids import area_points, read_forecast_file, sample_forecast

FILES = {
    "NDFD ds.maxt.bin": "gridded_weather/pygrib_sampledata/ds.maxt.bin",
    "GFS 2.5deg +120h": "gridded_weather/pygrib_sampledata/gfs.t12z.pgrbf120.2p5deg.grib2",
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(repeat: int, fn):  # type: ignore[no-untyped-def]
    """(result, seconds of the first call, fastest seconds of ``repeat`` calls). The first
    call pays one-off costs (cfgrib's plugin and ecCodes definitions, scipy import)."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, times[0], min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/kentucky.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    cfg = load_settings(args.config)
    counties = read_counties(cfg.data_path(cfg.areas.counties_file))
    kentucky = counties[counties[C.EV_COUNTY].str.startswith("21")].rename(
        columns={C.EV_COUNTY: C.AREA})
    print(f"areas: {len(kentucky)} Kentucky county centroids; peak memory before reading "
          f"{peak_mb():.0f} MB")
    print(f"{'grid':17} {'stage':32} {'first s':>8} {'best s':>8} {'points/s':>10} "
          f"{'values/s':>12} {'peak MB':>8}")
    for label, relative in FILES.items():
        path = Path(cfg.paths.data_dir) / relative
        grid, first, best = timed(args.repeat, lambda p=path: read_forecast_file(p))
        cells = sum(grid[v].size for v in grid.data_vars)
        shape = "x".join(str(n) for n in grid.sizes.values())
        print(f"{label:17} {'read ' + shape + f', {len(grid.data_vars)} var':32} {first:8.3f} "
              f"{best:8.3f} {'':>10} {cells / best:12,.0f} {peak_mb():8.0f}")
        for points_per_area in (1, 5):
            points = area_points(kentucky, points_per_area, cfg.forecast.point_radius_km)
            for method in ("nearest", "bilinear"):
                frame, first, best = timed(
                    args.repeat, lambda g=grid, pts=points, m=method: sample_forecast(g, pts, m))
                n_vars = len(grid.data_vars)
                sampled = len(points) * grid.sizes["issue_ts"] * grid.sizes["step"] * n_vars
                stage = f"sample {method}, {len(points)} points"
                print(f"{label:17} {stage:32} {first:8.3f} {best:8.3f} "
                      f"{len(points) / best:10,.0f} {sampled / best:12,.0f} "
                      f"{peak_mb():8.0f}  ({len(frame)} rows)")


if __name__ == "__main__":
    main()
