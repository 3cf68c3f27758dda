"""An outbox path that is not an SQLite database (a text file, a directory): every command
that opens it (dispatch, advise, serve) stops in one line naming the file, exit 2, and leaves
the file as it was, instead of a sqlalchemy traceback (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from serving.outbox import OutboxUnreadable, open_engine, read_history


def test_a_text_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    db.write_bytes(b"this is not sqlite, just text\n")
    with pytest.raises(OutboxUnreadable, match=rf"outbox database {db}: not an SQLite database"):
        open_engine(f"sqlite:///{db}")
    assert db.read_bytes() == b"this is not sqlite, just text\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox.db"]  # no -wal, no -shm


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outbox.db").mkdir()
    with pytest.raises(OutboxUnreadable, match="not a file"):
        open_engine(f"sqlite:///{tmp_path / 'outbox.db'}")


def test_a_missing_or_empty_file_is_still_a_new_outbox(tmp_path: Path) -> None:
    assert read_history(f"sqlite:///{tmp_path / 'new' / 'outbox.db'}").empty
    (tmp_path / "empty.db").write_bytes(b"")
    assert read_history(f"sqlite:///{tmp_path / 'empty.db'}").empty


@pytest.mark.parametrize("args", [["dispatch", "--dry-run"], ["dispatch", "--limit", "5"]])
def test_dispatch_names_the_file_in_one_line(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    pd.DataFrame({"customer_id": ["SYN-1"], "channels": [["email"]], "phone": [None],
                  "email": ["x@example.invalid"]}).to_parquet(home / "customers.parquet")
    db = home / "outbox.db"
    db.write_bytes(b"not a database")
    result = CliRunner().invoke(app, args, env={"FOREWARN_HOME": str(home)})
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("forewarn:")]
    assert line.startswith(f"forewarn: error: outbox database {db}: not an SQLite database")
    assert "Traceback" not in result.output
    assert db.read_bytes() == b"not a database"
