"""Writes a start marker, works for a while, writes an end marker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


async def run(marker_dir: str, seconds: float = 1.0) -> str:
    folder = Path(marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"start-{os.getpid()}").write_text("started")
    await asyncio.sleep(seconds)
    (folder / f"end-{os.getpid()}").write_text("ended")
    return f"slept {seconds}"
