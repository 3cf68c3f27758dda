"""Operator mistakes in a profile or in FOREWARN_API_TOKENS, found by trying to break the
product: each is refused when the settings are read, in one line naming the file (or the
entry) and the rule, not accepted and found later (or never)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs.settings import SettingsError, api_tokens, load_settings
from flows.cli import app

READ = "r" * 24
WRITE = "w" * 24


@pytest.mark.parametrize(("cron", "says"), [
    ("61 3 * * *", "minute '61' is outside 0-59"),
    ("0 24 * * *", "hour '24' is outside 0-23"),
    ("0 3 0 * *", "day '0' is outside 1-31"),
    ("0 3 * 13 *", "month '13' is outside 1-12"),
    ("0 3 * * 8", "weekday '8' is outside 0-7"),
    ("*/0 * * * *", "minute step '0'"),
    ("0 3 * * foo", "weekday 'foo' is not a number"),
])
def test_a_cron_value_out_of_range_is_refused_by_every_command(cron: str, says: str) -> None:
    """Only the field count was checked: '61 3 * * *' passed the settings and failed in
    `forewarn deploy` alone, with Prefect's 'Invalid cron string' and no file or key."""
    with pytest.raises(SettingsError, match=rf"deployments\.nightly_cron: '.*': {says}"):
        load_settings(overrides={"deployments": {"nightly_cron": cron}}, environ={})


@pytest.mark.parametrize("cron", ["0 3 * * 1-6", "15 * * * *", "*/5 * * * *",
                                  "0 3 1,15 * mon-fri", "0 0 * jan-mar sun", "0 2 * * 7"])
def test_usual_crons_still_pass(cron: str) -> None:
    assert load_settings(overrides={"deployments": {"refresh_cron": cron}},
                         environ={}).deployments.refresh_cron == cron


def test_a_bad_profile_is_named_by_its_path_without_pydantic_prefixes(tmp_path: Path) -> None:
    bad = tmp_path / "nightly.yaml"
    bad.write_text("deployments:\n  timezone: Mars/Olympus\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["dispatch", "--dry-run", "--config", str(bad)],
                                env={"FOREWARN_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line == (f"forewarn: error: invalid settings (nightly, {bad} over base.yaml): "
                    "deployments.timezone: unknown time zone 'Mars/Olympus' (use an IANA name "
                    "such as America/New_York)")


def test_a_token_without_scopes_is_refused() -> None:
    """'name:token:' started the API with a token that every route then refused (403)."""
    with pytest.raises(SettingsError, match=r"entry 1 \('a'\): scopes: no scope given: end "
                       r"the entry with read, write or read\+write"):
        api_tokens({"FOREWARN_API_TOKENS": f"a:{READ}:"})


def test_one_token_under_two_names_is_refused_without_showing_it() -> None:
    """The same token for two holders: the API could not tell who called or which scopes
    apply (the last entry silently won)."""
    with pytest.raises(SettingsError, match=r"entries 'a' and 'b' have the same token") as err:
        api_tokens({"FOREWARN_API_TOKENS": f"a:{READ}:read,b:{READ}:write"})
    assert READ not in str(err.value)


def test_a_token_with_a_space_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match=r"entry 1 \('a'\): token: API tokens must not "
                       r"contain spaces") as err:
        api_tokens({"FOREWARN_API_TOKENS": "a:read token 0123456789abcdef:read"})
    assert "0123456789abcdef" not in str(err.value)


def test_serve_refuses_bad_tokens_in_one_line(tmp_path: Path, monkeypatch) -> None:
    import uvicorn

    def never(*_: object, **__: object) -> None:
        raise AssertionError("serve started with a bad token list")

    monkeypatch.setattr(uvicorn, "run", never)  # a regression fails instead of serving
    result = CliRunner().invoke(app, ["serve", "--port", "1"],
                                env={"FOREWARN_HOME": str(tmp_path / "home"),
                                     "FOREWARN_API_TOKENS": f"a:{READ}:read,b:{WRITE}:"})
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("forewarn: error: FOREWARN_API_TOKENS entry 2 ('b'): scopes: no scope")
    assert WRITE not in result.output


def test_good_tokens_still_load() -> None:
    tokens = api_tokens({"FOREWARN_API_TOKENS": f"a:{READ}:read,b:{WRITE}:read+write"})
    assert [(t.name, sorted(t.scopes)) for t in tokens] == [("a", ["read"]),
                                                             ("b", ["read", "write"])]
