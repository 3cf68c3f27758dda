"""The hourly panel: outage starts per (area, UTC hour), what the source could see, and labels.

LABEL is 1 where at least one unplanned, not re-issued outage starts in the area in the hour,
0 where none does, and NaN where the source was blind (scraper down): an unobserved hour is
not an hour without outages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features import columns as C


@dataclass(frozen=True)
class HourlyPanel:
    """Dense (area x hour) arrays over a regular UTC hourly index.

    ``counts`` is the number of unplanned outages starting in the hour, ``customers`` the
    customers affected by them (count), ``observed`` whether the source watched the hour.
    Hours after the end of the history (``hours >= history_end``) exist for scoring and hold
    no counts.
    """

    area_ids: np.ndarray  # (A,) str
    hours: pd.DatetimeIndex  # (T,) UTC hour starts
    counts: np.ndarray  # (A, T) float64
    customers: np.ndarray  # (A, T) float64
    observed: np.ndarray  # (T,) bool
    history_end: pd.Timestamp
    # outages (and their customers) on the map at the start of each hour: started before it,
    # restored after it. Known at that moment, so usable at an issue time. None: not known.
    open_outages: np.ndarray | None = None  # (A, T) float64
    open_customers: np.ndarray | None = None  # (A, T) float64

    def hour_index(self, ts: pd.Timestamp | pd.DatetimeIndex | pd.Series) -> np.ndarray:
        """Positions of UTC hour-start times in ``hours`` (raises if any is outside)."""
        values = pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(ts, utc=True)))
        idx = self.hours.get_indexer(values)
        if (idx < 0).any():
            bad = values[idx < 0][:3]
            raise ValueError(
                f"times outside the panel {self.hours[0]} .. {self.hours[-1]}: {list(bad)}"
            )
        return idx

    @property
    def labels(self) -> np.ndarray:
        """(A, T) float: 1/0 where observed and inside the history, NaN elsewhere."""
        lab = (self.counts > 0).astype("float64")
        blind = ~self.observed | (self.hours >= self.history_end)
        lab[:, blind] = np.nan
        return lab


def build_panel(
    events: pd.DataFrame,
    area_ids: np.ndarray,
    observed: pd.Series,
    extra_hours: int = 0,
) -> HourlyPanel:
    """Count unplanned, de-duplicated outage starts per area and hour.

    ``observed`` is the boolean hourly series from ``features.outages.observed_hours``; it fixes
    the history's hours. ``extra_hours`` appends hours after the history (for scoring).
    """
    hist_hours = pd.DatetimeIndex(observed.index)
    history_end = hist_hours[-1] + pd.Timedelta(hours=1)
    hours = pd.date_range(hist_hours[0], periods=len(hist_hours) + extra_hours, freq="h")
    area_ids = np.asarray(area_ids, dtype=object)
    counted = events[
        ~events[C.EV_PLANNED]
        & events[C.EV_DUPLICATE_OF].isna()
        & events[C.AREA].isin(area_ids)
        & (events[C.EV_START] >= hours[0])
        & (events[C.EV_START] < history_end)
    ]
    a = pd.Index(area_ids).get_indexer(counted[C.AREA])
    t = ((counted[C.EV_START].dt.floor("h") - hours[0]) / pd.Timedelta(hours=1)).to_numpy()
    t = t.astype("int64")
    counts = np.zeros((len(area_ids), len(hours)))
    customers = np.zeros_like(counts)
    np.add.at(counts, (a, t), counted[C.EV_N_OUTAGES].to_numpy(dtype="float64"))
    np.add.at(customers, (a, t), counted[C.EV_CUSTOMERS].to_numpy(dtype="float64"))
    open_outages, open_customers = _open_at_hour_start(counted, a, len(area_ids), hours,
                                                       history_end)
    obs = np.zeros(len(hours), dtype=bool)
    obs[: len(hist_hours)] = observed.to_numpy(dtype=bool)
    return HourlyPanel(area_ids, hours, counts, customers, obs, history_end, open_outages,
                       open_customers)


def _open_at_hour_start(
    counted: pd.DataFrame, a: np.ndarray, n_areas: int, hours: pd.DatetimeIndex,
    history_end: pd.Timestamp,
) -> tuple[np.ndarray, np.ndarray]:
    """(A, T) outages and customers out at each hour start h: start < h < end. An outage
    with no end counts as open until the end of the history."""
    shape = (n_areas, len(hours) + 1)
    step = pd.Timedelta(hours=1)
    start = pd.to_datetime(counted[C.EV_START], utc=True)
    first = ((start - hours[0]) // step).to_numpy(dtype="int64") + 1
    end = pd.to_datetime(counted[C.EV_END], utc=True).fillna(history_end).clip(upper=history_end)
    last = -((hours[0] - end) // step).to_numpy(dtype="int64")  # ceil: first h >= end
    first = np.clip(first, 0, len(hours))
    last = np.clip(last, 0, len(hours))
    keep = last > first
    out = []
    for weight in (np.ones(len(a)), counted[C.EV_CUSTOMERS].to_numpy(dtype="float64")):
        diff = np.zeros(shape)
        np.add.at(diff, (a[keep], first[keep]), weight[keep])
        np.add.at(diff, (a[keep], last[keep]), -weight[keep])
        out.append(np.cumsum(diff, axis=1)[:, :-1])
    return out[0], out[1]


def to_long(panel: HourlyPanel) -> pd.DataFrame:
    """The canonical long frame (AREA, TS, LABEL, OBSERVED, outage and customer counts)."""
    a, t = np.meshgrid(np.arange(len(panel.area_ids)), np.arange(len(panel.hours)), indexing="ij")
    return pd.DataFrame(
        {
            C.AREA: panel.area_ids[a.ravel()],
            C.TS: panel.hours[t.ravel()],
            C.LABEL: panel.labels.ravel(),
            C.OBSERVED: panel.observed[t.ravel()],
            "n_outages": panel.counts.ravel(),
            "customers_out": panel.customers.ravel(),
        }
    )
