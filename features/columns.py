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

# Outputs
PROB = "prob"
CLIMATOLOGY = "climatology"
EXPECTED_CUSTOMERS = "expected_customers"
MODEL_KIND = "model_kind"
