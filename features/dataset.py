"""The assembled inputs of training and scoring: areas, the hourly panel, hourly weather."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from configs.settings import Settings
from features import columns as C
from features.areas import SERVED_SOURCE, assign_areas, build_areas
from features.build import weather_by_hour
from features.contracts import ContractError
from features.labels import HourlyPanel, build_panel
from features.outages import OutageHistory, observed_hours


@dataclass(frozen=True)
class Dataset:
    areas: pd.DataFrame
    panel: HourlyPanel
    weather_hourly: pd.DataFrame  # index = panel.hours, columns = features.build.WEATHER
    events: pd.DataFrame  # generic events with AREA

    @property
    def summary(self) -> dict:
        labels = self.panel.labels
        known = labels[~pd.isna(labels)]
        return {
            "areas": len(self.areas),
            "hours": int((self.panel.hours < self.panel.history_end).sum()),
            "history_start": str(self.panel.hours[0]),
            "history_end": str(self.panel.history_end),
            "observed_hours": int(self.panel.observed.sum()),
            "unobserved_hours": int((~self.panel.observed[
                self.panel.hours < self.panel.history_end]).sum()),
            "labelled_area_hours": int(known.size),
            "positive_area_hours": int(known.sum()),
            "customers_served_estimated": sorted(
                self.areas.loc[self.areas[SERVED_SOURCE] != "counts", C.AREA].astype(str)),
        }


def weather_span(history: OutageHistory, horizon_h: int, tz: str) -> tuple[date, date]:
    """Local days of weather the dataset needs: 4 days before the history (the 3-day
    antecedent features) to a day past the scoring horizon after its end."""
    first = history.start.tz_convert(tz).date() - timedelta(days=4)
    last = (history.end + pd.Timedelta(hours=horizon_h + 24)).tz_convert(tz).date()
    return first, last


def build_dataset(
    history: OutageHistory,
    counties: pd.DataFrame,
    counts: pd.DataFrame,
    weather_daily: pd.DataFrame,
    cfg: Settings,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> Dataset:
    """Areas, labels and hourly weather over the history [start, end) (default: the whole
    scraped period), with ``horizon_h`` extra hours after it for scoring."""
    start = (start or history.start).floor("h")
    end = end or (history.end.floor("h") + pd.Timedelta(hours=1))
    events = assign_areas(history.events, cfg.areas)
    events = events[(events[C.EV_START] >= start) & (events[C.EV_START] < end)]
    try:
        areas = build_areas(events, counties, counts, cfg.areas, cfg.customers)
    except ContractError as exc:
        files = ", ".join(str(p) for p in history.source_files[:1])
        raise ContractError(f"{files} with {cfg.customers.counts_file}: {exc}") from exc
    if cfg.areas.include:
        areas = areas[areas[C.AREA].isin(cfg.areas.include)].reset_index(drop=True)
        if areas.empty:
            raise ValueError(f"areas.include {list(cfg.areas.include)} matches no area with "
                             f"at least {cfg.areas.min_events} events")
    observed = observed_hours(history.scrape_times, start, end, cfg.outages.max_quiet_gap_h)
    panel = build_panel(events, areas[C.AREA].to_numpy(), observed, extra_hours=cfg.model.horizon_h)
    weather = weather_by_hour(weather_daily, panel.hours, cfg.weather.station.timezone,
                              cfg.features)
    check_weather_coverage(weather, panel, cfg.weather.min_coverage,
                           cfg.data_path(cfg.weather.noaa_daily_file))
    return Dataset(areas, panel, weather, events)


def check_weather_coverage(weather_hourly: pd.DataFrame, panel: HourlyPanel,
                           min_share: float, source: Path) -> float:
    """Share of the history's hours with daily rain or temperature; below ``min_share``
    the run stops (a model trained on missing weather would look fine and be wrong)."""
    in_history = panel.hours < panel.history_end
    known = weather_hourly.loc[in_history, ["wx_prcp_mm", "wx_tmax_c"]].notna().any(axis=1)
    share = float(known.mean()) if len(known) else 0.0
    if share < min_share:
        raise ContractError(
            f"{source}: weather covers {share:.0%} of the outage history "
            f"{panel.hours[0]:%Y-%m-%d}..{panel.history_end:%Y-%m-%d}, below weather.min_coverage "
            f"{min_share:.0%}; hint: the station file must span the outage period"
        )
    return share
