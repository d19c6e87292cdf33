"""The benchmarked jobs and what they record.

They live in their own module so that a durable aiosched store can reference them by name
(``_jobs:burst_job``); a worker imports this module as ``_jobs`` (the benchmarks directory is
on ``sys.path``), never as ``__main__``. Each probe is module state that its worker resets.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array


class BurstProbe:
    """How many burst jobs ran, and when the first and the last started (``time.time()``)."""

    def __init__(self, n: int = 0) -> None:
        self.n = n
        self.count = 0
        self.first = math.inf
        self.last = -math.inf
        self.done = asyncio.Event()


burst = BurstProbe()


async def burst_job() -> None:
    """A no-op job of the burst: note the start time and count the run."""
    now = time.time()
    probe = burst
    probe.count += 1
    if now < probe.first:
        probe.first = now
    if now > probe.last:
        probe.last = now
    if probe.count == probe.n:
        probe.done.set()


class SteadyProbe:
    """Per-schedule run counts and the lateness of each run whose fire time is in the window.

    Schedule ``i`` fires at ``first[i] + k * period`` for k = 0, 1, ...; every peer runs every
    fire (no coalescing, no misfire limit), so the k-th run of schedule ``i`` is the one of
    fire time ``first[i] + k * period``, and its lateness is its start time minus that.
    """

    def __init__(self, first: list[float] | None = None, period: float = 1.0, window: tuple[float, float] = (0, 0)):
        self.first = first or []
        self.period = period
        self.start, self.end = window
        self.counts = array("l", [0] * len(self.first))
        self.lateness = array("d")
        self.expected = sum(self._fires_in_window(t) for t in self.first)
        self.runs = 0
        self.done = asyncio.Event()

    def _fires_in_window(self, first: float) -> int:
        """How many of ``first + k * period`` fall in ``[start, end)``."""
        lo = max(0, math.ceil((self.start - first) / self.period - 1e-9))
        hi = max(0, math.ceil((self.end - first) / self.period - 1e-9))
        return hi - lo


steady = SteadyProbe()


async def steady_job(i: int) -> None:
    """A no-op interval job: its lateness against the nominal fire time of this run."""
    now = time.time()
    probe = steady
    k = probe.counts[i]
    probe.counts[i] = k + 1
    nominal = probe.first[i] + k * probe.period
    if probe.start <= nominal < probe.end:
        probe.lateness.append(now - nominal)
        probe.runs += 1
        if probe.runs == probe.expected:
            probe.done.set()


idle_runs = 0


async def idle_job() -> None:
    """A job that should not run during the idle window (its schedule is an hour away)."""
    global idle_runs
    idle_runs += 1
