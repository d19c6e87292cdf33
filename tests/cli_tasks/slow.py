"""Writes a start marker (with the count of GC-frozen objects), works for a while, writes an end marker."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path


async def run(marker_dir: str, seconds: float = 1.0) -> str:
    folder = Path(marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"start-{os.getpid()}").write_text(f"started; gc frozen objects: {gc.get_freeze_count()}")
    await asyncio.sleep(seconds)
    (folder / f"end-{os.getpid()}").write_text("ended")
    return f"slept {seconds}"
