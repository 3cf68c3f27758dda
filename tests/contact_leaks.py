"""Finding customers' contact details where they must not be: run outputs, logs, MLflow and
Prefect stores, the outbox. Used by the integration test after a full run, and tested on
planted contacts in tests/test_privacy.py (a search that finds nothing proves nothing
unless it is shown to find what is there).

Every file is read twice: its raw bytes (as latin-1, so every byte is one character and an
ASCII contact is found wherever it is stored uncompressed), and as text the way a person or
tool would read it: Parquet through pandas, SQLite row by row (every table, every column),
gzip decompressed.
"""

from __future__ import annotations

import gzip
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_TOKEN = re.compile(r"[\w.+@-]{8,}")  # every contact is one such run (phones, e-mails, ids)
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


@dataclass(frozen=True)
class Contacts:
    """The strings to look for: phones as stored and in E.164 digits, e-mails (lower
    case), WeChat OpenIDs."""

    exact: frozenset[str]
    phone_digits: frozenset[str]

    @classmethod
    def of(cls, phones: Iterable[str], emails: Iterable[str], openids: Iterable[str]
           ) -> Contacts:
        phones = [p for p in phones if p]
        digits = {re.sub(r"\D", "", p) for p in phones}
        exact = {*phones, *(e.lower() for e in emails if e), *(o for o in openids if o),
                 *(f"+{d}" for d in digits)}
        return cls(frozenset(exact), frozenset(digits | {d[-10:] for d in digits}))

    @classmethod
    def from_registry(cls, registry: pd.DataFrame) -> Contacts:
        """Every phone number, e-mail address and WeChat OpenID of a customer registry."""
        def column(name: str) -> list[str]:
            return [str(v) for v in registry[name].dropna()] if name in registry else []

        return cls.of(column("phone"), column("email"), column("wechat_openid"))

    def __len__(self) -> int:
        return len(self.exact)

    def find(self, text: str) -> set[str]:
        """The contacts that occur in ``text`` (also inside longer tokens, any case for
        e-mails, and phones in any punctuation: "+1 (202) 555-0107" = "+1-202-555-0107")."""
        found: set[str] = set()
        lengths = {len(c) for c in self.exact}
        lowered = {c.lower(): c for c in self.exact}
        for token in set(_TOKEN.findall(text)):
            low = token.lower()
            for n in lengths:
                for i in range(len(low) - n + 1):
                    if low[i:i + n] in lowered:
                        found.add(lowered[low[i:i + n]])
        for match in set(_PHONE_LIKE.findall(text)):
            digits = re.sub(r"\D", "", match)
            if digits in self.phone_digits:
                found.add(match)
        return found


def readings(path: Path) -> Iterator[tuple[str, str]]:
    """(how it was read, text) for one file: raw bytes always, then Parquet via pandas,
    SQLite rows or decompressed gzip where the file is one."""
    raw = path.read_bytes()
    yield "bytes", raw.decode("latin-1")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        yield "parquet via pandas", frame.to_csv(index=False) + frame.to_string()
    elif raw.startswith(b"SQLite format 3\x00"):
        yield "sqlite rows", sqlite_text(path)
    elif raw.startswith(b"\x1f\x8b"):
        yield "gunzip", gzip.decompress(raw).decode("latin-1")


def sqlite_text(path: Path) -> str:
    """Every row of every table of a SQLite database, as text (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        parts = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                parts.append(" | ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                        for v in row))
        return "\n".join(parts)
    finally:
        conn.close()


def leaks_in_files(roots: Iterable[Path], contacts: Contacts, exclude: Iterable[Path] = ()
                   ) -> dict[str, set[str]]:
    """{"file (how read)": contacts found} for every file under ``roots`` but ``exclude``."""
    skip = {p.resolve() for p in exclude}
    found: dict[str, set[str]] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.resolve() in skip:
                continue
            for how, text in readings(path):
                hits = contacts.find(text)
                if hits:
                    found[f"{path} ({how})"] = hits
    return found


def files_under(roots: Iterable[Path], exclude: Iterable[Path] = ()) -> list[Path]:
    """The files :func:`leaks_in_files` reads (to check the search covered them)."""
    skip = {p.resolve() for p in exclude}
    return [p for root in roots for p in sorted(root.rglob("*"))
            if p.is_file() and p.resolve() not in skip]
