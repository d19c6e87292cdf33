"""Stores: where schedules and run history live. ``open_store(url)`` picks the backend."""

from __future__ import annotations

from ..exceptions import StoreError
from .base import Claim, Release, Store
from .memory import MemoryStore

__all__ = ["Claim", "MemoryStore", "Release", "Store", "open_store"]


def open_store(url: str | Store | None) -> Store:
    """A store for ``url``: ``memory://`` (or None), ``sqlite:///path``, ``postgresql://...``.

    Raises StoreError for an unknown scheme. The store is not started yet.
    """
    if isinstance(url, Store):
        return url
    if url is None or url in ("memory", "memory://"):
        return MemoryStore()
    scheme = url.split(":", 1)[0].lower()
    raise StoreError(f"unknown store {url!r}: expected memory:// (more backends to come); got scheme {scheme!r}")
