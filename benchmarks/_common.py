"""Shared plumbing of the benchmarks: variants, worker processes, event loops, numbers, tables.

A benchmark script has a driver and a worker. The driver spawns one fresh worker process per
(variant, size, round) with :func:`spawn`; the worker does one measurement and prints one JSON
line, so memory, GC and loop state never leak from one peer into the next.

A :class:`Variant` names what a worker runs: the peer (``floor``, ``apscheduler`` or
``aiosched``), the event loop (``asyncio`` or ``uvloop``), the GC mode (``default``,
``freeze`` after the adds, ``off``), whether aiosched's Prometheus metrics are started, and
aiosched's store (``memory``, ``sqlite``, ``postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import resource
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: where workers import aiosched from: this checkout, or another one (A/B runs of a change)
AIOSCHED_SRC = Path(os.environ.get("AIOSCHED_BENCH_SRC", REPO_ROOT))
PEERS = ("floor", "apscheduler", "aiosched")
LOOPS = ("asyncio", "uvloop")
GC_MODES = ("default", "freeze", "off")
STORES = ("memory", "sqlite", "postgres")
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
WORKER_TIMEOUT_S = 900.0

T = TypeVar("T")
Result = dict[str, Any]


def ensure_paths() -> None:
    """Make ``aiosched`` (this checkout, or ``$AIOSCHED_BENCH_SRC``) and the benchmark modules importable."""
    for path in (str(AIOSCHED_SRC), str(BENCH_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)


# --------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """What one worker runs: a peer and how it is set up."""

    peer: str
    loop: str = "asyncio"
    gc: str = "default"
    metrics: bool = False
    store: str = "memory"

    @property
    def label(self) -> str:
        """A short table label, e.g. ``aiosched +metrics`` or ``floor [uvloop]``."""
        parts = [self.peer]
        if self.store != "memory":
            parts.append(f"@{self.store}")
        if self.metrics:
            parts.append("+metrics")
        if self.gc != "default":
            parts.append(f"gc={self.gc}")
        if self.loop != "asyncio":
            parts.append(f"[{self.loop}]")
        return " ".join(parts)

    def args(self) -> list[str]:
        """The worker command-line options that rebuild this variant."""
        out = ["--loop", self.loop, "--gc", self.gc, "--store", self.store]
        return [*out, "--metrics"] if self.metrics else out

    def baseline(self, peer: str) -> Variant:
        """The plain ``peer`` on the same loop: what this variant's ratios are taken against."""
        return Variant(peer, loop=self.loop)

    def but(self, **changes: Any) -> Variant:
        """A copy with ``changes``."""
        return replace(self, **changes)


def add_variant_args(parser: argparse.ArgumentParser) -> None:
    """The worker options of :meth:`Variant.args`."""
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop (default: %(default)s)")
    parser.add_argument("--gc", choices=GC_MODES, default="default", help="GC mode (default: %(default)s)")
    parser.add_argument("--store", choices=STORES, default="memory", help="aiosched store (default: %(default)s)")
    parser.add_argument("--metrics", action="store_true", help="aiosched: start SchedulerMetrics")


def variant_from(peer: str, ns: argparse.Namespace) -> Variant:
    """The variant a worker was started with."""
    if peer not in PEERS:
        raise SystemExit(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
    return Variant(peer, loop=ns.loop, gc=ns.gc, metrics=ns.metrics, store=ns.store)


# --------------------------------------------------------------------------------------------
# Event loops, GC and process counters (worker side)
# --------------------------------------------------------------------------------------------


class CountingSelector(selectors.DefaultSelector):
    """The default selector, counting ``select()`` calls: one per event loop iteration."""

    calls = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        CountingSelector.calls += 1
        return super().select(timeout)


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for the named loop; the asyncio one counts its iterations (:class:`CountingSelector`)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return lambda: asyncio.SelectorEventLoop(CountingSelector())


def loop_iterations() -> int | None:
    """Event loop iterations so far (``select()`` calls); None on uvloop, where they are not visible."""
    return CountingSelector.calls if CountingSelector.calls else None


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh loop of the named kind."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main())


def apply_gc_at_start(mode: str) -> None:
    """``off`` disables the cyclic GC for the whole worker; the other modes act later."""
    if mode == "off":
        gc.disable()


def apply_gc_after_adds(mode: str) -> None:
    """``freeze`` moves everything allocated so far (the schedules) out of the GC's reach."""
    if mode == "freeze":
        gc.collect()
        gc.freeze()


class GcTimer:
    """Wall time spent in CPython's cyclic GC, per generation, while :meth:`start`-ed (via ``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._t0
            self.counts[generation] += 1

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def gc_collections() -> int:
    """Collections of all generations so far."""
    return sum(gen["collections"] for gen in gc.get_stats())


def rss_bytes() -> int:
    """Resident set size of this process."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_output(result: Result) -> None:
    """Print a worker's one JSON line."""
    print(json.dumps(result), flush=True)


def run_worker_safely(describe: Result, body: Callable[[], Result]) -> None:
    """Run a worker body and print its result, or the error it raised, as one JSON line."""
    try:
        result = body()
    except BaseException as exc:  # report anything (a missing aiosched, a failed check) as data
        result = {**describe, "error": f"{type(exc).__name__}: {exc}"}
    worker_output(result)


# --------------------------------------------------------------------------------------------
# PostgreSQL (optional)
# --------------------------------------------------------------------------------------------


def postgres_status() -> str | None:
    """None if the aiosched PostgreSQL store can be used here, else why not."""
    ensure_paths()
    try:
        import asyncpg  # type: ignore[import-untyped]

        from aiosched.stores.postgres import PostgresStore  # noqa: F401
    except ImportError as exc:
        return f"PostgreSQL store not importable ({exc})"

    async def probe() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # no server: the rows say n/a
        return f"no PostgreSQL server at {PG_DSN} ({type(exc).__name__})"
    return None


async def drop_pg_schema(schema: str) -> None:
    """Remove a benchmark's schema (each worker uses its own)."""
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# Driver side: spawning workers, medians, tables
# --------------------------------------------------------------------------------------------


def spawn(script: Path, args: Sequence[str], describe: Result, timeout: float = WORKER_TIMEOUT_S) -> Result:
    """Run ``script --worker ...`` in a fresh interpreter and return its JSON line (or an error)."""
    cmd = [sys.executable, str(script), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {**describe, "error": f"worker timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {**describe, "error": f"no output: {tail[0][:300]}"}
    try:
        result: Result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {**describe, "error": f"bad output: {lines[-1][:200]}"}
    return result


def rotate(items: Sequence[T], by: int) -> list[T]:
    """``items`` rotated left by ``by`` (peers alternate their order from round to round)."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the finite values, or None if there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    return a / b if a is not None and b else None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def fmt(x: float | None, spec: str) -> str:
    """``x`` formatted, or ``n/a``."""
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def errors_of(results: Iterable[Result]) -> list[str]:
    """The distinct error lines of failed workers, labelled."""
    return sorted(
        {f"{r.get('label', r.get('peer', '?'))} N={r.get('n', '?')}: {r['error']}" for r in results if "error" in r}
    )


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict[str, str]:
    """Where and when the numbers were taken."""
    load = os.getloadavg()
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})",
        "machine": f"{platform.platform()}; {os.cpu_count()} CPUs ({_cpu_model()}); {mem_kb / 1024 / 1024:.0f} GiB",
        "load": f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "libraries": (
            f"APScheduler {_version('APScheduler')}, uvloop {_version('uvloop')}, "
            f"asyncpg {_version('asyncpg')}, anyio {_version('anyio')}"
        ),
    }
