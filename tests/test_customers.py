"""Customer counts (real EAGLE-I file) and the synthetic registry."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import CHANNELS, load_settings
from features.contracts import ContractError
from features.customers import (
    REGISTRY_COLUMNS,
    generate_registry,
    read_customer_counts,
    read_customer_counts_checked,
    registry_sizes,
)

MCC = "eaglei_supplementary/MCC.csv"


@pytest.fixture(scope="module")
def cfg():
    return load_settings().customers


def _raw_mcc(path: Path) -> dict[str, int]:
    """County_FIPS -> Customers as written in the file, read with the csv module."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return {row["County_FIPS"]: int(row["Customers"]) for row in csv.DictReader(fh)}


def _areas(**served: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "area_id": list(served),
            "customers_served": list(served.values()),
            "timezone": ["America/Chicago" if a == "21001" else "America/New_York" for a in served],
        }
    )


# --- MCC.csv ------------------------------------------------------------------------------


def test_real_mcc_matches_the_file_and_pads_fips(data_dir: Path) -> None:
    path = data_dir / MCC
    raw = _raw_mcc(path)
    counts = read_customer_counts(path)

    assert list(counts.columns) == ["county_fips", "customers_served"]
    by_fips = counts.set_index("county_fips")["customers_served"]
    assert by_fips["21111"] == raw["21111"]  # Jefferson County, KY (Louisville)
    assert by_fips["01001"] == raw["1001"]  # leading zero restored
    assert "1001" not in by_fips.index
    assert counts["county_fips"].str.fullmatch(r"\d{5}").all()
    assert counts["county_fips"].is_unique
    assert counts["customers_served"].dtype == np.int64


def test_real_mcc_leaves_out_the_grand_total_row(data_dir: Path) -> None:
    path = data_dir / MCC
    raw = _raw_mcc(path)
    counts, result = read_customer_counts_checked(path)

    assert len(counts) == len(raw) - 1 == result.rows_passed
    assert result.rows_quarantined == 0
    assert counts["customers_served"].sum() == raw["Grand Total"]


def _write_mcc(path: Path, rows: list[tuple[str, str]]) -> Path:
    text = "County_FIPS,Customers\n" + "".join(f"{f},{c}\n" for f, c in rows)
    path.write_text(text, encoding="utf-8-sig")
    return path


def test_mcc_contract_rejects_duplicate_counties(tmp_path: Path) -> None:
    rows = [(str(1001 + 2 * i), "100") for i in range(50)] + [("1001", "7")]
    path = _write_mcc(tmp_path / "MCC.csv", rows)

    with pytest.raises(ContractError) as err:
        read_customer_counts(path)
    message = str(err.value)
    assert "County_FIPS" in message and "unique" in message and str(path) in message


def test_mcc_contract_quarantines_a_bad_count(tmp_path: Path) -> None:
    rows = [(str(1001 + 2 * i), "100") for i in range(50)] + [("1201", "lots")]
    path = _write_mcc(tmp_path / "MCC.csv", rows)

    counts, result = read_customer_counts_checked(path, quarantine_dir=tmp_path / "q")

    assert len(counts) == 50 and "01201" not in set(counts["county_fips"])
    assert result.rows_quarantined == 1
    quarantined = pd.read_csv(result.quarantine_file, dtype=str)
    assert quarantined["Customers"].tolist() == ["lots"]


def test_mcc_contract_stops_on_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "MCC.csv"
    path.write_text("FIPS,Customers\n1001,5\n", encoding="utf-8-sig")
    with pytest.raises(ContractError, match="County_FIPS"):
        read_customer_counts(path)


# --- synthetic registry -------------------------------------------------------------------


def test_registry_sizes_round_floor_and_cap(cfg) -> None:
    sizes = registry_sizes(np.array([0, 10, 149, 150, 123_456, 10**9]), cfg)
    # 1 % of the customers, half up, at least 1 when any are served, at most max_per_area
    assert sizes.tolist() == [0, 1, 1, 2, 1235, cfg.max_per_area]


def test_registry_is_deterministic_and_independent_of_area_order(cfg) -> None:
    areas = _areas(**{"21111": 390_033, "21067": 150_000, "21001": 9_000})
    first = generate_registry(areas, cfg)
    again = generate_registry(areas.iloc[::-1].reset_index(drop=True), cfg)
    alone = generate_registry(areas.iloc[[0]], cfg)

    pd.testing.assert_frame_equal(first, again)
    # an area's customers do not depend on which other areas are generated
    pd.testing.assert_frame_equal(first[first["area_id"] == "21111"].reset_index(drop=True), alone)
    other_seed = generate_registry(areas, cfg.model_copy(update={"seed": cfg.seed + 1}))
    assert not first["segment"].equals(other_seed["segment"])


def test_registry_rows_and_fake_contacts(cfg) -> None:
    areas = _areas(**{"21111": 390_033, "21001": 9_000, "21999": 0})
    reg = generate_registry(areas, cfg)

    assert tuple(reg.columns) == REGISTRY_COLUMNS
    assert reg["area_id"].value_counts().to_dict() == {"21111": 3900, "21001": 90}
    assert reg["customer_id"].is_unique
    assert reg["customer_id"].iloc[0] == "SYN-21001-000001"
    assert reg["synthetic"].all()
    assert reg["phone"].str.fullmatch(r"\+1-\d{3}-555-01\d{2}").all()
    assert reg["email"].str.endswith("@example.invalid").all()
    assert reg["name"].str.fullmatch(r"Customer \d+").all()
    tz = reg.groupby("area_id")["timezone"].unique().map(list).to_dict()
    assert tz == {"21001": ["America/Chicago"], "21111": ["America/New_York"]}


def test_registry_shares_on_a_large_area(cfg) -> None:
    big = cfg.model_copy(update={"max_per_area": 200_000})
    reg = generate_registry(_areas(**{"06037": 20_000_000}), big)
    assert len(reg) == 200_000

    segments = reg["segment"].value_counts(normalize=True)
    for name, share in cfg.segment_shares.items():
        assert segments[name] == pytest.approx(share, abs=0.005)
    languages = reg["language"].value_counts(normalize=True)
    assert languages["zh-CN"] == pytest.approx(cfg.language_shares["zh-CN"], abs=0.005)

    first = reg["channels"].str[0]
    wechat_first_zh = (first[reg["language"] == "zh-CN"] == "wechat").mean()
    wechat_first_en = (first[reg["language"] == "en"] == "wechat").mean()
    assert wechat_first_zh > 0.4 > 0.05 > wechat_first_en


def test_registry_channels_are_plausible(cfg) -> None:
    reg = generate_registry(_areas(**{"21111": 390_033, "21067": 320_000}), cfg)
    channels = reg["channels"]

    assert channels.map(len).between(1, len(CHANNELS)).all()
    assert channels.map(lambda c: len(set(c)) == len(c) and set(c) <= set(CHANNELS)).all()
    critical = channels[reg["segment"] == "critical"]
    assert len(critical) > 50
    assert (critical.map(len) >= 2).all()
    assert critical.map(lambda c: "sms" in c or "voice" in c).all()
    has_wechat = channels.map(lambda c: "wechat" in c)
    assert has_wechat.any()
    assert reg["wechat_openid"].notna().eq(has_wechat).all()
    assert reg.loc[~has_wechat, "wechat_openid"].map(lambda v: v is None).all()


def test_registry_rejects_bad_areas(cfg) -> None:
    with pytest.raises(ValueError, match="timezone"):
        generate_registry(pd.DataFrame({"area_id": ["1"], "customers_served": [5]}), cfg)
    with pytest.raises(ValueError, match="repeats area_id"):
        generate_registry(_areas(**{"21111": 5}).pipe(lambda d: pd.concat([d, d])), cfg)


def test_empty_registry_has_the_columns(cfg) -> None:
    reg = generate_registry(_areas(**{"21111": 0}), cfg)
    assert reg.empty and tuple(reg.columns) == REGISTRY_COLUMNS


def test_registry_has_opt_in_per_message_type_near_its_share(cfg) -> None:
    areas = _areas(**{"21111": 500_000, "21001": 80_000})
    registry = generate_registry(areas, cfg)
    assert registry["opt_in_risk"].dtype == bool and registry["opt_in_outage"].dtype == bool
    assert abs(registry["opt_in_risk"].mean() - cfg.opt_in_risk_share) < 0.01
    assert abs(registry["opt_in_outage"].mean() - cfg.opt_in_outage_share) < 0.01
    # consent draws come from their own stream: segments and channels are unchanged by them
    fewer = generate_registry(areas, cfg.model_copy(update={"opt_in_risk_share": 0.5}))
    pd.testing.assert_series_equal(fewer["segment"], registry["segment"])
    assert (fewer["opt_in_risk"] <= registry["opt_in_risk"]).all()
