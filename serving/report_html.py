"""The operator's view of one run: ``report.html``, a single file that opens offline.

It holds the run's header facts (run id, as-of, model version, weather source, data-contract
results, quarantined rows, a link to the run's Great Expectations Data Docs), a map of the
areas coloured by their peak probability over the horizon, the top risk windows, a timeline
of territory risk and the advisory counts by segment, first channel and kind. Everything is
inline (CSS and SVG drawn here, no script, no font or style from the network) and every text
is escaped by the template. It reads only the run's published files, which carry no contact
details.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from configs.settings import CONFIG_DIR
from features.areas import AreaShape
from serving.publish import (
    ADVISORIES_JSONL,
    AREAS_PARQUET,
    HOURLY_PARQUET,
    MANIFEST_JSON,
    WINDOWS_PARQUET,
    read_verified_manifest,
    read_windows,
)

REPORT_HTML = "report.html"
DATA_DOCS_DIR = "data_docs"  # the run's Great Expectations Data Docs site (index.html)
TEMPLATES_DIR = CONFIG_DIR / "templates" / "report"
TOP_WINDOWS = 20  # windows shown in the table (ranked by expected customers)
MAP_WIDTH = 900  # px of the map's drawing; its height follows the areas' extent
TIMELINE_WIDTH, TIMELINE_HEIGHT = 900, 240
NO_DATA_FILL = "#d9d9d9"  # an area with no hourly risk in the run
# ColorBrewer YlOrRd (9 classes): pale yellow for no risk up to dark red at the scale's top
PALETTE = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c",
           "#bd0026", "#800026")
SCALE_TOPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # probability, 0-1


@dataclass(frozen=True)
class MapArea:
    """One area as drawn: SVG path in map pixels, fill from its peak probability (0-1)."""

    area_id: str
    name: str
    peak_prob: float | None
    peak_local: str
    fill: str
    path: str
    has_window: bool


def scale_top(peak: float) -> float:
    """Top of the colour scale: the smallest round probability at or above the highest peak,
    so a quiet run still shows which areas lead."""
    return next((top for top in SCALE_TOPS if peak <= top), 1.0)


def risk_colour(prob: float | None, top: float) -> str:
    """Hex colour of a probability on the scale [0, top], interpolated between PALETTE's
    stops; NO_DATA_FILL for a missing value."""
    if prob is None or math.isnan(prob):
        return NO_DATA_FILL
    x = min(max(prob / top, 0.0), 1.0) * (len(PALETTE) - 1)
    i = min(int(x), len(PALETTE) - 2)
    lo, hi = _rgb(PALETTE[i]), _rgb(PALETTE[i + 1])
    f = x - i
    return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(lo, hi, strict=True))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def risk_map(peaks: pd.DataFrame, shapes: Mapping[str, AreaShape], window_areas: set[str],
             timezones: Mapping[str, str]) -> dict[str, Any]:
    """The map's areas and legend. ``peaks``: area_id, peak_prob (0-1), peak_ts (UTC), one row
    per area of the run; areas without a shape are counted in ``unmapped``. Projection:
    equirectangular with longitudes shrunk by the cosine of the middle latitude."""
    peak_by_area = peaks.set_index("area_id")
    ids = [a for a in peak_by_area.index.astype(str) if a in shapes]
    top = scale_top(float(peaks["peak_prob"].max()) if len(peaks) else 0.0)
    legend = [{"fill": risk_colour(top * k / (len(PALETTE) - 1), top),
               "label": f"{top * k / (len(PALETTE) - 1):.0%}" if k % 2 == 0 else ""}
              for k in range(len(PALETTE))]
    empty = {"areas": [], "width": MAP_WIDTH, "height": 60, "top": top, "legend": legend,
             "unmapped": sorted(set(peak_by_area.index.astype(str)) - set(ids))}
    points = [pt for a in ids for poly in shapes[a].polygons for pt in poly[0]]
    if not points:
        return empty
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    k = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x = max((max(lons) - min(lons)) * k, 1e-9)
    span_y = max(max(lats) - min(lats), 1e-9)
    pad = 6.0
    scale = (MAP_WIDTH - 2 * pad) / span_x
    height = round(span_y * scale + 2 * pad)
    lon0, lat1 = min(lons), max(lats)

    def path(shape: AreaShape) -> str:
        parts = []
        for poly in shape.polygons:
            for ring in poly:
                xy = [f"{pad + (lon - lon0) * k * scale:.1f},{pad + (lat1 - lat) * scale:.1f}"
                      for lon, lat in ring]
                parts.append("M" + "L".join(xy) + "Z")
        return "".join(parts)

    areas = []
    for area in ids:
        row = peak_by_area.loc[area]
        prob = None if pd.isna(row["peak_prob"]) else float(row["peak_prob"])
        areas.append(MapArea(
            area_id=area, name=shapes[area].name, peak_prob=prob,
            peak_local=_local(row["peak_ts"], timezones.get(area)), fill=risk_colour(prob, top),
            path=path(shapes[area]), has_window=area in window_areas))
    areas.sort(key=lambda a: a.has_window)  # outlined areas last, so their outline is on top
    return empty | {"areas": areas, "height": height}


def area_peaks(hourly: pd.DataFrame) -> pd.DataFrame:
    """Per area: the highest hourly probability over the horizon (0-1) and its hour (UTC)."""
    if hourly.empty:
        return pd.DataFrame({"area_id": pd.Series(dtype=str), "peak_prob": [],
                             "peak_ts": pd.Series(dtype="datetime64[ns, UTC]")})
    best = hourly.loc[hourly.groupby("area_id", observed=True)["prob"].idxmax()]
    return best.rename(columns={"prob": "peak_prob", "ts": "peak_ts"})[
        ["area_id", "peak_prob", "peak_ts"]].reset_index(drop=True)


def territory_timeline(hourly: pd.DataFrame, timezone: str | None) -> dict[str, Any]:
    """Territory risk per hour: expected customers affected (sum over areas) as a filled
    line, and expected outage starts (sum of the areas' probabilities) dashed on its own axis;
    times labelled in ``timezone`` (UTC when None)."""
    w, h = TIMELINE_WIDTH, TIMELINE_HEIGHT
    left, right, top_, bottom = 70, 60, 26, 36
    frame = {"width": w, "height": h, "left": left, "right": w - right, "top": top_,
             "bottom": h - bottom, "timezone": timezone or "UTC"}
    if hourly.empty:
        return frame | {"hours": 0}
    per_hour = hourly.groupby("ts").agg(customers=("expected_customers", "sum"),
                                        starts=("prob", "sum")).sort_index()
    n = len(per_hour)
    x_of = [left + (w - left - right) * (i / max(n - 1, 1)) for i in range(n)]
    cmax = _nice_ceiling(float(per_hour["customers"].max()))
    smax = _nice_ceiling(float(per_hour["starts"].max()))

    def y(value: float, vmax: float) -> float:
        return (h - bottom) - (h - bottom - top_) * (value / vmax)

    line = " ".join(f"{x:.1f},{y(v, cmax):.1f}" for x, v in zip(x_of, per_hour["customers"],
                                                                   strict=True))
    area = f"{x_of[0]:.1f},{h - bottom} {line} {x_of[-1]:.1f},{h - bottom}"
    starts = " ".join(f"{x:.1f},{y(v, smax):.1f}" for x, v in zip(x_of, per_hour["starts"],
                                                                     strict=True))
    step = max(1, round(n / 6 / 6) * 6) if n > 12 else 1
    ticks = [{"x": round(x_of[i], 1), "label": _local(ts, timezone, short=True)}
             for i, ts in enumerate(per_hour.index) if i % step == 0]
    y_ticks = [{"y": round(y(cmax * f, cmax), 1), "left": f"{cmax * f:,.0f}",
                "right": f"{smax * f:.2g}"} for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    peak_at = per_hour["customers"].idxmax()
    return frame | {
        "hours": n, "line": line, "area": area, "starts": starts, "x_ticks": ticks,
        "y_ticks": y_ticks, "peak_customers": float(per_hour["customers"].max()),
        "peak_local": _local(peak_at, timezone), "total_starts": float(per_hour["starts"].sum()),
    }


def _nice_ceiling(value: float) -> float:
    """A round number at or above value (1, 2, 2.5, 5 x 10^k); 1 for zero or less."""
    if not value > 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if value <= m * base * (1 + 1e-12))


def window_rows(windows: pd.DataFrame, names: Mapping[str, str],
                timezones: Mapping[str, str], limit: int = TOP_WINDOWS) -> list[dict[str, Any]]:
    """The table's rows, best rank first: times in the area's own time zone, peak probability
    in %, expected customers, drivers in words and the likely outage duration (hours)."""
    rows = []
    for w in windows.sort_values("rank").head(limit).itertuples(index=False):
        tz = timezones.get(str(w.area_id))
        drivers = [d.get("text_en") or d.get("feature", "") for d in (w.drivers or [])
                   if isinstance(d, dict)]
        rows.append({
            "rank": int(w.rank), "area_id": str(w.area_id),
            "area_name": str(getattr(w, "area_name", "") or names.get(str(w.area_id), "")),
            "start": _local(w.start, tz), "end": _local(w.end, tz), "hours": int(w.hours),
            "peak_prob": f"{float(w.peak_prob):.0%}",
            "expected_customers": f"{float(w.expected_customers):,.0f}",
            "drivers": "; ".join(str(d) for d in drivers),
            "duration": _duration(getattr(w, "duration_p50_h", None),
                                  getattr(w, "duration_p10_h", None),
                                  getattr(w, "duration_p90_h", None)),
        })
    return rows


def _duration(p50: Any, p10: Any, p90: Any) -> str:
    if p50 is None or pd.isna(p50):
        return ""
    text = f"about {float(p50):.1f} h"
    if p10 is not None and p90 is not None and not pd.isna(p10) and not pd.isna(p90):
        text += f" (likely {float(p10):.1f}–{float(p90):.1f} h)"
    return text


def advisory_counts(lines: Iterable[str]) -> dict[str, Any]:
    """Advisories by segment, by first channel of their fallback chain and by kind, from the
    lines of ``advisories.jsonl``."""
    segment: Counter[str] = Counter()
    channel: Counter[str] = Counter()
    kind: Counter[str] = Counter()
    for line in lines:
        if not line.strip():
            continue
        adv = json.loads(line)
        chain = adv.get("channels") or ([adv["channel"]] if adv.get("channel") else [])
        segment[str(adv.get("segment") or "unknown")] += 1
        channel[str(chain[0]) if chain else "none"] += 1
        kind[str(adv.get("kind") or "unknown")] += 1
    total = sum(kind.values())

    def table(counts: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "n": n, "share": n / total} for k, n in
                sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    return {"total": total, "by_segment": table(segment), "by_channel": table(channel),
            "by_kind": table(kind)}


def contract_rows(manifest: Mapping[str, Any], docs_dir: Path | None = None
                  ) -> list[dict[str, Any]]:
    """One row per data contract of the run: suite, file name, rows, set aside, failed rules,
    and its Data Docs validation page relative to the run directory (the parent of
    ``docs_dir``) when there is one: GX's index lists its pages through a script from a CDN,
    so offline the pages are reached from here."""
    rows = []
    for c in manifest.get("contracts") or []:
        failures = c.get("failures") or []
        source = Path(str(c.get("source", ""))).name
        page = None
        if docs_dir is not None:
            found = sorted((docs_dir / "validations" / str(c.get("suite", ""))).glob(
                f"*/*/{source}.html"))
            page = found[0].relative_to(docs_dir.parent).as_posix() if found else None
        rows.append({
            "suite": c.get("suite", ""), "source": source, "page": page,
            "rows_in": c.get("rows_in", 0), "rows_quarantined": c.get("rows_quarantined", 0),
            "rules": ", ".join(f"{f.get('column')}: {f.get('rule')} ({f.get('n_failed', 0)})"
                               for f in failures if f.get("column")),
            "ok": all(f.get("passed", True) for f in failures),
        })
    return rows


def driver_rows(card: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The run's weather-driver card (run.json ``weather_drivers``) as table rows."""
    if not card or not card.get("sources"):
        return []
    peaks = card.get("horizon_max") or {}
    return [{"name": name, "source": source, "max": peaks.get(name)}
            for name, source in card["sources"].items()]


def telemetry_view(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The run's telemetry summary (run.json ``telemetry``): a headline and feature ranges."""
    if not summary or not summary.get("assets"):
        return None
    counts = (summary.get("anomalies") or {}).get("counts") or {}
    assets = ", ".join(f"{a['asset_id']} (area {a['area_id']}, {a['hours']:,} h)"
                       for a in summary["assets"])
    flagged = ", ".join(f"{n:,} {rule.replace('_', '-')}" for rule, n in counts.items())
    role = ("a stand-in, not a model input" if summary.get("stand_in")
            else "a model input" if summary.get("model_input") else "not a model input")
    features = [{"name": name, "min": r.get("min"), "median": r.get("median"),
                 "max": r.get("max"), "present": f"{100 * r.get('present_share', 0):.0f} %"}
                for name, r in (summary.get("feature_ranges") or {}).items()]
    return {"headline": f"Telemetry: {assets}; flagged values: {flagged or 'none'} "
                        f"(masked for the features, never dropped); {role}.",
            "features": features}


def _local(ts: Any, timezone: str | None, short: bool = False) -> str:
    """A UTC time in a time zone, e.g. "Sat 1 Jul 14:00 EDT" (short: "Sat 14:00")."""
    if ts is None or pd.isna(ts):
        return ""
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    stamp = stamp.tz_convert(timezone or "UTC")
    if short:
        return f"{stamp:%a %H:%M}"
    return f"{stamp:%a} {stamp.day} {stamp:%b %H:%M} {stamp.tzname()}"


def write_run_report(run_dir: Path, shapes: Mapping[str, AreaShape], *,
                     manifest: Mapping[str, Any] | None = None,
                     data_docs: Path | None = None, top_windows: int = TOP_WINDOWS,
                     templates_dir: Path = TEMPLATES_DIR) -> Path:
    """Write ``<run_dir>/report.html`` from the run's published files and return its path.

    ``manifest``: the run's manifest (default: ``run.json``; the nightly flow passes it
    before writing run.json). ``shapes``: area outlines (see ``features.areas.
    read_area_shapes``). ``data_docs``: the Data Docs index page to link to, if built.
    """
    run_dir = Path(run_dir)
    if manifest is None:
        manifest = json.loads((run_dir / MANIFEST_JSON).read_text(encoding="utf-8"))
    hourly = pd.read_parquet(run_dir / HOURLY_PARQUET,
                             columns=["area_id", "ts", "prob", "expected_customers"])
    hourly = hourly.assign(area_id=hourly["area_id"].astype(str))
    windows = read_windows(run_dir) if (run_dir / WINDOWS_PARQUET).is_file() else pd.DataFrame()
    areas = (pd.read_parquet(run_dir / AREAS_PARQUET) if (run_dir / AREAS_PARQUET).is_file()
             else pd.DataFrame({"area_id": [], "timezone": []}))
    timezones = dict(zip(areas["area_id"].astype(str), areas["timezone"].astype(str),
                         strict=True))
    names = {a: s.name for a, s in shapes.items()}
    territory_tz = (areas["timezone"].mode().iloc[0] if len(areas) else None)
    advisories_path = run_dir / ADVISORIES_JSONL
    if advisories_path.is_file():
        with open(advisories_path, encoding="utf-8") as fh:
            counts = advisory_counts(fh)
    else:
        counts = advisory_counts([])
    window_areas = set(windows["area_id"].astype(str)) if len(windows) else set()
    model = manifest.get("model") or {}
    docs_link = None
    if data_docs is not None and Path(data_docs).is_file():
        docs_link = Path(data_docs).resolve().relative_to(run_dir.resolve()).as_posix()
    context = {
        "run_id": manifest.get("run_id", run_dir.name),
        "as_of": manifest.get("as_of", ""),
        "as_of_local": _local(manifest.get("as_of"), territory_tz),
        "created": manifest.get("created_utc", ""),
        "profile": manifest.get("profile", ""),
        "horizon_h": manifest.get("horizon_h", ""),
        "model_name": model.get("name", ""), "model_version": model.get("version", ""),
        "gate": "; ".join((model.get("gate") or {}).get("reasons") or []),
        "weather_source": manifest.get("weather_source", ""),
        "weather_note": manifest.get("weather_note", ""),
        "quarantined_rows": manifest.get("quarantined_rows", 0),
        "contracts": contract_rows(manifest, run_dir / DATA_DOCS_DIR if docs_link else None),
        "data_docs": docs_link,
        "n_windows": len(windows),
        "windows": window_rows(windows, names, timezones, top_windows) if len(windows) else [],
        "map": risk_map(area_peaks(hourly), shapes, window_areas, timezones),
        "timeline": territory_timeline(hourly, territory_tz),
        "advisories": counts,
        "decided": (manifest.get("advisories") or {}).get("decided", counts["total"]),
        "drivers": driver_rows(manifest.get("weather_drivers")),
        "drivers_in_model": bool((manifest.get("weather_drivers") or {}).get("in_model")),
        "telemetry": telemetry_view(manifest.get("telemetry")),
        "generated_utc": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
    }
    html = _environment(str(templates_dir)).get_template("run_report.html.j2").render(**context)
    out = run_dir / REPORT_HTML
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


def _environment(templates_dir: str) -> Environment:
    return Environment(loader=FileSystemLoader(templates_dir), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def shapes_needed(run_dir: Path) -> Sequence[str]:
    """Area ids a run's map draws: every area of its hourly risk."""
    ids = pd.read_parquet(Path(run_dir) / HOURLY_PARQUET, columns=["area_id"])["area_id"]
    return sorted(ids.astype(str).unique())


VALIDATIONS_JSON = "contract_validations.json"  # the GX validation results Data Docs render


@dataclass(frozen=True)
class RunViews:
    """What ``publish_run_views`` wrote into a run directory (names relative to it)."""

    report: str
    data_docs: str | None  # the Data Docs index page; None when the run has no validations
    validations: str | None  # contract_validations.json, when written or found
    seconds: float  # wall time of the whole build

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report, "data_docs": self.data_docs,
                "validations": self.validations, "seconds": self.seconds}


def publish_run_views(run_dir: Path, counties_file: Path, *,
                      validations: Sequence[dict] | None = None,
                      manifest: Mapping[str, Any] | None = None) -> RunViews:
    """The operator's views of a run: Great Expectations Data Docs of its contract
    validations under ``data_docs/`` and ``report.html`` linking to them.

    ``validations``: ``ContractResult.validation_record()``s of the run, saved to
    ``contract_validations.json``; None rebuilds from that file (``forewarn report-html``),
    and a run without it gets the report alone. ``counties_file``: the county polygons the
    map draws (cell areas need none). ``manifest``: as in ``write_run_report``.
    """
    from features.areas import read_area_shapes
    from features.contracts import write_data_docs
    from serving.publish import write_json

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if manifest is None:  # a rebuild: only from outputs that still match run.json
        manifest = read_verified_manifest(run_dir)
    saved = run_dir / VALIDATIONS_JSON
    if validations is not None:
        write_json(saved, {"validations": list(validations)})
    records = (json.loads(saved.read_text(encoding="utf-8"))["validations"]
               if saved.is_file() else [])
    run_id = str(manifest.get("run_id") or run_dir.name)
    index = write_data_docs(records, run_dir / DATA_DOCS_DIR, run_id) if records else None
    shapes = read_area_shapes(counties_file, shapes_needed(run_dir))
    report = write_run_report(run_dir, shapes, manifest=manifest, data_docs=index)
    return RunViews(
        report=report.name,
        data_docs=index.relative_to(run_dir).as_posix() if index else None,
        validations=saved.name if saved.is_file() else None,
        seconds=round(time.perf_counter() - started, 2))
