"""Burst benchmark: N no-op async jobs, all due at one instant, fired by three peers.

Peers
    floor        bare asyncio (written below): a heap of (fire timestamp, seq, job), one
                 ``loop.call_at`` timer, APScheduler 3 ``DateTrigger`` for the fire-time math.
    apscheduler  APScheduler 3.11 ``AsyncIOScheduler`` (MemoryJobStore, AsyncIOExecutor,
                 ``misfire_grace_time=None``, ``coalesce=False``).
    aiosched     this project's ``Scheduler`` (reported as n/a while it cannot be imported).

Every (peer, size, round) runs in a fresh subprocess (``--worker PEER N``) that prints one
JSON line, so memory and GC state never leak between peers; rounds alternate the peer order
and the table shows the median of the rounds. GC is left as each library has it by default.

In a worker, the scheduler is started first and the N jobs are added to the *running*
scheduler (the usual way jobs reach a live asyncio app, and what ``async with Scheduler()``
implies). APScheduler 3 jobs added *before* ``start()`` are only queued, then stored in bulk by
``start()`` without one wake-up per add, which is cheaper; this benchmark does not use that path.

All jobs get the same run date, ``due``, chosen before the adds as
``now + estimated add time * 1.5 + 1 s``. The estimate comes from earlier runs of the same peer
(scaled up from a smaller size when needed); a run whose adds are not done 0.1 s before ``due``
is reported as late and retried with a larger margin, so no job is late when the clock reaches
``due``.

Measured per run:
    add       wall time of the N adds plus one loop pass (APScheduler defers one wake-up per
              add to the loop; that pass runs them), in microseconds per job;
    RSS       /proc/self/statm resident size after the adds minus before, in bytes per job;
    burst     from ``due`` to the start of the last job (``time.time()`` taken inside the job);
    fires/s   N / burst.
Each job increments a counter; the worker checks that it equals N (and stays N) before it
reports. The ratios are burst-time ratios: "x floor" = peer burst / floor burst (higher is
slower), same for "x APS".

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_burst.py --quick          # 10k jobs, 1 round
    /tmp/venv/bin/python benchmarks/bench_burst.py                  # 10k and 100k, 3 rounds
    /tmp/venv/bin/python benchmarks/bench_burst.py --sizes 1000,50000 --rounds 5
    /tmp/venv/bin/python benchmarks/bench_burst.py --worker floor 10000   # one raw run (JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS = ("floor", "apscheduler", "aiosched")
DEFAULT_ADD_US = 60.0  # first-run guess of the add cost when nothing has been measured yet
READY_GUARD_S = 0.1  # the adds must be done this long before the due instant
BURST_TIMEOUT_S = 600.0
WORKER_TIMEOUT_S = 1800.0
MAX_ATTEMPTS = 3

JobFunc = Callable[[], Coroutine[Any, Any, None]]


# --------------------------------------------------------------------------------------------
# The job and what it records
# --------------------------------------------------------------------------------------------


class Probe:
    """What the no-op jobs record: how many ran, and when the first and the last started."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = math.inf
        self.last = -math.inf
        self.done = asyncio.Event()


_probe = Probe(0)


async def noop() -> None:
    """The benchmarked job: note the start time and count the run."""
    now = time.time()
    probe = _probe
    probe.count += 1
    if now < probe.first:
        probe.first = now
    if now > probe.last:
        probe.last = now
    if probe.count == probe.n:
        probe.done.set()


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------


class Peer(Protocol):
    async def start(self) -> None: ...
    async def add_all(self, n: int, due: datetime) -> None: ...
    async def stop(self) -> None: ...


class _FloorJob:
    __slots__ = ("fire_time", "func", "trigger")

    def __init__(self, func: JobFunc, trigger: DateTrigger, fire_time: datetime) -> None:
        self.func = func
        self.trigger = trigger
        self.fire_time = fire_time


class FloorScheduler:
    """The least a trigger-driven asyncio scheduler must do: heap, one timer, create_task."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, _FloorJob]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._tasks: set[asyncio.Task[None]] = set()

    def add_job(self, func: JobFunc, run_date: datetime) -> None:
        trigger = DateTrigger(run_date=run_date, timezone="UTC")
        fire_time: datetime | None = trigger.get_next_fire_time(None, datetime.now(UTC))
        if fire_time is not None:
            self._push(_FloorJob(func, trigger, fire_time))

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()

    def _push(self, job: _FloorJob) -> None:
        ts = job.fire_time.timestamp()
        heapq.heappush(self._heap, (ts, next(self._seq), job))
        if ts < self._timer_at:
            self._arm(ts)

    def _arm(self, ts: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = ts
        self._timer = self._loop.call_at(self._loop.time() + max(0.0, ts - time.time()), self._wake)

    def _wake(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now_ts = time.time()
        now = datetime.fromtimestamp(now_ts, UTC)
        heap, again = self._heap, []
        while heap and heap[0][0] <= now_ts:
            job = heapq.heappop(heap)[2]
            task = self._loop.create_task(job.func())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            next_fire: datetime | None = job.trigger.get_next_fire_time(job.fire_time, now)
            if next_fire is not None:
                job.fire_time = next_fire
                again.append(job)
        for job in again:
            self._push(job)
        if heap and self._timer is None:
            self._arm(heap[0][0])


class FloorPeer:
    async def start(self) -> None:
        self._sched = FloorScheduler()

    async def add_all(self, n: int, due: datetime) -> None:
        add_job = self._sched.add_job
        for _ in range(n):
            add_job(noop, due)

    async def stop(self) -> None:
        self._sched.shutdown()


class APSchedulerPeer:
    async def start(self) -> None:
        from apscheduler.executors.asyncio import AsyncIOExecutor  # type: ignore[import-untyped]
        from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

        self._sched = AsyncIOScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": AsyncIOExecutor()},
            job_defaults={"misfire_grace_time": None, "coalesce": False},
            timezone="UTC",
        )
        self._sched.start()

    async def add_all(self, n: int, due: datetime) -> None:
        add_job = self._sched.add_job
        for i in range(n):
            add_job(noop, "date", run_date=due, id=f"j{i}")

    async def stop(self) -> None:
        self._sched.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs on the next loop pass


class AioschedPeer:
    async def start(self) -> None:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        from aiosched import Scheduler

        self._cm = Scheduler(timezone="UTC")
        self._sched = await self._cm.__aenter__()

    async def add_all(self, n: int, due: datetime) -> None:
        add_job = self._sched.add_job
        for i in range(n):
            await add_job(noop, "date", run_date=due, id=f"j{i}", misfire_grace_time=None)

    async def stop(self) -> None:
        await self._cm.__aexit__(None, None, None)


PEER_CLASSES: dict[str, Callable[[], Peer]] = {
    "floor": FloorPeer,
    "apscheduler": APSchedulerPeer,
    "aiosched": AioschedPeer,
}


# --------------------------------------------------------------------------------------------
# Worker: one (peer, size) run in this process
# --------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gc_collections() -> int:
    return sum(gen["collections"] for gen in gc.get_stats())


async def run_worker(peer_name: str, n: int, add_estimate_s: float) -> dict[str, Any]:
    global _probe
    _probe = probe = Probe(n)
    result: dict[str, Any] = {"peer": peer_name, "n": n}
    peer = PEER_CLASSES[peer_name]()
    await peer.start()
    try:
        due_ts = time.time() + add_estimate_s * 1.5 + 1.0
        due = datetime.fromtimestamp(due_ts, UTC)
        rss0, gc0, t0 = rss_bytes(), gc_collections(), time.perf_counter()
        await peer.add_all(n, due)
        await asyncio.sleep(0)  # let deferred per-add work (APScheduler's wake-ups) run
        add_s = time.perf_counter() - t0
        rss1, gc1, ready_ts = rss_bytes(), gc_collections(), time.time()
        result.update(
            add_s=add_s,
            add_us=add_s / n * 1e6,
            rss_delta_bytes=rss1 - rss0,
            rss_bytes_per_job=(rss1 - rss0) / n,
            gc_collections_add=gc1 - gc0,
            margin_s=due_ts - ready_ts,
        )
        if ready_ts > due_ts - READY_GUARD_S:
            result["error"] = f"late: adds done {ready_ts - due_ts:+.3f} s from due (guard {READY_GUARD_S} s)"
            return result
        if probe.count:
            result["error"] = f"early: {probe.count} jobs ran before their due time"
            return result
        await asyncio.wait_for(probe.done.wait(), timeout=due_ts - time.time() + BURST_TIMEOUT_S)
        gc2 = gc_collections()
        await asyncio.sleep(0.05)  # nothing may run twice
        if probe.count != n:
            raise AssertionError(f"{probe.count} runs, expected {n}")
        burst_s = probe.last - due_ts
        result.update(
            burst_s=burst_s,
            first_lag_s=probe.first - due_ts,
            fires_per_s=n / burst_s if burst_s > 0 else math.inf,
            gc_collections_burst=gc2 - gc1,
            runs=probe.count,
        )
        return result
    finally:
        await peer.stop()


def worker_main(peer_name: str, n: int, add_estimate_s: float | None) -> None:
    estimate = add_estimate_s if add_estimate_s is not None else n * DEFAULT_ADD_US / 1e6
    try:
        result = asyncio.run(run_worker(peer_name, n, estimate))
    except BaseException as exc:  # report anything (incl. a missing aiosched) as one JSON line
        result = {"peer": peer_name, "n": n, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# Driver: spawn the workers, alternate the peers, print the tables
# --------------------------------------------------------------------------------------------


def spawn(peer: str, n: int, add_estimate_s: float | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, str(n)]
    if add_estimate_s is not None:
        cmd += ["--add-estimate", f"{add_estimate_s:.3f}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "n": n, "error": f"worker timed out after {WORKER_TIMEOUT_S:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"peer": peer, "n": n, "error": f"no output: {tail[0]}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"peer": peer, "n": n, "error": f"bad output: {lines[-1][:200]}"}
    return result


class AddEstimates:
    """Per-peer add-time estimates: the slowest seen at a size, else scaled up from a smaller one."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], float] = {}

    def get(self, peer: str, n: int) -> float | None:
        if (peer, n) in self._seen:
            return self._seen[peer, n]
        smaller = [(m, s) for (p, m), s in self._seen.items() if p == peer and m < n]
        if not smaller:
            return None
        m, s = max(smaller)
        return s / m * n * 1.3  # per-add cost may grow with the number of jobs; late runs are retried

    def note(self, peer: str, n: int, add_s: float) -> None:
        self._seen[peer, n] = max(add_s, self._seen.get((peer, n), 0.0))


def run_one(peer: str, n: int, estimates: AddEstimates) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for _ in range(MAX_ATTEMPTS):
        result = spawn(peer, n, estimates.get(peer, n))
        if "add_s" in result:
            estimates.note(peer, n, result["add_s"])
        if not str(result.get("error", "")).startswith("late"):
            break
    return result


def fmt_num(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def summarize(
    results: dict[tuple[str, int], list[dict[str, Any]]], sizes: Sequence[int]
) -> tuple[list[list[str]], list[str]]:
    def med(peer: str, n: int, key: str) -> float | None:
        values = [r[key] for r in results[peer, n] if "error" not in r]
        return statistics.median(values) if values else None

    rows, notes = [], []
    for n in sizes:
        floor_burst, aps_burst = med("floor", n, "burst_s"), med("apscheduler", n, "burst_s")
        for peer in PEERS:
            burst = med(peer, n, "burst_s")
            ok = sum("error" not in r for r in results[peer, n])
            errors = sorted({r["error"] for r in results[peer, n] if "error" in r})
            notes += [f"{peer} N={n}: {e}" for e in errors]
            rows.append(
                [
                    peer,
                    f"{n:,}",
                    fmt_num(med(peer, n, "add_us"), ".2f"),
                    fmt_num(med(peer, n, "rss_bytes_per_job"), ".0f"),
                    fmt_num(burst, ".4f"),
                    fmt_num(n / burst if burst else None, ",.0f"),
                    fmt_num(burst / floor_burst if burst and floor_burst else None, ".2f"),
                    fmt_num(burst / aps_burst if burst and aps_burst else None, ".2f"),
                    f"{ok}/{len(results[peer, n])}",
                ]
            )
    return rows, notes


HEADERS = ["peer", "N", "add µs/job", "RSS B/job", "due→last start s", "fires/s", "x floor", "x APS", "ok"]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [HEADERS, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def driver_main(sizes: list[int], rounds: int) -> None:
    command = shlex.join([Path(sys.executable).as_posix(), *sys.argv])
    header = [
        f"date:    {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"python:  {platform.python_implementation()} {sys.version.split()[0]}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs",
        f"command: {command}",
        f"sizes:   {', '.join(map(str, sizes))}; rounds: {rounds} (median); peers alternate per round",
    ]
    print("\n".join(header), flush=True)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {(p, n): [] for p in PEERS for n in sizes}
    estimates = AddEstimates()
    for n in sizes:
        for rnd in range(rounds):
            order = PEERS[rnd % len(PEERS) :] + PEERS[: rnd % len(PEERS)]
            for peer in order:
                r = run_one(peer, n, estimates)
                results[peer, n].append(r)
                detail = r.get("error") or (
                    f"add {r['add_us']:.2f} µs/job, {r['rss_bytes_per_job']:.0f} B/job, "
                    f"burst {r['burst_s']:.4f} s, margin {r['margin_s']:.2f} s"
                )
                print(f"  N={n:<8} round {rnd + 1}/{rounds}  {peer:<12} {detail}", file=sys.stderr, flush=True)

    rows, notes = summarize(results, sizes)
    print()
    print(text_table(rows))
    print()
    print("## Burst benchmark\n")
    print("\n".join(f"- {line}" for line in header))
    print()
    print(markdown_table(rows))
    if notes:
        print("\nErrors:\n" + "\n".join(f"- {note}" for note in notes))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated job counts (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; the median is shown (default: 3)")
    parser.add_argument("--quick", action="store_true", help="sizes 10000, rounds 1")
    parser.add_argument("--worker", nargs=2, metavar=("PEER", "N"), help="run one peer once and print one JSON line")
    parser.add_argument("--add-estimate", type=float, help="worker: expected add time in seconds (sets the margin)")
    args = parser.parse_args(argv)
    if args.worker:
        peer, n = args.worker
        if peer not in PEERS:
            parser.error(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
        worker_main(peer, int(n), args.add_estimate)
        return
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    rounds = 1 if args.quick else args.rounds
    if rounds < 1 or not sizes or min(sizes) < 1:
        parser.error("need at least one positive size and one round")
    driver_main(sizes, rounds)


if __name__ == "__main__":
    main()
