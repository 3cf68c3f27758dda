"""Settings: one typed object from base.yaml + a profile + environment, failing fast."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from configs.settings import SettingsError, load_settings, tool_environment

REPO = Path(__file__).resolve().parents[1]


def test_kentucky_profile_overrides_base_and_environment_sets_paths(tmp_path):
    s = load_settings(REPO / "configs/kentucky.yaml",
                      environ={"FOREWARN_DATA_DIR": "/data/x", "FOREWARN_HOME": str(tmp_path)})
    assert s.profile == "kentucky"
    assert s.areas.states == ("21", "51")
    assert s.customers.timezone_by_area["21227"] == "America/Chicago"  # Warren County, KY
    assert s.paths.data_dir == Path("/data/x")
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert s.paths.outbox_url.endswith(f"{tmp_path.name}/outbox.db")
    assert s.mirror_dir == tmp_path / "meteostat"
    env = tool_environment(s)
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / "prefect")
    assert env["MS_NETWORK_MAX_RETRIES"] == "0"


def test_defaults_without_environment():
    s = load_settings(environ={})
    assert s.paths.data_dir == Path("../shared/data")
    assert s.paths.home == Path(".forewarn")
    assert s.mlflow.tracking_uri is None


def test_tracking_uri_from_environment():
    s = load_settings(environ={"FOREWARN_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert s.tracking_uri == "http://127.0.0.1:5000"


def test_test_period_must_follow_training(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  test_start: 2022-06-01T00:00:00Z\n")
    with pytest.raises(SettingsError, match="test period must be later"):
        load_settings(bad, environ={})


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("windows:\n  min_probabilty: 0.3\n")
    with pytest.raises(SettingsError, match="windows.min_probabilty"):
        load_settings(bad, environ={})
    shares = tmp_path / "shares.yaml"
    shares.write_text("customers:\n  segment_shares: {residential: 0.5, commercial: 0.1}\n")
    with pytest.raises(SettingsError, match="sum to 1"):
        load_settings(shares, environ={})


def test_missing_profile_and_broken_yaml(tmp_path):
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("areas: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(broken)


def test_policy_comes_from_policy_yaml_and_a_profile_may_point_elsewhere(tmp_path):
    s = load_settings(REPO / "configs/kentucky.yaml", environ={})
    assert s.policy_file == REPO / "configs/policy.yaml"
    assert s.advisories.segments["critical"].steps_h == (72, 48, 24, 4)
    assert s.advisories.segments["critical"].quiet_hours_override is True
    assert s.advisories.quiet_hours.start == 21 and s.advisories.quiet_hours.end == 8
    other = tmp_path / "strict.yaml"
    text = (REPO / "configs/policy.yaml").read_text(encoding="utf-8")
    other.write_text(text.replace("share: 0.05", "share: 0.2"), encoding="utf-8")
    profile = tmp_path / "pilot.yaml"
    profile.write_text("policy_file: strict.yaml\nadvisories:\n  quiet_hours: {start: 22}\n")
    pilot = load_settings(profile, environ={})
    assert pilot.policy_file == other
    assert pilot.advisories.control_group.share == 0.2
    assert pilot.advisories.quiet_hours.start == 22 and pilot.advisories.quiet_hours.end == 8


def test_bad_policy_values_are_named(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("advisories:\n  segments:\n    critical: {steps_h: [4, 4]}\n"
                       "    residential: {channels: [pigeon]}\n")
    with pytest.raises(SettingsError) as err:
        load_settings(profile, environ={})
    assert "steps_h must be distinct" in str(err.value)
    assert "unknown channels ['pigeon']" in str(err.value)


def test_model_times_share_one_utc_tzinfo():
    """YAML times (datetime.timezone.utc) and overridden strings ("...Z", parsed by pydantic)
    end up with the same tzinfo, so pandas can build ranges between them."""
    import pandas as pd

    s = load_settings(environ={}, overrides={"model": {"test_end": "2023-04-01T00:00:00Z",
                                                       "train_start": "2022-03-01T00:00:00"}})
    assert {s.model.train_start.tzinfo, s.model.test_start.tzinfo, s.model.test_end.tzinfo} \
        == {UTC}
    days = pd.date_range(pd.Timestamp(s.model.test_start), pd.Timestamp(s.model.test_end))
    assert len(days) == 91
