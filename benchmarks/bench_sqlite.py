"""SQLite store benchmark: N schedules due at one instant, on a SQLite file and in memory.

Every (store, batch size, round) runs in a fresh subprocess (``--worker STORE N BATCH``) that
prints one JSON line. A worker starts a Scheduler (FakeClock, so "due" is one exact instant),
adds N date schedules due one second later to the *running* scheduler, then advances the
clock by one second and measures:

    add µs       wall time per ``add_job`` (SQLite: each add is one committed transaction)
    last start   from the clock reaching the due instant to the start of the last run
    recorded     ... to every run's final record written (SQLite: committed to the file)
    fires/s      N / recorded
    tx           SQLite transactions committed from the due instant until every record is
                 written: ``release`` (one per wake-up, i.e. N / batch size) plus the batched
                 ``update_runs`` writes of the finished runs

The task is a no-op coroutine (importable by reference, as a durable store requires). The
table shows the median of the rounds. SQLite runs use WAL with ``synchronous=NORMAL`` on a
file in a fresh temporary directory.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_sqlite.py                 # N=10000, batch 10000 and 1000, 3 rounds
    /tmp/venv/bin/python benchmarks/bench_sqlite.py --sizes 1000,50000 --rounds 5
    /tmp/venv/bin/python benchmarks/bench_sqlite.py --worker sqlite 10000 10000   # one raw run (JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
STORES = ("memory", "sqlite")
WORKER_TIMEOUT_S = 600.0


class Probe:
    """Counts the no-op runs and notes when the last one started."""

    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.last = 0.0
        self.done = asyncio.Event()


probe = Probe()


async def noop() -> None:
    probe.count += 1
    probe.last = time.perf_counter()
    if probe.count == probe.expected:
        probe.done.set()


async def run_worker(kind: str, n: int, batch: int) -> dict[str, Any]:
    for path in (str(REPO_ROOT), str(HERE)):
        if path not in sys.path:
            sys.path.insert(0, path)
    from aiosched import FakeClock, RunState, Scheduler
    from aiosched.stores import MemoryStore, SQLiteStore, Store

    # The task must be importable by reference: use this file as the module bench_sqlite, not __main__.
    me = importlib.import_module("bench_sqlite")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = FakeClock(start)
    with tempfile.TemporaryDirectory() as tmp:
        store: Store = (
            SQLiteStore(Path(tmp, "bench.db"), history_limit=n) if kind == "sqlite" else MemoryStore(history_limit=n)
        )
        scheduler = Scheduler(store=store, clock=clock, timezone="UTC", batch_size=batch)
        await scheduler.start()
        try:
            due = start + timedelta(seconds=1)
            t0 = time.perf_counter()
            for i in range(n):
                await scheduler.add_job(me.noop, "date", run_date=due, id=f"j{i}", misfire_grace_time=None)
            add_s = time.perf_counter() - t0
            stats = getattr(store, "stats", {})
            tx0 = stats.get("transactions", 0)
            me.probe.expected = n
            t1 = time.perf_counter()
            clock.advance(1)
            await me.probe.done.wait()
            await scheduler._runner.writer.drain()  # every final record handed to the store is written
            recorded_s = time.perf_counter() - t1
            tx = stats.get("transactions", 0) - tx0
            stored = await scheduler.get_runs(states=[RunState.SUCCEEDED], limit=n + 1)
            if me.probe.count != n or len(stored) != n:
                raise AssertionError(f"{me.probe.count} runs, {len(stored)} stored, expected {n}")
        finally:
            await scheduler.shutdown()
    return {
        "store": kind,
        "n": n,
        "batch": batch,
        "add_us": add_s / n * 1e6,
        "last_start_s": me.probe.last - t1,
        "recorded_s": recorded_s,
        "fires_per_s": n / recorded_s,
        "transactions": tx if kind == "sqlite" else None,
    }


def worker_main(kind: str, n: int, batch: int) -> None:
    try:
        result = asyncio.run(run_worker(kind, n, batch))
    except BaseException as exc:  # report anything as one JSON line
        result = {"store": kind, "n": n, "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


def spawn(kind: str, n: int, batch: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(n), str(batch)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"store": kind, "n": n, "batch": batch, "error": "worker timed out"}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"store": kind, "n": n, "batch": batch, "error": f"no output: {tail[0]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


HEADERS = ["store", "N", "batch", "add µs/job", "last start s", "recorded s", "fires/s", "tx", "ok"]


def summarize(results: dict[tuple[str, int, int], list[dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for (kind, n, batch), runs in results.items():
        good = [r for r in runs if "error" not in r]

        def med(key: str, runs: list[dict[str, Any]] = good) -> float | None:
            values = [r[key] for r in runs if r.get(key) is not None]
            return statistics.median(values) if values else None

        def fmt(x: float | None, spec: str) -> str:
            return "n/a" if x is None else format(x, spec)

        numbers = [("add_us", ".1f"), ("last_start_s", ".3f"), ("recorded_s", ".3f"), ("fires_per_s", ",.0f"),
                   ("transactions", ".0f")]  # fmt: skip
        rows.append(
            [kind, f"{n:,}", f"{batch:,}", *(fmt(med(k), spec) for k, spec in numbers), f"{len(good)}/{len(runs)}"]
        )
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def driver_main(sizes: list[int], batches: list[int], rounds: int) -> None:
    command = shlex.join([Path(sys.executable).as_posix(), *sys.argv])
    header = [
        f"date:    {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"python:  {platform.python_implementation()} {sys.version.split()[0]}, SQLite {_sqlite_version()}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs",
        f"command: {command}",
        f"rounds:  {rounds} (median); stores alternate per round",
    ]
    print("\n".join(header), flush=True)
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for n in sizes:
        for batch in batches:
            for rnd in range(rounds):
                for kind in STORES if rnd % 2 == 0 else STORES[::-1]:
                    r = spawn(kind, n, min(batch, n))
                    results.setdefault((kind, n, min(batch, n)), []).append(r)
                    detail = r.get("error") or f"{r['fires_per_s']:,.0f} fires/s, tx {r['transactions']}"
                    print(f"  N={n} batch={batch} round {rnd + 1} {kind}: {detail}", file=sys.stderr, flush=True)
    errors = [r["error"] for runs in results.values() for r in runs if "error" in r]
    print("\n## SQLite store benchmark\n")
    print("\n".join(f"- {line}" for line in header))
    print()
    print(markdown(summarize(dict(sorted(results.items(), key=lambda kv: (kv[0][1], -kv[0][2], kv[0][0]))))))
    if errors:
        print("\nErrors:\n" + "\n".join(f"- {e}" for e in sorted(set(errors))))


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000", help="comma-separated schedule counts (default: %(default)s)")
    parser.add_argument("--batches", default="10000,1000", help="engine batch sizes (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown (default: 3)")
    parser.add_argument("--worker", nargs=3, metavar=("STORE", "N", "BATCH"), help="run once, print one JSON line")
    args = parser.parse_args(argv)
    if args.worker:
        kind, n, batch = args.worker
        if kind not in STORES:
            parser.error(f"unknown store {kind!r}; choose from {', '.join(STORES)}")
        worker_main(kind, int(n), int(batch))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.rounds < 1 or not sizes or min(sizes) < 1 or not batches or min(batches) < 1:
        parser.error("need positive sizes, batch sizes and rounds")
    driver_main(sizes, batches, args.rounds)


if __name__ == "__main__":
    main()
