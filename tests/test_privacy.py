"""Contact details stay out of logs: the log filter masks them, and the search the
integration test runs over a full run's files finds them when they are there."""

from __future__ import annotations

import gzip
import logging
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from contact_leaks import Contacts, leaks_in_files

from serving.privacy import ContactMaskFilter, mask_handlers, mask_log_text

PHONE, EMAIL, OPENID = "+1-202-555-0107", "syn-21067-000007@example.invalid", "oSYN21067000007"


# --- the log filter ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "masked"), [
    (f"customer SYN-21067-000007 at {PHONE}", "customer SYN-21067-000007 at <phone>"),
    ("call +12025550107 or (202) 555-0107 or 202.555.0107", "call <phone> or <phone> or <phone>"),
    ("wechat +86 138 0013 8000", "wechat <phone>"),
    (f"mail {EMAIL.upper()}, wechat {OPENID}", "mail <email>, wechat <openid>"),
    ("openid oUpF8uMuAJO_M2pxb1Q9zNjWeS6o sent", "openid <openid> sent"),
])
def test_contacts_are_masked(text: str, masked: str) -> None:
    assert mask_log_text(text) == masked


@pytest.mark.parametrize("text", [
    "as-of 2023-03-02T12:00:00+00:00, window 2023-03-03 06:00 to 2023-03-03 18:00",
    "run 20230302T1200Z-20261203T171500Z-a1b2c3 written to /tmp/runs",
    "45,828 customers out in 21111; 1234567 rows; Brier 0.0123 skill +0.045",
    "task open_outages-8a7 finished; outbox_20230701 rows 12",
    "stage 8 of 14: train and evaluate",
])
def test_ordinary_log_lines_are_left_alone(text: str) -> None:
    assert mask_log_text(text) == text


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("serving.dispatch", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_the_filter_masks_message_arguments_and_traceback() -> None:
    try:
        raise ValueError(f"provider rejected {EMAIL}")
    except ValueError as exc:
        record = _record("sending to %s (%s) failed", PHONE, OPENID, exc=exc)
    assert ContactMaskFilter().filter(record) is True  # masks, never drops
    text = logging.Formatter("%(message)s").format(record)
    assert "sending to <phone> (<openid>) failed" in text
    assert "ValueError: provider rejected <email>" in text
    assert PHONE not in text and EMAIL not in text and OPENID not in text
    assert ContactMaskFilter().filter(record) and record.getMessage() == \
        "sending to <phone> (<openid>) failed"  # idempotent


def test_mask_handlers_adds_one_filter_first(tmp_path: Path) -> None:
    handler = logging.FileHandler(tmp_path / "x.log")
    other = logging.Filter()
    handler.addFilter(other)
    mask_handlers(handler)
    mask_handlers(handler)
    assert isinstance(handler.filters[0], ContactMaskFilter) and handler.filters[1] is other
    assert len(handler.filters) == 2
    handler.close()


def test_the_cli_log_file_masks_contacts(tmp_path: Path) -> None:
    from flows.cli import log_to_file

    handler = log_to_file(tmp_path)
    try:
        logging.getLogger("serving.dispatch").warning("dead: customer %s, %s", PHONE, EMAIL)
        logging.getLogger("forewarn.failures").error("run failed", exc_info=ValueError(OPENID))
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger("forewarn.failures").removeHandler(handler)
        logging.getLogger("forewarn.failures").propagate = True
        handler.close()
    text = (tmp_path / "logs" / "forewarn.log").read_text()
    assert "dead: customer <phone>, <email>" in text
    assert "ValueError: <openid>" in text
    assert not Contacts.of([PHONE], [EMAIL], [OPENID]).find(text)


# --- the search over a run's files -----------------------------------------------------------


@pytest.fixture()
def contacts() -> Contacts:
    return Contacts.of([PHONE, "+1-202-555-0199"], [EMAIL], [OPENID])


def test_the_search_finds_contacts_planted_in_each_kind_of_file(tmp_path: Path,
                                                                contacts: Contacts) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "forewarn.log").write_text("2023-03-02 12:00:00 INFO stage 1 of 14\n")
    pd.DataFrame({"customer_id": ["SYN-21067-000007"], "prob": [0.2025550107]}).to_parquet(
        clean / "risk.parquet")
    assert leaks_in_files([clean], contacts) == {}  # ids and numbers are not contacts

    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "forewarn.log").write_text(f"INFO to {PHONE.replace('-', ' ')} ok\n")
    # compressed pages: reading it through pandas shows every value, in any case
    pd.DataFrame({"note": [f"mailto:{EMAIL.upper()}"] * 50}).to_parquet(
        planted / "windows.parquet", compression="gzip")
    db = planted / "outbox.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE outbox (k TEXT, payload TEXT)")
        conn.execute("INSERT INTO outbox VALUES ('a', ?)", (f'{{"wechat": "{OPENID}"}}',))
    conn.close()
    (planted / "artifact.json.gz").write_bytes(gzip.compress(b'{"to": "+12025550199"}'))
    registry = planted / "customers.parquet"
    pd.DataFrame({"phone": [PHONE]}).to_parquet(registry)

    found = leaks_in_files([planted], contacts, exclude=[registry])
    by_file = {key.split(" (")[0]: hits for key, hits in found.items()}
    assert by_file[str(planted / "forewarn.log")] == {"+1 202 555 0107"}
    assert by_file[str(planted / "windows.parquet")] == {EMAIL}
    assert f"{planted / 'windows.parquet'} (parquet via pandas)" in found
    assert by_file[str(db)] == {OPENID}
    assert by_file[str(planted / "artifact.json.gz")] == {"+12025550199"}
    assert str(registry) not in by_file  # excluded: the registry holds contacts by design


def test_contacts_come_from_every_column_of_the_registry() -> None:
    registry = pd.DataFrame({"phone": [PHONE, "+1-202-555-0100"],
                             "email": [EMAIL, "b@example.invalid"],
                             "wechat_openid": [OPENID, None]})
    contacts = Contacts.from_registry(registry)
    assert {PHONE, "+1-202-555-0100", EMAIL, "b@example.invalid", OPENID,
            "+12025550107"} <= contacts.exact
    assert contacts.find(f"x {OPENID} y b@example.invalid") == {OPENID, "b@example.invalid"}
