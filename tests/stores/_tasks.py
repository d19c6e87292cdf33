"""Tasks for the SQLite tests: importable by reference from the test process and its children."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def tick(tag: str = "") -> str:
    return tag


async def hang(markers: str, name: str) -> str:
    """First call: leave ``<name>.1`` and hang (until killed). A re-run leaves ``<name>.2`` and returns."""
    first = Path(markers, f"{name}.1")
    if first.exists():
        Path(markers, f"{name}.2").write_text("re-run")
        return "re-run"
    first.write_text("started")
    await asyncio.sleep(3600)
    return "never"
