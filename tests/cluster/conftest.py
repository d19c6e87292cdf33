from __future__ import annotations

from .._pg import pg_url

__all__ = ["pg_url"]
