"""Feature rows for (area, target hour, lead time), built so that nothing leaks.

A forecast is issued at ``issue_ts`` (t0, on the hour) for the hours [t0, t0 + H). The row
for target hour ``ts`` has ``lead_h = (ts - t0) / 1 h + 1`` (1 .. H, hours from t0 to the end
of the target hour). Features from outage history use only outages that started before t0.
Weather features describe the target's local day and the days before it; with no forecast
archive they are observed values replayed as a perfect forecast ("replay"), which the outputs
say. Training rows draw one lead per (area, hour) uniformly from 1 .. H, so the skill measured
is the skill over all lead times, not a nowcast's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from configs.settings import FeatureSettings
from features import columns as C
from features.labels import HourlyPanel

CALENDAR = ("hour_utc", "dow", "month")
AREA_ATTRS = ("log_customers_served", "area_lat", "area_lon", "area_rate")
WEATHER = (
    "wx_tmax_c", "wx_tmin_c", "wx_prcp_mm", "wx_snow_mm", "wx_prcp_prev3d_mm",
    "wx_tmax_change_c", "wx_heavy_rain", "wx_freezing_precip", "wx_hot", "wx_heavy_snow",
)


def history_features(windows: tuple[int, ...]) -> tuple[str, ...]:
    area = tuple(f"hist_n_{w}h" for w in windows)
    return area + ("hist_terr_n_24h", "hist_terr_n_72h", "hist_hours_since_last",
                   "hist_observed_share_168h", "hist_open_now", "hist_terr_customers_out")


def feature_names(cfg: FeatureSettings) -> list[str]:
    return [C.LEAD_H, *CALENDAR, *AREA_ATTRS, "clim_rate", *history_features(
        cfg.history_windows_h), *WEATHER]


@dataclass(frozen=True)
class Climatology:
    """Rate of outage hours per area x month x UTC hour, learned on training hours only and
    shrunk toward the area's overall rate (``strength`` pseudo-hours). Also the baseline."""

    table: pd.DataFrame  # AREA, month, hour, rate
    area_rate: pd.Series  # AREA -> rate
    global_rate: float

    @classmethod
    def fit(cls, panel: HourlyPanel, end: pd.Timestamp, strength: float = 24.0) -> Climatology:
        use = panel.hours < end
        lab = panel.labels[:, use]
        hours = panel.hours[use]
        pos = np.nan_to_num(lab)
        n = (~np.isnan(lab)).astype("float64")
        key = (hours.month.to_numpy() - 1) * 24 + hours.hour.to_numpy()
        pos_k = np.zeros((len(panel.area_ids), 288))
        n_k = np.zeros_like(pos_k)
        for k in range(288):
            sel = key == k
            pos_k[:, k] = pos[:, sel].sum(axis=1)
            n_k[:, k] = n[:, sel].sum(axis=1)
        global_rate = float(pos.sum() / max(n.sum(), 1.0))
        area_rate = (pos.sum(axis=1) + global_rate * strength) / (n.sum(axis=1) + strength)
        rate = (pos_k + area_rate[:, None] * strength) / (n_k + strength)
        ai, ki = np.meshgrid(np.arange(len(panel.area_ids)), np.arange(288), indexing="ij")
        table = pd.DataFrame(
            {C.AREA: panel.area_ids[ai.ravel()], "month": ki.ravel() // 24 + 1,
             "hour": ki.ravel() % 24, "rate": rate.ravel()}
        )
        return cls(table, pd.Series(area_rate, index=panel.area_ids), global_rate)

    def rates(self, area_ids: np.ndarray, ts: pd.DatetimeIndex) -> np.ndarray:
        """Climatological probability for each (area, hour) pair; unknown areas get the
        global rate."""
        lookup = self.table.set_index([C.AREA, "month", "hour"])["rate"]
        idx = pd.MultiIndex.from_arrays([area_ids, ts.month, ts.hour])
        out = lookup.reindex(idx).to_numpy()
        return np.where(np.isnan(out), self.global_rate, out)


def weather_by_hour(
    daily: pd.DataFrame, hours: pd.DatetimeIndex, station_tz: str, cfg: FeatureSettings
) -> pd.DataFrame:
    """Weather features per UTC hour from daily station values (index = ``hours``).

    The hour takes the values of its local calendar day (the station's time zone) and of the
    three days before; nothing from a later day is used.
    """
    d = daily.set_index(C.WX_DATE).sort_index()
    d = d.reindex(pd.date_range(d.index.min(), d.index.max(), freq="D"))
    feats = pd.DataFrame(index=d.index)
    feats["wx_tmax_c"] = d[C.WX_TMAX]
    feats["wx_tmin_c"] = d[C.WX_TMIN]
    feats["wx_prcp_mm"] = d[C.WX_PRCP]
    feats["wx_snow_mm"] = d[C.WX_SNOW]
    feats["wx_prcp_prev3d_mm"] = d[C.WX_PRCP].shift(1).rolling(3, min_periods=1).sum()
    feats["wx_tmax_change_c"] = d[C.WX_TMAX] - d[C.WX_TMAX].shift(1)
    feats["wx_heavy_rain"] = (d[C.WX_PRCP] >= cfg.heavy_rain_mm).astype("float64")
    feats["wx_freezing_precip"] = (
        (d[C.WX_TMIN] <= cfg.freezing_c) & (d[C.WX_PRCP] > 0)
    ).astype("float64")
    feats["wx_hot"] = (d[C.WX_TMAX] >= cfg.hot_c).astype("float64")
    feats["wx_heavy_snow"] = (d[C.WX_SNOW] >= cfg.snow_mm).astype("float64")
    for flag, src in (("wx_heavy_rain", C.WX_PRCP), ("wx_hot", C.WX_TMAX),
                      ("wx_heavy_snow", C.WX_SNOW)):
        feats.loc[d[src].isna(), flag] = np.nan
    feats.loc[d[C.WX_TMIN].isna() | d[C.WX_PRCP].isna(), "wx_freezing_precip"] = np.nan
    local_day = hours.tz_convert(station_tz).tz_localize(None).normalize()
    out = feats.reindex(local_day)
    out.index = hours
    return out[list(WEATHER)]


def _prefix(x: np.ndarray) -> np.ndarray:
    """Prefix sums along time with a leading zero: p[..., i] = sum of x[..., :i]."""
    zeros = np.zeros(x.shape[:-1] + (1,))
    return np.concatenate([zeros, np.cumsum(x, axis=-1)], axis=-1)


def _last_event_index(counts: np.ndarray) -> np.ndarray:
    """(A, T+1): index of the last hour < i with an outage, -1 if none."""
    has = counts > 0
    idx = np.where(has, np.arange(counts.shape[1])[None, :], -1)
    last = np.maximum.accumulate(idx, axis=1)
    return np.concatenate([np.full((counts.shape[0], 1), -1), last], axis=1)


def make_rows(
    panel: HourlyPanel,
    areas: pd.DataFrame,
    weather_hourly: pd.DataFrame,
    clim: Climatology,
    area_idx: np.ndarray,
    target_idx: np.ndarray,
    lead_h: np.ndarray,
    cfg: FeatureSettings,
) -> pd.DataFrame:
    """Feature rows for the given (area position, target hour position, lead) triples.

    ``areas`` is the area table (features.areas.build_areas) indexed like ``panel.area_ids``.
    ``weather_hourly`` holds the WEATHER columns either for every hour of the panel (index =
    ``panel.hours``, the same for all areas: the station) or per (AREA, TS) (a MultiIndex:
    weather sampled from a forecast at each area; rows it lacks get NaN).
    Returns AREA, TS, ISSUE_TS, LABEL and the columns of :func:`feature_names` (float32).
    """
    issue_idx = target_idx - (lead_h - 1)
    if (issue_idx < 0).any():
        raise ValueError("issue time before the start of the panel")
    counts = panel.counts
    counts_known = np.where(panel.hours < panel.history_end, counts, 0.0)
    cs = _prefix(counts_known)
    terr = _prefix(counts_known.sum(axis=0))
    obs = _prefix(panel.observed.astype("float64"))
    last = _last_event_index(counts_known)
    ts = panel.hours[target_idx]
    out: dict[str, np.ndarray] = {
        C.LEAD_H: lead_h.astype("float32"),
        "hour_utc": ts.hour.to_numpy(),
        "dow": ts.dayofweek.to_numpy(),
        "month": ts.month.to_numpy(),
    }
    info = areas.set_index(C.AREA).loc[panel.area_ids]
    out["log_customers_served"] = np.log1p(info[C.CUSTOMERS_SERVED].to_numpy(float))[area_idx]
    out["area_lat"] = info[C.AREA_LAT].to_numpy(float)[area_idx]
    out["area_lon"] = info[C.AREA_LON].to_numpy(float)[area_idx]
    out["area_rate"] = clim.area_rate.reindex(panel.area_ids).fillna(
        clim.global_rate).to_numpy()[area_idx]
    out["clim_rate"] = clim.rates(panel.area_ids[area_idx], ts)
    for w in cfg.history_windows_h:
        lo = np.maximum(issue_idx - w, 0)
        out[f"hist_n_{w}h"] = cs[area_idx, issue_idx] - cs[area_idx, lo]
    for w in (24, 72):
        out[f"hist_terr_n_{w}h"] = terr[issue_idx] - terr[np.maximum(issue_idx - w, 0)]
    since = issue_idx - last[area_idx, issue_idx]
    out["hist_hours_since_last"] = np.where(last[area_idx, issue_idx] < 0, 24 * 90,
                                            np.minimum(since, 24 * 90))
    lo = np.maximum(issue_idx - 168, 0)
    out["hist_observed_share_168h"] = (obs[issue_idx] - obs[lo]) / np.maximum(issue_idx - lo, 1)
    # the map at the issue time: outages open in the area, customers out territory-wide
    if panel.open_outages is not None and panel.open_customers is not None:
        out["hist_open_now"] = panel.open_outages[area_idx, issue_idx]
        out["hist_terr_customers_out"] = panel.open_customers.sum(axis=0)[issue_idx]
    else:
        out["hist_open_now"] = np.full(len(area_idx), np.nan)
        out["hist_terr_customers_out"] = np.full(len(area_idx), np.nan)
    if isinstance(weather_hourly.index, pd.MultiIndex):  # per area (forecast weather)
        key = pd.MultiIndex.from_arrays([panel.area_ids[area_idx], panel.hours[target_idx]])
        wx = weather_hourly.reindex(key).to_numpy(dtype="float64")
    else:  # one station for every area
        wx = weather_hourly.to_numpy(dtype="float64")[target_idx]
    for j, name in enumerate(weather_hourly.columns):
        out[name] = wx[:, j]
    frame = pd.DataFrame({k: np.asarray(v, dtype="float32") for k, v in out.items()})
    frame.insert(0, C.AREA, panel.area_ids[area_idx])
    frame.insert(1, C.TS, ts)
    frame.insert(2, C.ISSUE_TS, panel.hours[issue_idx])
    frame.insert(3, C.LABEL, panel.labels[area_idx, target_idx])
    return frame


def sample_labelled_rows(
    panel: HourlyPanel, start: pd.Timestamp, end: pd.Timestamp, horizon_h: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(area, target, lead) positions for every labelled (area, hour) in [start, end), each
    with one lead drawn uniformly from 1 .. horizon_h (reproducible from ``seed``). Used for
    training and test rows alike, so both measure the same mix of lead times."""
    in_range = np.flatnonzero((panel.hours >= start) & (panel.hours < end))
    labels = panel.labels[:, in_range]
    a, k = np.nonzero(~np.isnan(labels))
    t = in_range[k]
    rng = np.random.default_rng(seed)
    lead = rng.integers(1, horizon_h + 1, size=len(t))
    keep = t - (lead - 1) >= 0
    return a[keep], t[keep], lead[keep]


def scoring_rows(
    panel: HourlyPanel, as_of: pd.Timestamp, horizon_h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(area, target, lead) positions for every area and each hour in [as_of, as_of + H)."""
    t0 = int(panel.hour_index(as_of)[0])
    leads = np.arange(1, horizon_h + 1)
    a, lead = np.meshgrid(np.arange(len(panel.area_ids)), leads, indexing="ij")
    return a.ravel(), t0 + lead.ravel() - 1, lead.ravel()
