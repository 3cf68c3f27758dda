"""Customers: public customers-per-county counts and the synthetic customer registry.

Real customer lists are private everywhere, so the demo builds a SYNTHETIC registry from the
public EAGLE-I counts (``MCC.csv``): a sample of made-up customers per area, with segment,
preferred channels, language and contact details that are obviously fictional (555-01xx
phone numbers, ``@example.invalid`` e-mail, ``synthetic=True`` on every row).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from configs.settings import CHANNELS, LANGUAGES, SEGMENTS, CustomerSettings
from features import columns as C
from features.contracts import ContractError, ContractResult, Rule, Suite, check

RAW_FIPS = "County_FIPS"
RAW_CUSTOMERS = "Customers"
TOTAL_ROW_LABEL = "grand total"  # MCC.csv ends with a national total row, which is not a county

MCC_SUITE = Suite(
    name="eaglei_mcc",
    required_columns=(RAW_FIPS, RAW_CUSTOMERS),
    rules=(
        Rule(RAW_FIPS, "not_null", hint="County_FIPS is the integer county FIPS, e.g. 21111"),
        Rule(
            RAW_FIPS,
            "regex",
            pattern=r"^\d{4,5}$",
            hint="County_FIPS is a whole number of 4-5 digits (leading zero dropped)",
        ),
        Rule(RAW_FIPS, "unique", quarantine=False, hint="MCC.csv has one row per county"),
        Rule(
            RAW_FIPS,
            "between",
            min=1000,
            max=80000,
            hint="County_FIPS is state (1-78) * 1000 + county, leading zero dropped",
        ),
        Rule(RAW_CUSTOMERS, "not_null", hint="Customers is the modeled customer count"),
        Rule(RAW_CUSTOMERS, "regex", pattern=r"^\d+$", hint="Customers is a whole number"),
        Rule(
            RAW_CUSTOMERS,
            "between",
            min=0,
            max=5_000_000,
            hint="Customers is a count per county (the largest, Los Angeles, is ~3.8 M)",
        ),
    ),
)

# Registry columns
CUSTOMER_ID = "customer_id"
SEGMENT = "segment"
CHANNELS_COL = "channels"
LANGUAGE = "language"
NAME = "name"
PHONE = "phone"
EMAIL = "email"
WECHAT_OPENID = "wechat_openid"
OPT_IN_RISK = "opt_in_risk"  # consents to risk advisories (and their updates)
OPT_IN_OUTAGE = "opt_in_outage"  # consents to outage and restoration notices
SYNTHETIC = "synthetic"
REGISTRY_COLUMNS = (
    CUSTOMER_ID,
    C.AREA,
    SEGMENT,
    CHANNELS_COL,
    LANGUAGE,
    C.TIMEZONE,
    NAME,
    PHONE,
    EMAIL,
    WECHAT_OPENID,
    OPT_IN_RISK,
    OPT_IN_OUTAGE,
    SYNTHETIC,
)

# Relative weights of the channels (order of CHANNELS) for a customer's first choice; later
# choices follow the same weights among the channels not yet taken (Plackett-Luce).
_CHANNEL_WEIGHTS = {  # app_push, wechat, sms, voice, email
    "en": np.array([0.36, 0.01, 0.36, 0.07, 0.20]),
    "zh-CN": np.array([0.15, 0.55, 0.15, 0.05, 0.10]),
}
# Businesses read e-mail more than households; critical sites keep a phone line staffed.
_SEGMENT_CHANNEL_FACTOR = {
    "residential": np.array([1.0, 1.0, 1.0, 1.0, 1.0]),
    "commercial": np.array([0.8, 1.0, 1.0, 1.0, 2.0]),
    "industrial": np.array([0.6, 1.0, 1.0, 1.5, 2.0]),
    "critical": np.array([0.8, 1.0, 1.5, 3.0, 1.0]),
}
_N_CHANNELS_SHARES = np.array([0.40, 0.35, 0.18, 0.05, 0.02])  # customers with 1..5 channels
_SMS, _VOICE = CHANNELS.index("sms"), CHANNELS.index("voice")
_WECHAT = CHANNELS.index("wechat")

# 555-0100 ... 555-0199 is reserved for fictional use in every North American area code.
_FICTIONAL_PHONE_PREFIX = "+1-202-555-01"
_EMAIL_DOMAIN = "example.invalid"


def read_customer_counts(path: Path, quarantine_dir: Path | None = None) -> pd.DataFrame:
    """Customers served per county from EAGLE-I ``MCC.csv``: EV_COUNTY (5-digit FIPS string,
    zero-padded) and CUSTOMERS_SERVED (customers, int). See :func:`read_customer_counts_checked`."""
    return read_customer_counts_checked(path, quarantine_dir)[0]


def read_customer_counts_checked(
    path: Path, quarantine_dir: Path | None = None
) -> tuple[pd.DataFrame, ContractResult]:
    """Read ``MCC.csv`` (UTF-8 with BOM), drop its "Grand Total" row, check the contract and
    return the counts with the contract result (for the run manifest)."""
    raw = _read_raw(path)
    if RAW_FIPS in raw.columns:
        raw = raw.loc[raw[RAW_FIPS].str.strip().str.lower() != TOTAL_ROW_LABEL]
    # The contract sees the text as read, so that quarantined rows keep their original values.
    good, result = check(raw, MCC_SUITE, source=path, quarantine_dir=quarantine_dir)
    fips = pd.to_numeric(good[RAW_FIPS]).astype("int64")
    counts = pd.DataFrame(
        {
            C.EV_COUNTY: fips.map("{:05d}".format).astype(str).to_numpy(),
            C.CUSTOMERS_SERVED: pd.to_numeric(good[RAW_CUSTOMERS]).astype("int64").to_numpy(),
        }
    )
    return counts, result


def _read_raw(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ContractError(
            f"input file not found: {path} (customers.counts_file, relative to FOREWARN_DATA_DIR)"
        )
    try:
        return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ContractError(f"cannot read {path}: {exc}") from exc


def generate_registry(areas: pd.DataFrame, cfg: CustomerSettings) -> pd.DataFrame:
    """A SYNTHETIC customer registry, one row per made-up customer (see REGISTRY_COLUMNS).

    ``areas`` has AREA, CUSTOMERS_SERVED (real customers) and TIMEZONE (IANA name, already
    resolved by the caller). Each area gets ``round(customers_served * cfg.sample_fraction)``
    customers, at least 1 when it serves any, at most ``cfg.max_per_area``. Every area draws
    from its own random stream seeded by ``cfg.seed`` and its area_id, so the registry is the
    same on every run, whatever the order of ``areas``. Rows are sorted by area_id.
    """
    _check_areas(areas)
    ordered = areas.sort_values(C.AREA, kind="stable")
    area_ids = ordered[C.AREA].astype(str).to_numpy()
    sizes = registry_sizes(ordered[C.CUSTOMERS_SERVED].to_numpy(), cfg)
    n = int(sizes.sum())
    if n == 0:
        return _empty_registry()
    draws = np.concatenate(
        [_area_draws(a, k, cfg.seed) for a, k in zip(area_ids, sizes, strict=True) if k]
    )
    area_col = np.repeat(area_ids, sizes)
    index = np.concatenate([np.arange(1, k + 1) for k in sizes if k])
    segment = _pick(draws[:, 0], cfg.segment_shares, SEGMENTS)
    language = _pick(draws[:, 1], cfg.language_shares, LANGUAGES)
    channels, has_wechat = _channels(draws[:, 2:], segment, language)
    consent = np.concatenate(
        [_area_draws(a, k, cfg.seed, stream=1, width=2)
         for a, k in zip(area_ids, sizes, strict=True) if k]
    )
    ids = _customer_ids(area_col, index, cfg.max_per_area)
    return pd.DataFrame(
        {
            CUSTOMER_ID: ids,
            C.AREA: area_col,
            SEGMENT: segment,
            CHANNELS_COL: channels,
            LANGUAGE: language,
            C.TIMEZONE: np.repeat(ordered[C.TIMEZONE].astype(str).to_numpy(), sizes),
            NAME: "Customer " + pd.Series(index).astype(str),
            PHONE: _FICTIONAL_PHONE_PREFIX + pd.Series(index % 100).astype(str).str.zfill(2),
            EMAIL: ids.str.lower() + "@" + _EMAIL_DOMAIN,
            WECHAT_OPENID: _wechat_openids(ids, has_wechat),
            OPT_IN_RISK: consent[:, 0] < cfg.opt_in_risk_share,
            OPT_IN_OUTAGE: consent[:, 1] < cfg.opt_in_outage_share,
            SYNTHETIC: True,
        },
        columns=list(REGISTRY_COLUMNS),
    )


def registry_sizes(customers_served: np.ndarray, cfg: CustomerSettings) -> np.ndarray:
    """Synthetic customers per area (int64): the sampled share of the real customers, rounded
    half up, at least 1 where any are served, at most ``cfg.max_per_area``."""
    served = np.asarray(customers_served, dtype="float64")
    sizes = np.floor(served * cfg.sample_fraction + 0.5)
    sizes = np.where(served > 0, np.maximum(sizes, 1), 0)
    return np.minimum(sizes, cfg.max_per_area).astype("int64")


def _check_areas(areas: pd.DataFrame) -> None:
    missing = [c for c in (C.AREA, C.CUSTOMERS_SERVED, C.TIMEZONE) if c not in areas.columns]
    if missing:
        raise ValueError(
            f"areas frame lacks columns {missing}; it needs area_id, customers_served and timezone"
        )
    dup = areas[C.AREA][areas[C.AREA].duplicated()]
    if len(dup):
        raise ValueError(f"areas frame repeats area_id {sorted(dup.astype(str).unique())[:5]}")
    served = pd.to_numeric(areas[C.CUSTOMERS_SERVED], errors="coerce")
    bad = areas.loc[served.isna() | (served < 0), C.AREA]
    if len(bad):
        raise ValueError(
            f"customers_served must be a count >= 0; bad for area_id {list(bad.astype(str))[:5]}"
        )


def _area_draws(
    area_id: str, size: int, seed: int, stream: int = 0, width: int | None = None
) -> np.ndarray:
    """Uniform draws in [0, 1), shape (size, width). Stream 0 (width 3 + len(CHANNELS)):
    segment, language, number of channels, one per channel; stream 1 (width 2): consent to
    risk and to outage messages. Each from the area's own stream: a stable hash of the area
    id (not Python's salted ``hash``), the seed and the stream number (stream 0 keeps the
    registry of earlier versions)."""
    key = int.from_bytes(hashlib.sha256(area_id.encode("utf-8")).digest()[:8], "big")
    entropy = [seed, key] if stream == 0 else [seed, key, stream]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return rng.random((size, 3 + len(CHANNELS) if width is None else width))


def _pick(u: np.ndarray, shares: dict[str, float], order: tuple[str, ...]) -> np.ndarray:
    """Categories drawn with the given shares from uniforms ``u``; categories are taken in
    the canonical ``order`` so that the YAML key order cannot change the draw."""
    names = [name for name in order if shares.get(name, 0) > 0]
    cum = np.cumsum([shares[name] for name in names])
    idx = np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(names) - 1)
    return np.asarray(names, dtype=object)[idx]


def _channels(
    u: np.ndarray, segment: np.ndarray, language: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Preferred channels per customer (tuples, most preferred first) and whether WeChat is
    among them. ``u`` holds one uniform for the number of channels, then one per channel.

    Critical customers get at least two channels, one of them SMS or voice, because an
    app notification or e-mail alone can go unseen when the power (and Wi-Fi) is out."""
    n_u, key_u = u[:, 0], u[:, 1:]
    weights = np.ones_like(key_u)
    for lang, base in _CHANNEL_WEIGHTS.items():
        for seg, factor in _SEGMENT_CHANNEL_FACTOR.items():
            weights[(language == lang) & (segment == seg)] = base * factor
    # Exponential race: the channel with the smallest -log(u)/w comes first, and so on.
    order = np.argsort(-np.log1p(-key_u) / weights, axis=1, kind="stable")
    cum = np.cumsum(_N_CHANNELS_SHARES)
    k = np.minimum(np.searchsorted(cum / cum[-1], n_u, side="right"), len(CHANNELS) - 1) + 1
    critical = segment == "critical"
    k = np.where(critical, np.maximum(k, 2), k)
    order = _ensure_phone_channel(order, k, critical)
    code = np.zeros(len(order), dtype="int64")
    for j in range(len(CHANNELS)):  # base-6 code of the kept prefix; 0 marks "not kept"
        code = code * 6 + np.where(j < k, order[:, j] + 1, 0)
    uniq, inverse = np.unique(code, return_inverse=True)
    lookup = np.empty(len(uniq), dtype=object)
    for i, c in enumerate(uniq):
        lookup[i] = _decode_channels(int(c))
    has_wechat = ((order == _WECHAT) & (np.arange(len(CHANNELS)) < k[:, None])).any(axis=1)
    return lookup[inverse.ravel()], has_wechat


def _ensure_phone_channel(order: np.ndarray, k: np.ndarray, critical: np.ndarray) -> np.ndarray:
    """Swap the better-ranked of SMS/voice into the last kept place of critical customers
    whose kept channels have neither (new array)."""
    order = order.copy()
    pos = np.argsort(order, axis=1)  # pos[i, channel] = rank of the channel for customer i
    best = np.minimum(pos[:, _SMS], pos[:, _VOICE])
    fix = np.flatnonzero(critical & (best >= k))
    last = k[fix] - 1
    moved = order[fix, best[fix]]
    order[fix, best[fix]] = order[fix, last]
    order[fix, last] = moved
    return order


def _decode_channels(code: int) -> tuple[str, ...]:
    digits = []
    for _ in CHANNELS:
        code, d = divmod(code, 6)
        digits.append(d)
    return tuple(CHANNELS[d - 1] for d in reversed(digits) if d)


def _customer_ids(area: np.ndarray, index: np.ndarray, max_per_area: int) -> pd.Series:
    width = max(6, len(str(max_per_area)))
    return "SYN-" + pd.Series(area, dtype=str) + "-" + pd.Series(index).astype(str).str.zfill(width)


def _wechat_openids(ids: pd.Series, has_wechat: np.ndarray) -> pd.Series:
    """Fake WeChat OpenIDs ("o" + "SYN" + the id digits) where WeChat is a channel, else None."""
    fake = ("oSYN" + ids.str.removeprefix("SYN-").str.replace("-", "", regex=False)).to_numpy()
    return pd.Series(np.where(has_wechat, fake, None), dtype=object)


def _empty_registry() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype=object) for col in REGISTRY_COLUMNS})
