"""Column names of the canonical frames, as constants.

The canonical long frame has one row per (AREA, TS) with UTC hourly timestamps; training and
scoring rows add ISSUE_TS (the as-of time t0) and LEAD_H (hours from t0 to TS).
"""

AREA = "area_id"
TS = "ts"  # target hour, UTC, hour-start
ISSUE_TS = "issue_ts"  # as-of time t0 of the forecast, UTC
LEAD_H = "lead_h"  # hours ahead: TS - ISSUE_TS
LABEL = "label"  # 1 if at least one unplanned outage starts in the area in the hour
OBSERVED = "observed"  # False where the source could not see the hour (scraper down)

# Generic outage-event schema (features/outages.py)
EV_ID = "event_id"
EV_SOURCE_ID = "source_id"
EV_START = "start_utc"
EV_END = "end_utc"
EV_LAT = "lat"
EV_LON = "lon"
EV_COUNTY = "county_fips"
EV_CUSTOMERS = "customers"
EV_CUSTOMERS_FLOOR = "customers_is_floor"
EV_CAUSE = "cause"
EV_PLANNED = "planned"
EV_CLUSTER = "is_cluster"
EV_N_OUTAGES = "n_outages"
EV_DUPLICATE_OF = "duplicate_of"
# What the source knew when the outage first appeared (restoration-time model, optional)
EV_FIRST_SEEN = "first_seen_utc"  # first time the outage was on the map, UTC
EV_CAUSE_FIRST = "cause_first"  # cause text at first report
EV_CUSTOMERS_FIRST = "customers_first"  # customers affected at first report (count)
EV_ETR_FIRST = "etr_first_utc"  # the utility's first estimated restoration time, UTC or NaT
EV_ETR_LAST = "etr_last_utc"  # the utility's last estimated restoration time, UTC or NaT
EV_END_UNCERTAINTY_MIN = "end_uncertainty_min"  # minutes between last sighting and EV_END

# Areas (features/areas.py)
AREA_NAME = "area_name"
AREA_LAT = "area_lat"
AREA_LON = "area_lon"
CUSTOMERS_SERVED = "customers_served"
TIMEZONE = "timezone"

# Daily weather (features/weather.py): one row per local calendar day of the station
WX_DATE = "date"
WX_TMAX = "tmax_c"
WX_TMIN = "tmin_c"
WX_PRCP = "prcp_mm"
WX_SNOW = "snow_mm"
WEATHER_COLUMNS = (WX_TMAX, WX_TMIN, WX_PRCP, WX_SNOW)

# Forecast grids sampled at areas (features/forecast_grids.py): one row per
# (AREA, ISSUE_TS, TS) with LEAD_H; values at TS, or over the forecast step ending at TS
# (precipitation, maximum, minimum).
FC_T2M = "fc_t2m_c"  # 2 m air temperature, °C
FC_TMAX = "fc_tmax_c"  # maximum 2 m temperature over the step ending at TS, °C
FC_TMIN = "fc_tmin_c"  # minimum 2 m temperature over the step ending at TS, °C
FC_PRCP = "fc_prcp_mm"  # precipitation over the step ending at TS (de-accumulated), mm
FC_SNOW = "fc_snow_mm"  # snowfall (depth of new snow) over the step ending at TS, mm
FC_WIND = "fc_wind_ms"  # 10 m wind speed, m/s
FC_GUST = "fc_gust_ms"  # wind gust, m/s
FC_MSLP = "fc_mslp_hpa"  # pressure reduced to mean sea level, hPa
FC_RH = "fc_rh2m_pct"  # 2 m relative humidity, %
FORECAST_COLUMNS = (FC_T2M, FC_TMAX, FC_TMIN, FC_PRCP, FC_SNOW, FC_WIND, FC_GUST, FC_MSLP, FC_RH)

# Hourly station weather (features/weather_hourly.py): one row per UTC hour TS
WXH_TEMP = "temp_c"  # air temperature, °C
WXH_PRCP = "prcp_mm"  # precipitation in the hour, mm
WXH_SNOW = "snow_mm"  # snowfall in the hour, mm (meteostat gives cm)
WXH_WIND = "wind_ms"  # mean wind speed, m/s (meteostat gives km/h)
WXH_GUST = "gust_ms"  # peak gust, m/s (meteostat gives km/h)
WXH_COCO = "coco"  # meteostat weather condition code 1..27
HOURLY_WEATHER_COLUMNS = (WXH_TEMP, WXH_PRCP, WXH_SNOW, WXH_WIND, WXH_GUST, WXH_COCO)

# Outage-driver weather features per hour TS (features/weather_hourly.py)
DRV_GUST_MAX = "drv_gust_max_24h_ms"  # highest gust of the last 24 h, m/s
DRV_GUST_HOURS = "drv_gust_exceed_h_24h"  # hours of the last 24 with gusts >= drivers.gust_ms
DRV_WIND_HOURS = "drv_wind_exceed_h_24h"  # hours of the last 24 with wind >= drivers.wind_ms
DRV_WIND_RUN = "drv_strong_wind_run_h"  # consecutive hours of strong wind or gusts up to TS
DRV_RAIN_24 = "drv_rain_24h_mm"  # precipitation over the last 24 h, mm
DRV_RAIN_72 = "drv_rain_72h_mm"  # precipitation over the last 72 h, mm
DRV_FREEZING = "drv_freezing_rain_24h"  # 1 if freezing rain or ice in the last 24 h, else 0
DRV_WET_SNOW = "drv_wet_snow_24h_mm"  # snowfall near 0 °C (wet, heavy) over the last 24 h, mm
DRV_HEAT = "drv_heat"  # 1 if hot (>= drivers.hot_c), else 0
DRV_HEAT_LOAD = "drv_heat_high_load"  # 1 if hot and equipment loading high, else 0
DRV_LEAF_ON = "drv_leaf_on"  # 1 in the months trees are in leaf, else 0
DRIVER_FEATURES = (DRV_GUST_MAX, DRV_GUST_HOURS, DRV_WIND_HOURS, DRV_WIND_RUN, DRV_RAIN_24,
                   DRV_RAIN_72, DRV_FREEZING, DRV_WET_SNOW, DRV_HEAT, DRV_HEAT_LOAD, DRV_LEAF_ON)

# Equipment telemetry, long format (features/telemetry.py): one row per (asset, hour, signal)
TEL_ASSET = "asset_id"
TEL_SIGNAL = "signal"  # product signal name, e.g. "oil_temp" (see telemetry.SIGNALS)
TEL_VALUE = "value"  # in TEL_UNIT
TEL_UNIT = "unit"
# Telemetry features per (asset or area, hour TS), using only hours <= TS
TEL_LOAD = "tel_load"  # apparent loading, source load unit (ETT: unpublished)
TEL_LOAD_REL = "tel_load_rel"  # loading / its median over the past normal window (1 = usual)
TEL_HOURS_HIGH = "tel_high_load_h_24h"  # hours of the last 24 above the past loading quantile
TEL_OIL_EXCESS = "tel_oil_excess_c"  # oil temperature minus what load and ambient explain, °C
TEL_LOAD_ROC = "tel_load_roc_rel_h"  # change of relative loading over the last hour, 1/h
TEL_OIL_ROC = "tel_oil_roc_c_h"  # change of oil temperature over the last hour, °C/h
TEL_MISSING = "tel_missing_share_24h"  # share of the last 24 h without a usable value (0..1)
TEL_FEATURES = (TEL_LOAD_REL, TEL_HOURS_HIGH, TEL_OIL_EXCESS, TEL_LOAD_ROC, TEL_OIL_ROC,
                TEL_MISSING)

# Outputs
PROB = "prob"
CLIMATOLOGY = "climatology"
EXPECTED_CUSTOMERS = "expected_customers"
MODEL_KIND = "model_kind"
