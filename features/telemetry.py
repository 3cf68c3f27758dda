"""Equipment telemetry: readers, contracts, anomaly checks and features per asset and hour.

Telemetry arrives in a long format, one row per (asset_id, ts, signal, value[, unit]) with ``ts``
in UTC, or through an adapter for a source's own layout. The ETT adapter reads the ETT-small
files (``ETTh1.csv``: ``date``, ``HUFL``, ``HULL``, ``MUFL``, ``MULL``, ``LUFL``, ``LULL``,
``OT``) exactly as published (CC BY-ND: never write altered copies) and maps their columns to
the product's signals:

=============  ==========  ==============================================================
signal         ETT column  meaning and unit
=============  ==========  ==============================================================
load_hufl      HUFL        high-voltage side "useful" load; unit not published (``ett``)
load_hull      HULL        high-voltage side "useless" load; unit not published (``ett``)
load_mufl      MUFL        middle-voltage side useful load (``ett``)
load_mull      MULL        middle-voltage side useless load (``ett``)
load_lufl      LUFL        low-voltage side useful load (``ett``)
load_lull      LULL        low-voltage side useless load (``ett``)
oil_temp       OT          transformer oil temperature, °C (``degC``)
=============  ==========  ==============================================================

ETT timestamps are naive local times of a province of China; the asset's ``timezone`` (config)
turns them into UTC.

Checks, in two layers:

* row rules through Great Expectations (``TELEMETRY_SUITE`` via ``features.contracts.check``):
  keys present, known signal, a unit known for the signal, one value per (asset, signal, hour),
  values present, oil temperature physically plausible once in °C. Failing rows are
  quarantined (written to ``<quarantine>/telemetry.csv`` and counted), never dropped silently.
* time-series rules in numpy/pandas, which no row rule can express (``detect_anomalies``):
  ``gap`` (an hour of the asset's span without a usable value), ``flat_line`` (the value has
  not changed for ``flat_line_h`` hours, this hour included) and ``spike`` (a one-hour jump
  far outside the past week's hourly changes, and far from the past day's median). All three
  look only at the hour and the hours before it, so flagging is causal. Flagged values are
  masked (NaN) for the features, listed in an anomaly table (file, asset, signal, rule, hour,
  value) and written to ``<quarantine>/telemetry_anomalies.csv``.

Features per asset and hour t use nothing after t (``asset_features``): loading relative to the
asset's own normal (median of the past ``normal_window_h`` hours), hours of the last 24 above
the past loading quantile, oil temperature above what load and ambient temperature explain
(``OilTemperatureModel``, a ridge regression learned on the asset's first ``oil_fit_hours``
and reported only after them), rates of change, and the share of missing hours.
``area_features`` aggregates assets to the canonical ``(area_id, ts, tel_*)`` frame;
``join_telemetry`` adds those columns to any area frame, NaN where an area has no telemetry.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs.settings import TelemetryAssetSettings, TelemetrySettings
from features import columns as C
from features.contracts import ContractError, ContractResult, Rule, Suite, check

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ signals and units

LOAD = "load"
TEMPERATURE = "temperature"
OIL_TEMP = "oil_temp"
ETT_UNIT = "ett"  # ETT loads: the authors do not publish the unit; kept as published

# signal -> kind
SIGNALS: dict[str, str] = {
    "load": LOAD,  # apparent loading of the asset, when a source sends it directly
    "load_hufl": LOAD,
    "load_hull": LOAD,
    "load_mufl": LOAD,
    "load_mull": LOAD,
    "load_lufl": LOAD,
    "load_lull": LOAD,
    OIL_TEMP: TEMPERATURE,
}
ETT_SIGNALS = {
    "HUFL": "load_hufl",
    "HULL": "load_hull",
    "MUFL": "load_mufl",
    "MULL": "load_mull",
    "LUFL": "load_lufl",
    "LULL": "load_lull",
    "OT": OIL_TEMP,
}
ETT_DATE = "date"
ETT_UNITS = {LOAD: ETT_UNIT, TEMPERATURE: "degC"}

# kind -> unit -> (canonical unit, scale, offset): canonical = value * scale + offset
UNITS: dict[str, dict[str, tuple[str, float, float]]] = {
    LOAD: {
        ETT_UNIT: (ETT_UNIT, 1.0, 0.0),
        "MW": ("MW", 1.0, 0.0),
        "kW": ("MW", 1e-3, 0.0),
        "MVA": ("MVA", 1.0, 0.0),
        "kVA": ("MVA", 1e-3, 0.0),
        "A": ("A", 1.0, 0.0),
    },
    TEMPERATURE: {
        "degC": ("degC", 1.0, 0.0),
        "degF": ("degC", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
        "K": ("degC", 1.0, -273.15),
    },
}
DEFAULT_UNITS = {LOAD: "MW", TEMPERATURE: "degC"}
OIL_MIN_C, OIL_MAX_C = -40.0, 150.0  # mineral oil in service; outside is a unit or sensor error

# helper columns the row contract reads
_SIGNAL_UNIT = "signal_unit"
_FIRST_OF_KEY = "first_of_key"
_OIL_C = "oil_temp_c"

TELEMETRY_SUITE = Suite(
    name="telemetry",
    required_columns=(C.TEL_ASSET, C.TS, C.TEL_SIGNAL, C.TEL_VALUE, C.TEL_UNIT),
    rules=(
        Rule(C.TEL_ASSET, "not_null", hint="every row needs the asset id"),
        Rule(C.TS, "not_null", hint="timestamps as ISO-8601 UTC, e.g. 2017-01-01T00:00:00Z"),
        Rule(C.TEL_SIGNAL, "in_set", values=tuple(SIGNALS),
             hint=f"signals the product knows: {', '.join(SIGNALS)}"),
        Rule(_SIGNAL_UNIT, "in_set",
             values=tuple(f"{s}:{u}" for s, kind in SIGNALS.items() for u in UNITS[kind]),
             hint="unit not known for this signal (loads: ett, MW, kW, MVA, kVA, A; "
                  "temperatures: degC, degF, K)"),
        Rule(_FIRST_OF_KEY, "in_set", values=(True,),
             hint="more than one value for the same asset, signal and hour"),
        Rule(C.TEL_VALUE, "not_null", hint="a missing reading: leave the row out or fill it"),
        Rule(_OIL_C, "between", min=OIL_MIN_C, max=OIL_MAX_C,
             hint="oil temperature outside -40..150 °C: wrong unit (°F or K labelled degC?) "
                  "or a broken sensor"),
    ),
)

# anomaly rules (time series)
GAP = "gap"
FLAT_LINE = "flat_line"
SPIKE = "spike"
ANOMALY_RULES = (GAP, FLAT_LINE, SPIKE)
N_EXAMPLES = 5
SPIKE_LEVEL_WINDOW_H = 24  # past hours whose median a spike must also stand out from


# ------------------------------------------------------------------ readers


def read_ett(path: Path, asset: TelemetryAssetSettings) -> pd.DataFrame:
    """An ETT-small file (e.g. ETTh1.csv) as read, in the long format: ``asset_id``, ``ts``
    (UTC, from the file's local times in ``asset.timezone``), ``signal``, ``value``, ``unit``
    (``ett`` for loads, whose unit is not published; ``degC`` for oil temperature)."""
    raw = pd.read_csv(path)
    missing = [c for c in (ETT_DATE, *ETT_SIGNALS) if c not in raw.columns]
    if missing:
        raise ContractError(
            f"ETT file {path} lacks columns {missing}; columns present: {list(raw.columns)}")
    local = pd.to_datetime(raw[ETT_DATE], errors="coerce")
    ts = local.dt.tz_localize(asset.timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(
        "UTC")
    parts = []
    for column, signal in ETT_SIGNALS.items():
        parts.append(pd.DataFrame({
            C.TEL_ASSET: asset.asset_id,
            C.TS: ts,
            C.TEL_SIGNAL: signal,
            C.TEL_VALUE: pd.to_numeric(raw[column], errors="coerce").astype("float64"),
            C.TEL_UNIT: ETT_UNITS[SIGNALS[signal]],
        }))
    return pd.concat(parts, ignore_index=True)


def read_long(path: Path) -> pd.DataFrame:
    """A long-format telemetry file (CSV, optionally gzip, or parquet) with columns
    ``asset_id, ts, signal, value`` and optionally ``unit`` (default: ``MW`` for loads,
    ``degC`` for temperatures). ``ts`` is UTC; naive timestamps are read as UTC."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return normalise_long(frame)


def normalise_long(frame: pd.DataFrame) -> pd.DataFrame:
    """The long format with typed columns (a new frame): ``ts`` as UTC, ``value`` float64,
    ``unit`` filled with the signal's default unit where absent."""
    out = frame.copy()
    if C.TS in out.columns:
        out[C.TS] = pd.to_datetime(out[C.TS], utc=True, errors="coerce")
    if C.TEL_VALUE in out.columns:
        out[C.TEL_VALUE] = pd.to_numeric(out[C.TEL_VALUE], errors="coerce").astype("float64")
    if C.TEL_SIGNAL in out.columns:
        default = out[C.TEL_SIGNAL].map(SIGNALS).map(DEFAULT_UNITS)
        unit = out[C.TEL_UNIT] if C.TEL_UNIT in out.columns else pd.Series(pd.NA, index=out.index)
        out[C.TEL_UNIT] = unit.astype("object").where(unit.notna(), default)
    return out


def read_telemetry(cfg: TelemetrySettings, data_dir: Path) -> tuple[pd.DataFrame, Path]:
    """The configured telemetry file in the long format, and its path."""
    path = Path(cfg.file) if Path(cfg.file).is_absolute() else data_dir / cfg.file
    if cfg.adapter == "ett":
        if len(cfg.assets) != 1:
            raise ValueError(
                f"the ETT adapter reads one transformer per file; telemetry.assets lists "
                f"{len(cfg.assets)} assets")
        return read_ett(path, cfg.assets[0]), path
    return read_long(path), path


# ------------------------------------------------------------------ row contract (GX)


def contract_frame(long: pd.DataFrame) -> pd.DataFrame:
    """The long rows plus the helper columns the row contract reads (a new frame)."""
    out = long.copy()
    signal = out[C.TEL_SIGNAL].astype("object")
    out[_SIGNAL_UNIT] = signal.astype(str) + ":" + out[C.TEL_UNIT].astype(str)
    hour = out[C.TS].dt.floor("h")
    out[_FIRST_OF_KEY] = ~pd.DataFrame(
        {"a": out[C.TEL_ASSET], "s": signal, "h": hour}).duplicated(keep="first")
    kind = signal.map(SIGNALS)
    out[_OIL_C] = to_canonical(out[C.TEL_VALUE], kind, out[C.TEL_UNIT]).where(
        signal == OIL_TEMP)
    return out


def to_canonical(values: pd.Series, kind: pd.Series, unit: pd.Series) -> pd.Series:
    """Values in their kind's canonical unit (°C for temperatures, MW or MVA for loads given in
    k-units); NaN where the (kind, unit) pair is unknown."""
    scale = pd.Series(np.nan, index=values.index)
    offset = pd.Series(np.nan, index=values.index)
    for k, units in UNITS.items():
        for u, (_, s, o) in units.items():
            hit = (kind == k) & (unit == u)
            scale[hit] = s
            offset[hit] = o
    return values * scale + offset


def canonical_unit(kind: pd.Series, unit: pd.Series) -> pd.Series:
    """The canonical unit name of each row (None where the pair is unknown)."""
    lookup = {(k, u): cu for k, units in UNITS.items() for u, (cu, _, _) in units.items()}
    return pd.Series([lookup.get((k, u)) for k, u in zip(kind, unit, strict=True)],
                     index=kind.index, dtype="object")


def check_telemetry(
    long: pd.DataFrame,
    cfg: TelemetrySettings,
    *,
    source: str | Path,
    quarantine_dir: Path | None = None,
) -> tuple[pd.DataFrame, ContractResult]:
    """Validate long telemetry with ``TELEMETRY_SUITE`` (Great Expectations) and return the
    rows that pass, in canonical units (°C; MW/MVA for k-units), and the contract result.
    Rows of assets not in ``cfg.assets`` are kept out and logged. A signal whose canonical
    units differ within one asset stops with ``ContractError``."""
    frame = contract_frame(long)
    known = {a.asset_id for a in cfg.assets}
    if known:
        unknown = ~frame[C.TEL_ASSET].isin(known) & frame[C.TEL_ASSET].notna()
        if unknown.any():
            log.warning("telemetry %s: %d rows of assets not in telemetry.assets (%s) left out",
                        source, int(unknown.sum()),
                        sorted(frame.loc[unknown, C.TEL_ASSET].astype(str).unique())[:5])
            frame = frame[~unknown]
    passed, result = check(frame, TELEMETRY_SUITE, source=source, quarantine_dir=quarantine_dir,
                           show_columns=(C.TEL_ASSET, C.TS, C.TEL_SIGNAL, C.TEL_VALUE,
                                         C.TEL_UNIT))
    kind = passed[C.TEL_SIGNAL].map(SIGNALS)
    out = passed[[C.TEL_ASSET, C.TS, C.TEL_SIGNAL]].copy()
    out[C.TEL_VALUE] = to_canonical(passed[C.TEL_VALUE], kind, passed[C.TEL_UNIT])
    out[C.TEL_UNIT] = canonical_unit(kind, passed[C.TEL_UNIT])
    mixed = out.groupby([C.TEL_ASSET, C.TEL_SIGNAL])[C.TEL_UNIT].nunique()
    mixed = mixed[mixed > 1]
    if len(mixed):
        asset, signal = mixed.index[0]
        units = sorted(out.loc[(out[C.TEL_ASSET] == asset) & (out[C.TEL_SIGNAL] == signal),
                               C.TEL_UNIT].unique())
        raise ContractError(
            f"data contract 'telemetry' failed for {source}\n  asset {asset!r}, signal "
            f"{signal!r}: units {units} cannot be converted into one another\n"
            f"  hint: send one physical quantity per signal (power or current, not both)",
            result)
    return out.reset_index(drop=True), result


# ------------------------------------------------------------------ hourly grid and anomalies


def hourly_wide(long: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per asset, a frame indexed by every UTC hour from its first to its last reading, one
    column per signal (canonical units), NaN where the hour has no value. Readings inside an
    hour are averaged onto the hour start."""
    out: dict[str, pd.DataFrame] = {}
    hour = long[C.TS].dt.floor("h")
    frame = long.assign(**{C.TS: hour})
    for asset, rows in frame.groupby(C.TEL_ASSET, sort=True):
        wide = rows.pivot_table(index=C.TS, columns=C.TEL_SIGNAL, values=C.TEL_VALUE,
                                aggfunc="mean", dropna=False)
        grid = pd.date_range(wide.index.min(), wide.index.max(), freq="h", name=C.TS)
        wide = wide.reindex(grid)
        wide.columns = wide.columns.astype(str)
        wide.columns.name = None
        out[str(asset)] = wide.astype("float64")
    return out


def flat_line_mask(values: pd.Series, hours: int) -> pd.Series:
    """True where the value equals each of the previous ``hours - 1`` values (a run of at least
    ``hours`` identical readings, ending at this hour). A missing hour breaks a run."""
    x = values.to_numpy()
    same = np.zeros(len(x), dtype=bool)
    same[1:] = x[1:] == x[:-1]  # NaN never equals
    run_id = np.cumsum(~same)
    position = pd.Series(run_id).groupby(run_id).cumcount().to_numpy() + 1
    return pd.Series((position >= hours) & ~np.isnan(x), index=values.index)


def spike_mask(values: pd.Series, k: float, window_h: int) -> pd.Series:
    """True where the one-hour change exceeds ``k`` robust units of the hourly changes of the
    past ``window_h`` hours (1.4826 × median |change|) and the value also lies that far from the
    median of the past 24 hours. Uses this hour and earlier ones only; NaN hours (gaps,
    flat-lines) are left out of the scale."""
    step = values.diff()
    past_steps = step.abs().shift(1)
    scale = 1.4826 * past_steps.rolling(window_h, min_periods=window_h // 4).median()
    level = values.shift(1).rolling(SPIKE_LEVEL_WINDOW_H,
                                    min_periods=SPIKE_LEVEL_WINDOW_H // 4).median()
    limit = k * scale
    hit = (step.abs() > limit) & ((values - level).abs() > limit) & (scale > 0)
    return hit.fillna(False).astype(bool)


@dataclass
class Anomalies:
    """What the time-series checks found.

    ``table``: one row per flagged (asset_id, signal, ts) with the rule and the raw value;
    ``masked``: per asset, the hourly frame with flagged values set to NaN (what features see);
    ``flags``: per asset, per rule, a boolean frame like the hourly frame."""

    table: pd.DataFrame
    masked: dict[str, pd.DataFrame]
    flags: dict[str, dict[str, pd.DataFrame]]
    source: str = ""

    def summary(self) -> list[dict[str, Any]]:
        """One entry per (asset, signal, rule) with anomalies: count, first and last hour and
        up to five example rows (file, asset, signal, rule, ts, value)."""
        out = []
        for (asset, signal, rule), rows in self.table.groupby(
                [C.TEL_ASSET, C.TEL_SIGNAL, "rule"], sort=True):
            examples = rows.head(N_EXAMPLES)
            out.append({
                "file": self.source, "asset_id": asset, "signal": signal, "rule": rule,
                "n": int(len(rows)), "first": rows[C.TS].min().isoformat(),
                "last": rows[C.TS].max().isoformat(),
                "examples": [{"ts": t.isoformat(),
                              "value": None if pd.isna(v) else round(float(v), 4)}
                             for t, v in zip(examples[C.TS], examples[C.TEL_VALUE],
                                             strict=True)],
            })
        return out

    def counts(self) -> dict[str, int]:
        """Flagged values per rule."""
        counts = self.table.groupby("rule").size()
        return {rule: int(counts.get(rule, 0)) for rule in ANOMALY_RULES}


def detect_anomalies(
    wide: Mapping[str, pd.DataFrame],
    cfg: TelemetrySettings,
    *,
    source: str = "",
    quarantine_dir: Path | None = None,
) -> Anomalies:
    """Gaps, flat-lines and spikes per asset and signal (see the module docstring); flagged
    values are masked, tabled, written to ``<quarantine_dir>/telemetry_anomalies.csv`` and
    logged. Raises ``ContractError`` when the flagged share of an asset's signal hours exceeds
    ``cfg.max_anomaly_share``."""
    tables = []
    masked: dict[str, pd.DataFrame] = {}
    flags: dict[str, dict[str, pd.DataFrame]] = {}
    for asset, frame in wide.items():
        gap = frame.isna()
        flat = frame.apply(lambda s: flat_line_mask(s, cfg.flat_line_h))
        after_flat = frame.mask(flat)
        spike = after_flat.apply(lambda s: spike_mask(s, cfg.spike_k, cfg.spike_window_h))
        flags[asset] = {GAP: gap, FLAT_LINE: flat, SPIKE: spike}
        masked[asset] = frame.mask(flat | spike)
        for rule, mask in flags[asset].items():
            hits = mask.stack()
            hits = hits[hits]
            if hits.empty:
                continue
            idx = hits.index
            tables.append(pd.DataFrame({
                C.TEL_ASSET: asset,
                C.TEL_SIGNAL: idx.get_level_values(1).astype(str),
                "rule": rule,
                C.TS: idx.get_level_values(0),
                C.TEL_VALUE: frame.stack(future_stack=True).reindex(idx).to_numpy(),
            }))
    columns = [C.TEL_ASSET, C.TEL_SIGNAL, "rule", C.TS, C.TEL_VALUE]
    table = (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns))
    table = table.sort_values([C.TEL_ASSET, C.TEL_SIGNAL, "rule", C.TS]).reset_index(drop=True)
    found = Anomalies(table=table, masked=masked, flags=flags, source=source)
    if quarantine_dir is not None:
        path = Path(quarantine_dir) / "telemetry_anomalies.csv"
        if len(table):
            path.parent.mkdir(parents=True, exist_ok=True)
            table.assign(file=source).to_csv(path, index=False)
        else:
            path.unlink(missing_ok=True)
    if len(table):
        log.warning("telemetry %s: flagged %s", source, found.counts())
    for asset, frame in wide.items():
        share = frame.isna().to_numpy() | masked[asset].isna().to_numpy()
        worst = share.mean(axis=0)
        if len(worst) and worst.max() > cfg.max_anomaly_share:
            signal = frame.columns[int(worst.argmax())]
            raise ContractError(
                f"telemetry {source}: asset {asset!r}, signal {signal!r} has {worst.max():.1%} "
                f"of its hours missing or flagged, more than the {cfg.max_anomaly_share:.0%} "
                f"allowed\n  hint: check the sensor, or raise telemetry.max_anomaly_share")
    return found


# ------------------------------------------------------------------ features


def loading(frame: pd.DataFrame) -> pd.Series:
    """The asset's apparent loading per hour (source load unit): the ``load`` signal where a
    source sends it, else sqrt(useful² + useless²) of the high-voltage side (ETT HUFL, HULL),
    else the high-voltage useful load alone."""
    if "load" in frame.columns:
        return frame["load"].abs()
    if {"load_hufl", "load_hull"} <= set(frame.columns):
        return np.hypot(frame["load_hufl"], frame["load_hull"])
    if "load_hufl" in frame.columns:
        return frame["load_hufl"].abs()
    return pd.Series(np.nan, index=frame.index)


def _oil_design(load: pd.Series, ambient: pd.Series | None) -> pd.DataFrame:
    """Inputs of the oil-temperature model per hour, from this hour and earlier ones:
    loading, its square, its means over the past 6 and 24 h, and ambient temperature (°C,
    with its 24-h mean) where given, else day-of-year and hour-of-day harmonics standing in
    for the ambient cycle."""
    x = pd.DataFrame(index=load.index)
    x["load"] = load
    x["load_sq"] = load**2
    x["load_6h"] = load.rolling(6, min_periods=3).mean()
    x["load_24h"] = load.rolling(24, min_periods=12).mean()
    ts = load.index
    if ambient is not None:
        amb = ambient.reindex(ts)
        x["ambient_c"] = amb
        x["ambient_24h_c"] = amb.rolling(24, min_periods=12).mean()
    else:
        doy = 2 * np.pi * ts.dayofyear.to_numpy() / 365.25
        hod = 2 * np.pi * ts.hour.to_numpy() / 24.0
        x["season_sin"], x["season_cos"] = np.sin(doy), np.cos(doy)
        x["day_sin"], x["day_cos"] = np.sin(hod), np.cos(hod)
    return x


@dataclass
class _OilFit:
    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    fit_end: pd.Timestamp  # exclusive: the model saw hours before this only
    rows: int
    rmse_c: float


@dataclass
class OilTemperatureModel:
    """Per asset, a ridge regression of oil temperature (°C) on loading and ambient
    temperature (or seasonal harmonics), learned on the asset's first ``fit_hours`` hours.

    ``fit`` learns it; ``excess`` returns oil temperature minus the model's expectation, NaN
    for hours inside the fit window (in-sample residuals would flatter it) and before. The
    object is pickled (``save``/``load``) so scoring reuses the training-time state."""

    fit_hours: int = 24 * 365
    ridge: float = 1.0
    fits: dict[str, _OilFit] = field(default_factory=dict)

    def fit(self, masked: Mapping[str, pd.DataFrame],
            ambient: Mapping[str, pd.Series] | None = None) -> OilTemperatureModel:
        for asset, frame in masked.items():
            if OIL_TEMP not in frame.columns:
                continue
            end = frame.index[0] + pd.Timedelta(hours=self.fit_hours)
            past = frame[frame.index < end]
            amb = (ambient or {}).get(asset)
            x = _oil_design(loading(past), amb)
            y = past[OIL_TEMP]
            ok = x.notna().all(axis=1) & y.notna()
            if ok.sum() < 168:
                log.warning("oil model: asset %s has %d usable hours before %s; not fitted",
                            asset, int(ok.sum()), end)
                continue
            xv, yv = x[ok].to_numpy(), y[ok].to_numpy()
            mean, std = xv.mean(axis=0), xv.std(axis=0)
            std[std == 0] = 1.0
            z = (xv - mean) / std
            intercept = float(yv.mean())
            a = z.T @ z + self.ridge * np.eye(z.shape[1])
            coef = np.linalg.solve(a, z.T @ (yv - intercept))
            rmse = float(np.sqrt(np.mean((z @ coef + intercept - yv) ** 2)))
            self.fits[asset] = _OilFit(list(x.columns), mean, std, coef, intercept, end,
                                       int(ok.sum()), rmse)
        return self

    def expected(self, asset: str, frame: pd.DataFrame,
                 ambient: pd.Series | None = None) -> pd.Series:
        """The oil temperature (°C) the model expects each hour; NaN without a fit."""
        fit = self.fits.get(asset)
        if fit is None:
            return pd.Series(np.nan, index=frame.index)
        x = _oil_design(loading(frame), ambient)
        if list(x.columns) != fit.columns:
            raise ValueError(f"oil model for {asset} was fitted on {fit.columns}, "
                             f"scoring gives {list(x.columns)} (ambient given at one time only?)")
        z = (x.to_numpy() - fit.mean) / fit.std
        return pd.Series(z @ fit.coef + fit.intercept, index=frame.index)

    def excess(self, asset: str, frame: pd.DataFrame,
               ambient: pd.Series | None = None) -> pd.Series:
        """Oil temperature minus the expectation, °C, from the end of the fit window on."""
        fit = self.fits.get(asset)
        if fit is None or OIL_TEMP not in frame.columns:
            return pd.Series(np.nan, index=frame.index)
        out = frame[OIL_TEMP] - self.expected(asset, frame, ambient)
        return out.where(frame.index >= fit.fit_end)

    def info(self) -> dict[str, Any]:
        """Per asset: fit window end, rows learned on, in-sample RMSE (°C), inputs."""
        return {a: {"fit_end": f.fit_end.isoformat(), "rows": f.rows,
                    "rmse_c": round(f.rmse_c, 3), "inputs": f.columns}
                for a, f in self.fits.items()}

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(self))
        return path

    @staticmethod
    def load(path: Path) -> OilTemperatureModel:
        model = pickle.loads(path.read_bytes())
        if not isinstance(model, OilTemperatureModel):
            raise TypeError(f"{path} does not hold an OilTemperatureModel")
        return model


def asset_features(
    frame: pd.DataFrame,
    cfg: TelemetrySettings,
    oil_model: OilTemperatureModel | None = None,
    asset: str = "",
    ambient: pd.Series | None = None,
) -> pd.DataFrame:
    """Features of one asset per hour t (index: UTC hours), from hours <= t only:

    ``tel_load`` loading (source unit); ``tel_load_rel`` loading / median loading of the past
    ``normal_window_h`` hours; ``tel_high_load_h_24h`` hours of the last 24 with loading above
    the past window's ``load_quantile``; ``tel_oil_excess_c`` oil temperature above the oil
    model's expectation (°C); ``tel_load_roc_rel_h`` one-hour change of relative loading;
    ``tel_oil_roc_c_h`` one-hour change of oil temperature (°C/h); ``tel_missing_share_24h``
    share of the last 24 hours without usable loading or oil temperature.
    ``frame`` is the masked hourly frame (flagged values NaN)."""
    window, min_n = cfg.normal_window_h, max(24, cfg.normal_window_h // 4)
    load = loading(frame)
    past = load.shift(1).rolling(window, min_periods=min_n)
    normal = past.median()
    high_mark = past.quantile(cfg.load_quantile)
    rel = load / normal.where(normal > 0)
    above = (load > high_mark).astype("float64").where(high_mark.notna())
    oil = frame[OIL_TEMP] if OIL_TEMP in frame.columns else pd.Series(np.nan, index=frame.index)
    missing = (load.isna() | oil.isna()).astype("float64")
    out = pd.DataFrame(index=frame.index)
    out[C.TEL_LOAD] = load
    out[C.TEL_LOAD_REL] = rel
    out[C.TEL_HOURS_HIGH] = above.rolling(24, min_periods=1).sum().where(high_mark.notna())
    out[C.TEL_OIL_EXCESS] = (oil_model.excess(asset, frame, ambient) if oil_model is not None
                             else np.nan)
    out[C.TEL_LOAD_ROC] = rel.diff()
    out[C.TEL_OIL_ROC] = oil.diff()
    out[C.TEL_MISSING] = missing.rolling(24, min_periods=1).mean()
    return out


AREA_AGG = {
    C.TEL_LOAD_REL: "mean",
    C.TEL_HOURS_HIGH: "max",
    C.TEL_OIL_EXCESS: "max",
    C.TEL_LOAD_ROC: "mean",
    C.TEL_OIL_ROC: "max",
    C.TEL_MISSING: "mean",
}


def area_features(per_asset: Mapping[str, pd.DataFrame],
                  assets: Iterable[TelemetryAssetSettings]) -> pd.DataFrame:
    """The canonical long frame ``(area_id, ts, tel_*)``: assets of an area combined per hour
    (mean relative loading, rates and missing share; max high-load hours, oil excess and oil
    rise, so one stressed transformer shows)."""
    area_of = {a.asset_id: a.area_id for a in assets}
    parts = []
    for asset, feats in per_asset.items():
        if asset not in area_of:
            continue
        parts.append(feats[list(AREA_AGG)].rename_axis(C.TS).reset_index()
                     .assign(**{C.AREA: area_of[asset]}))
    if not parts:
        return pd.DataFrame({C.AREA: pd.Series(dtype="string"),
                             C.TS: pd.Series(dtype="datetime64[us, UTC]"),
                             **{c: pd.Series(dtype="float64") for c in AREA_AGG}})
    long = pd.concat(parts, ignore_index=True)
    out = long.groupby([C.AREA, C.TS], sort=True).agg(AREA_AGG).reset_index()
    out[C.AREA] = out[C.AREA].astype("string")
    return out[[C.AREA, C.TS, *AREA_AGG]]


def join_telemetry(frame: pd.DataFrame, telemetry: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with ``area_id`` and ``ts``) plus the ``tel_*`` columns, NaN for areas or
    hours without telemetry (a new frame; LightGBM treats NaN as missing)."""
    tel = telemetry.astype({C.AREA: "string"})
    left = frame.assign(**{C.AREA: frame[C.AREA].astype("string")})
    merged = left.merge(tel, on=[C.AREA, C.TS], how="left", validate="many_to_one")
    merged[C.AREA] = merged[C.AREA].astype(frame[C.AREA].dtype)
    return merged


# ------------------------------------------------------------------ one call for the flow


@dataclass
class TelemetryRun:
    """Everything one telemetry pass produced: area features, per-asset features, the
    anomalies, the oil model, the row-contract result and a JSON summary for run.json."""

    area: pd.DataFrame
    per_asset: dict[str, pd.DataFrame]
    anomalies: Anomalies
    oil_model: OilTemperatureModel
    contract: ContractResult
    summary: dict[str, Any]


def build_telemetry(
    long: pd.DataFrame,
    cfg: TelemetrySettings,
    *,
    source: str,
    quarantine_dir: Path | None = None,
    oil_model: OilTemperatureModel | None = None,
    ambient: Mapping[str, pd.Series] | None = None,
) -> TelemetryRun:
    """Check, flag, fit (unless ``oil_model`` is given) and build features for long
    telemetry; see ``TelemetryRun``."""
    clean, contract = check_telemetry(long, cfg, source=source, quarantine_dir=quarantine_dir)
    wide = hourly_wide(clean)
    anomalies = detect_anomalies(wide, cfg, source=source, quarantine_dir=quarantine_dir)
    if oil_model is None:
        oil_model = OilTemperatureModel(cfg.oil_fit_hours, cfg.oil_ridge).fit(
            anomalies.masked, ambient)
    per_asset = {a: asset_features(f, cfg, oil_model, a, (ambient or {}).get(a))
                 for a, f in anomalies.masked.items()}
    area = area_features(per_asset, cfg.assets)
    summary = telemetry_summary(per_asset, anomalies, oil_model, contract, cfg)
    return TelemetryRun(area, per_asset, anomalies, oil_model, contract, summary)


def telemetry_summary(per_asset: Mapping[str, pd.DataFrame], anomalies: Anomalies,
                      oil_model: OilTemperatureModel, contract: ContractResult,
                      cfg: TelemetrySettings) -> dict[str, Any]:
    """JSON-ready summary: assets (area, hours, span), anomalies found (counts per rule and
    per signal with examples), feature ranges (min, median, max, share present), the oil
    model's fit, the row-contract result, and whether the telemetry is a stand-in."""
    area_of = {a.asset_id: a.area_id for a in cfg.assets}
    assets = [{"asset_id": a, "area_id": area_of.get(a),
               "hours": int(len(f)), "first": f.index.min().isoformat(),
               "last": f.index.max().isoformat()} for a, f in per_asset.items()]
    ranges: dict[str, dict[str, float | None]] = {}
    if per_asset:
        allf = pd.concat(per_asset.values())
        for column in allf.columns:
            v = allf[column]
            ranges[column] = {
                "min": _num(v.min()), "median": _num(v.median()), "max": _num(v.max()),
                "present_share": round(float(v.notna().mean()), 4)}
    return {
        "stand_in": cfg.stand_in,
        "assets": assets,
        "hours": int(sum(len(f) for f in per_asset.values())),
        "anomalies": {"counts": anomalies.counts(), "by_signal": anomalies.summary()},
        "feature_ranges": ranges,
        "oil_model": oil_model.info(),
        "contract": contract.to_dict(),
        "model_input": not cfg.stand_in,
    }


def _num(value: Any) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


def run_telemetry(cfg: TelemetrySettings, data_dir: Path, quarantine_dir: Path | None,
                  model_path: Path) -> TelemetryRun:
    """The nightly pass: read the configured file, check it, reuse the oil model saved at
    ``model_path`` when it covers every asset (else fit one and save it there), build the
    features. The summary names the file and the model file."""
    long, path = read_telemetry(cfg, data_dir)
    model = None
    if model_path.is_file():
        saved = OilTemperatureModel.load(model_path)
        if {a.asset_id for a in cfg.assets} <= set(saved.fits):
            model = saved
    run = build_telemetry(long, cfg, source=str(path), quarantine_dir=quarantine_dir,
                          oil_model=model)
    if model is None:
        run.oil_model.save(model_path)
    run.summary |= {"file": str(path), "adapter": cfg.adapter,
                    "oil_model_file": str(model_path), "oil_model_reused": model is not None}
    return run
