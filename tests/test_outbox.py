"""The durable outbox: insert-or-ignore on the advisory id, in a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine

from configs.settings import ControlGroupSettings, load_settings
from serving.advisories import Advisory, decide_advisories
from serving.outbox import _insert_missing, _row, enqueue, metadata, pending

AS_OF = pd.Timestamp("2023-03-10T12:00:00Z")


@pytest.fixture(scope="module")
def advisories() -> list[Advisory]:
    """Real advisories: 40 customers of two areas, one window each."""
    start = pd.Timestamp("2023-03-12T06:00Z")
    windows = pd.DataFrame(
        [
            {
                "window_id": f"w{i}",
                "area_id": area,
                "area_name": f"{area} County",
                "start": start,
                "end": start + pd.Timedelta(hours=4),
                "hours": 4,
                "peak_prob": 0.8,
                "mean_prob": 0.5,
                "expected_customers": 10.0,
                "customers_served": 1000,
                "drivers": [],
                "rank": i + 1,
                "model_version": "m",
                "run_id": "run-1",
                "weather_source": "replay",
            }
            for i, area in enumerate(["21111", "21067"])
        ]
    )
    segments = ["residential", "commercial", "industrial", "critical"]
    customers = pd.DataFrame(
        [
            {
                "customer_id": f"SYN-{area}-{i:06d}",
                "area_id": area,
                "segment": segments[i % 4],
                "channels": ("sms",) if i % 2 else ("wechat", "sms"),
                "language": "zh-CN" if i % 2 else "en",
                "timezone": "America/New_York",
                "synthetic": True,
            }
            for area in ["21111", "21067"]
            for i in range(20)
        ]
    )
    policy = load_settings().advisories.model_copy(
        update={"control_group": ControlGroupSettings(share=0.0)}
    )
    decided = decide_advisories(windows, customers, None, policy, AS_OF)
    result = [a for a in decided if a.kind == "risk_advisory"]  # reminders aside
    assert len(result) == 40
    return result


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _rows_in_file(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT idempotency_key, state, attempts, channel FROM outbox ORDER BY 1"
        ).fetchall()


def test_enqueue_twice_inserts_once(tmp_path: Path, advisories: list[Advisory]) -> None:
    db = tmp_path / "state" / "outbox.db"  # the folder does not exist yet
    first = enqueue(_url(db), advisories)
    second = enqueue(_url(db), advisories)

    assert (first.inserted, first.duplicates) == (40, 0)
    assert (second.inserted, second.duplicates) == (0, 40)
    rows = _rows_in_file(db)
    assert [r[0] for r in rows] == sorted(a.advisory_id for a in advisories)
    assert {(r[1], r[2]) for r in rows} == {("pending", 0)}
    assert {r[3] for r in rows} == {"sms", "wechat"}


def test_enqueue_counts_new_and_repeated_rows(tmp_path: Path, advisories: list[Advisory]) -> None:
    url = _url(tmp_path / "outbox.db")
    enqueue(url, advisories[:10])
    result = enqueue(url, [*advisories[5:15], advisories[14]])  # 5 known, 5 new, 1 repeated
    assert (result.inserted, result.duplicates) == (5, 6)
    assert len(_rows_in_file(tmp_path / "outbox.db")) == 15
    assert enqueue(url, []) == type(result)(inserted=0, duplicates=0)


def test_pending_returns_payload_and_utc_times(tmp_path: Path, advisories: list[Advisory]) -> None:
    url = _url(tmp_path / "outbox.db")
    enqueue(url, advisories)
    frame = pending(url)

    assert len(frame) == 40
    assert str(frame["send_after"].dt.tz) == "UTC"
    assert frame["send_after"].is_monotonic_increasing
    by_key = {a.advisory_id: a for a in advisories}
    for row in frame.itertuples():
        advisory = by_key[row.idempotency_key]
        assert Advisory.from_dict(json.loads(row.payload)) == advisory
        assert row.send_after == pd.Timestamp(advisory.send_after_utc)
        assert (row.run_id, row.customer_id, row.kind) == (
            advisory.run_id,
            advisory.customer_id,
            advisory.kind,
        )
    zh_payload = frame.loc[frame["customer_id"] == "SYN-21111-000001", "payload"].iloc[0]
    assert "停电" in zh_payload  # stored as readable text, not \u escapes


def test_state_is_checked_by_the_database(tmp_path: Path, advisories: list[Advisory]) -> None:
    db = tmp_path / "outbox.db"
    enqueue(_url(db), advisories[:1])
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE outbox SET state = 'lost'")


def test_generic_fallback_ignores_known_keys(tmp_path: Path, advisories: list[Advisory]) -> None:
    engine = create_engine(_url(tmp_path / "outbox.db"))
    now = pd.Timestamp("2023-03-10T12:00Z").to_pydatetime()
    rows = [_row(a, now) for a in advisories]
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            assert _insert_missing(conn, rows[:30]) == 30
            assert _insert_missing(conn, [*rows, rows[0]]) == 10
    finally:
        engine.dispose()
    assert len(_rows_in_file(tmp_path / "outbox.db")) == 40
