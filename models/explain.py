"""Plain-word drivers of a prediction, from LightGBM's own contribution values."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

# feature -> (English, Chinese) phrase; {v} is the feature's value in its unit.
# Flags (0/1) only speak when set; None means "do not show as a driver".
PHRASES: dict[str, tuple[str, str] | None] = {
    "wx_prcp_mm": ("daily rain {v:.0f} mm", "日降雨量 {v:.0f} 毫米"),
    "wx_prcp_prev3d_mm": ("{v:.0f} mm of rain in the previous 3 days", "前三天累计降雨 {v:.0f} 毫米"),
    "wx_snow_mm": ("snowfall {v:.0f} mm", "降雪 {v:.0f} 毫米"),
    "wx_tmax_c": ("daytime high {v:.0f} °C", "最高气温 {v:.0f}°C"),
    "wx_tmin_c": ("overnight low {v:.0f} °C", "最低气温 {v:.0f}°C"),
    "wx_tmax_change_c": ("temperature {v:+.0f} °C from the day before", "气温较前一天变化 {v:+.0f}°C"),
    "wx_heavy_rain": ("heavy rain", "强降雨"),
    "wx_freezing_precip": ("freezing rain or ice", "冻雨或结冰"),
    "wx_hot": ("extreme heat", "高温天气"),
    "wx_heavy_snow": ("heavy snow", "大雪"),
    "hist_n_24h": ("{v:.0f} outages in this area in the last 24 h", "本地区过去24小时停电 {v:.0f} 次"),
    "hist_n_72h": ("{v:.0f} outages in this area in the last 3 days", "本地区过去3天停电 {v:.0f} 次"),
    "hist_n_168h": ("{v:.0f} outages in this area in the last 7 days", "本地区过去7天停电 {v:.0f} 次"),
    "hist_n_720h": ("{v:.0f} outages in this area in the last 30 days", "本地区过去30天停电 {v:.0f} 次"),
    "hist_terr_n_24h": ("{v:.0f} outages across the service territory in the last 24 h",
                        "全服务区过去24小时停电 {v:.0f} 次"),
    "hist_terr_n_72h": ("{v:.0f} outages across the service territory in the last 3 days",
                        "全服务区过去3天停电 {v:.0f} 次"),
    "hist_hours_since_last": ("last outage in this area {v:.0f} h ago", "本地区上次停电在 {v:.0f} 小时前"),
    "clim_rate": ("the usual outage rate for this season and time of day", "该季节和时段的常见停电率"),
    "month": ("the season", "季节因素"),
    "hour_utc": ("the time of day", "时段因素"),
    "dow": ("the day of the week", "星期因素"),
    "area_rate": ("this area's outage history", "该地区的历史停电情况"),
    "log_customers_served": ("the size of this area's network", "该地区电网规模"),
    "area_lat": None,
    "area_lon": None,
    "lead_h": None,
    "hist_observed_share_168h": None,
    "hist_open_now": ("{v:.0f} outages open in this area when the forecast was made",
                      "预报时本地区仍有 {v:.0f} 处停电未恢复"),
    "hist_terr_customers_out": ("{v:,.0f} customers without power across the territory when "
                                "the forecast was made", "预报时全服务区 {v:,.0f} 户停电"),
}
FLAGS = {"wx_heavy_rain", "wx_freezing_precip", "wx_hot", "wx_heavy_snow"}
# Features that say "this is how it usually is here"; they explain a risk only when nothing
# specific to the coming days raised it.
# A driver must move the log-odds at least this much to be told to a customer: smaller pushes
# ("daily rain 1 mm") are noise in words even when they are the largest ones.
MIN_CONTRIBUTION = 0.05
BACKGROUND = {"clim_rate", "month", "hour_utc", "dow", "area_rate", "log_customers_served"}


def describe(feature: str, value: float) -> tuple[str, str] | None:
    """English and Chinese phrase for a feature at a value, or None if it should not show."""
    phrase = PHRASES.get(feature, (feature, feature))
    if phrase is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if feature in FLAGS and value < 0.5:
        return None
    if feature.startswith(("hist_n_", "hist_terr_", "hist_open_")):
        if value < 1:  # "no recent outages" does not explain a raised risk to a customer
            return None
    return phrase[0].format(v=value), phrase[1].format(v=value)


def top_drivers(contrib: pd.Series, values: pd.Series, k: int) -> list[dict]:
    """The k features that raised this prediction most (positive contributions, log-odds),
    with their value and words in both languages. Weather and recent outages come before the
    background (season, time of day, the area's usual rate); repeated phrases show once."""
    ranked = contrib[contrib >= MIN_CONTRIBUTION].sort_values(ascending=False)
    specific = [f for f in ranked.index if f not in BACKGROUND]
    background = [f for f in ranked.index if f in BACKGROUND]
    out: list[dict] = []
    seen: set[str] = set()
    for feature in specific + background:
        if len(out) >= k:
            break
        words = describe(str(feature), float(values[feature]))
        if words is None or words[0] in seen:
            continue
        seen.add(words[0])
        out.append({"feature": str(feature), "value": float(values[feature]),
                    "contribution": round(float(ranked[feature]), 4), "text_en": words[0],
                    "text_zh": words[1]})
    return out


@dataclass(frozen=True)
class Explanations:
    """Explains scored rows on demand (contributions cost ~2 ms a row, and only the peak
    hours of risk windows need them). ``rows`` has the same index as the hourly risk."""

    rows: pd.DataFrame  # feature rows as scored, with AREA
    contributions: Callable[[pd.DataFrame], pd.DataFrame]  # e.g. RiskModel.contributions

    def drivers(self, row: int, k: int) -> list[dict]:
        """Top drivers of the scored row with index label ``row``."""
        one = self.rows.loc[[row]]
        return top_drivers(self.contributions(one).iloc[0], one.iloc[0], k)
