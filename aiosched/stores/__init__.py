"""Stores: where schedules and run history live. ``open_store(url)`` picks the backend."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from ..exceptions import StoreError
from .base import Claim, Release, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["Claim", "MemoryStore", "Release", "SQLiteStore", "Store", "open_store"]

_SQLITE_OPTIONS = {"history_limit": int, "history_max_age": float, "synchronous": str}


def open_store(url: str | Store | None) -> Store:
    """A store for ``url``: ``memory://`` (or None), ``sqlite:///path``, ``postgresql://...``.

    ``sqlite:///data/aiosched.db`` is a path relative to the working directory and
    ``sqlite:////var/lib/aiosched.db`` an absolute one. Options go in the query string:
    ``?history_limit=10000&history_max_age=604800&synchronous=FULL``.

    Raises StoreError for an unknown scheme or option. The store is not started yet.
    """
    if isinstance(url, Store):
        return url
    if url is None or url in ("memory", "memory://"):
        return MemoryStore()
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return _sqlite(url)
    raise StoreError(
        f"unknown store {url!r}: expected memory:// or sqlite:///path (more backends to come); got scheme {scheme!r}"
    )


def _sqlite(url: str) -> SQLiteStore:
    rest = url[len("sqlite:") :]
    if not rest.startswith("///") or len(rest) == 3:
        raise StoreError(f"bad SQLite store URL {url!r}: expected sqlite:///relative/path or sqlite:////absolute/path")
    path, _, query = rest[3:].partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        kind = _SQLITE_OPTIONS.get(key)
        if kind is None:
            raise StoreError(f"unknown SQLite store option {key!r} in {url!r} (known: {', '.join(_SQLITE_OPTIONS)})")
        try:
            options[key] = kind(value)
        except ValueError:
            raise StoreError(f"SQLite store option {key}={value!r} in {url!r} is not a valid {kind.__name__}") from None
    return SQLiteStore(path, **options)
