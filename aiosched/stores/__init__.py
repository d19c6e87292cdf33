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

    PostgreSQL options (query string, the rest goes to asyncpg): ``schema`` (default
    ``aiosched``), ``lease``, ``heartbeat``, ``pool_size``, ``batch``, ``history_limit``,
    ``history_max_age``, ``command_timeout`` (see :class:`~.postgres.PostgresStore`).

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
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    raise StoreError(
        f"unknown store {url!r}: expected memory://, sqlite:///path or postgresql://...; got scheme {scheme!r}"
    )


def _postgres(url: str) -> Store:
    """``postgresql://user@host:5432/db?schema=aiosched&lease=30&heartbeat=5&pool_size=10`` (asyncpg needed)."""
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(f"the PostgreSQL store needs asyncpg: pip install 'aiosched[postgres]' ({exc})") from None
    return PostgresStore.from_url(url)


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
