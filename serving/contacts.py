"""The contact book: where a customer can be reached, looked up at send time.

Contacts never travel in the outbox payload; the dispatcher asks a :class:`ContactBook` for
them just before sending, so that a changed phone number or an opt-out recorded after the
advisory was decided is honoured. :class:`RegistryContactBook` serves the SYNTHETIC registry
of ``features/customers.py`` (fictional numbers and addresses); a utility plugs its CRM in
behind the same protocol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from features.customers import (
    CHANNELS_COL,
    CUSTOMER_ID,
    EMAIL,
    NAME,
    PHONE,
    REGISTRY_COLUMNS,
    WECHAT_OPENID,
)
from serving.channels.base import Contact

PUSH_TOKEN_PREFIX = "synthetic-fcm-"  # made-up FCM registration tokens of the demo registry


class ContactBook(Protocol):
    """Looks up one customer's contact details and channel preferences."""

    def lookup(self, customer_id: str) -> Contact | None:
        """The customer's contact, or None when the customer is unknown (or gone)."""
        ...


class RegistryContactBook:
    """Contacts from a customer registry frame (``features.customers.REGISTRY_COLUMNS``).
    The synthetic registry has no app tokens, so customers with ``app_push`` among their
    channels get a made-up one derived from their id."""

    def __init__(self, registry: pd.DataFrame) -> None:
        missing = [c for c in (CUSTOMER_ID, CHANNELS_COL, PHONE, EMAIL) if c not in registry]
        if missing:
            raise ValueError(f"customer registry lacks columns {missing}")
        self._rows: dict[str, Mapping[str, Any]] = {
            str(row[CUSTOMER_ID]): row for row in registry.to_dict(orient="records")
        }

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, customer_id: str) -> Contact | None:
        row = self._rows.get(customer_id)
        if row is None:
            return None
        channels = tuple(str(c) for c in _sequence(row.get(CHANNELS_COL)))
        return Contact(
            customer_id=customer_id,
            channels=channels,
            phone=_text(row.get(PHONE)),
            email=_text(row.get(EMAIL)),
            wechat_openid=_text(row.get(WECHAT_OPENID)),
            push_token=synthetic_push_token(customer_id) if "app_push" in channels else None,
            name=_text(row.get(NAME)),
        )

    @classmethod
    def from_file(cls, path: Path) -> RegistryContactBook:
        """A registry saved with :func:`save_registry` (Parquet)."""
        if not path.is_file():
            raise FileNotFoundError(
                f"customer registry not found: {path} (written by `forewarn nightly`)"
            )
        return cls(pd.read_parquet(path))


def save_registry(registry: pd.DataFrame, path: Path) -> Path:
    """Write the registry (Parquet, channels as lists) for the dispatcher's contact book;
    written to a temporary name and renamed, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = registry.loc[:, [c for c in REGISTRY_COLUMNS if c in registry.columns]].copy()
    frame[CHANNELS_COL] = frame[CHANNELS_COL].map(lambda c: list(_sequence(c)))
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def synthetic_push_token(customer_id: str) -> str:
    """A made-up, stable FCM registration token for a synthetic customer."""
    return PUSH_TOKEN_PREFIX + hashlib.sha256(customer_id.encode("utf-8")).hexdigest()[:40]


def _sequence(value: Any) -> Iterable[Any]:
    if value is None or isinstance(value, str | bytes):
        return (value,) if isinstance(value, str) and value else ()
    try:
        return tuple(value)
    except TypeError:
        return ()


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None
