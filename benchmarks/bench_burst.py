"""Burst benchmark: N no-op async jobs, all due at one instant, fired by each peer.

Peers and variants: see ``_peers.py`` and ``_common.Variant`` (floor, APScheduler 3.11,
aiosched; asyncio or uvloop; GC default, frozen after the adds, or off; aiosched with or
without metrics, on the memory, SQLite or PostgreSQL store).

Every (variant, size, round) runs in a fresh subprocess (``--worker PEER N``) that prints one
JSON line. Rounds rotate the variant order; tables show the median of the rounds, and ratios
are taken per round (against the floor and APScheduler of the same round and loop) before
their median is taken.

All jobs get the same run date, ``due``, chosen before the adds as
``now + estimated add time * 1.5 + 1 s``. The estimate comes from earlier runs of the same
variant (scaled up from a smaller size when needed); a run whose adds are not done 0.1 s before
``due`` is reported as late and retried with a larger margin, so no job is late when the clock
reaches ``due``.

Measured per run:
    add       wall time of the N adds plus one loop pass (APScheduler defers one wake-up per
              add to the loop; that pass runs them), in microseconds per job;
    RSS       /proc/self/statm resident size after the adds minus before, in bytes per job;
    burst     from ``due`` to the start of the last job (``time.time()`` taken inside the job);
    GC        cyclic-GC collections in the burst and the wall time they took (``gc.callbacks``);
    fires/s   N / burst;
    CPU/fire  process CPU time from the end of the adds until the last start, per job (the
              process idles until ``due``; this is the figure least disturbed by other load);
    recorded  (aiosched) from ``due`` until every final run record is written to the store;
    tx        (SQLite) transactions committed from ``due`` until then; ``batches`` are the
              engine passes that claimed schedules (``batch_size`` 256 by default).
Each job increments a counter; the worker checks that it equals N (and stays N) before it
reports.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_burst.py --quick          # 10k jobs, 1 round
    /tmp/venv/bin/python benchmarks/bench_burst.py                  # 10k and 100k, 3 rounds
    /tmp/venv/bin/python benchmarks/bench_burst.py --sizes 1000,50000 --rounds 5 --uvloop
    /tmp/venv/bin/python benchmarks/bench_burst.py --worker aiosched 10000 --metrics   # one raw run
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from _common import (
    GcTimer,
    Result,
    Variant,
    add_variant_args,
    apply_gc_after_adds,
    apply_gc_at_start,
    cpu_seconds,
    environment,
    errors_of,
    fmt,
    gc_collections,
    markdown_table,
    median,
    progress,
    ratio,
    rotate,
    rss_bytes,
    run_on,
    run_worker_safely,
    spawn,
    variant_from,
)

SCRIPT = Path(__file__).resolve()
DEFAULT_ADD_US = {"memory": 60.0, "sqlite": 1500.0, "postgres": 1500.0}  # first guesses of the add cost, by store
READY_GUARD_S = 0.1  # the adds must be done this long before the due instant
BURST_TIMEOUT_S = 600.0
MAX_ATTEMPTS = 3


class Window(Protocol):
    """Something started and stopped around the measured part of a run (a profiler)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------


async def run_burst(variant: Variant, n: int, add_estimate_s: float, window: Window | None = None) -> Result:
    """Add ``n`` date jobs due at one instant to a running peer, wait for all to start, measure."""
    import _jobs
    from _peers import add_many, make_peer

    _jobs.burst = probe = _jobs.BurstProbe(n)
    result: Result = {"label": variant.label, "peer": variant.peer, "n": n}
    peer = make_peer(variant)
    await peer.start()
    try:
        due_ts = time.time() + add_estimate_s * 1.5 + 1.0
        due = datetime.fromtimestamp(due_ts, UTC)

        async def add(i: int) -> None:
            await peer.add_date(_jobs.burst_job, due, f"j{i}")

        rss0, gc0, t0 = rss_bytes(), gc_collections(), time.perf_counter()
        await add_many(peer, n, add)
        await asyncio.sleep(0)  # let deferred per-add work (APScheduler's wake-ups) run
        add_s = time.perf_counter() - t0
        rss1, gc1 = rss_bytes(), gc_collections()
        apply_gc_after_adds(variant.gc)
        ready_ts, ready_cpu = time.time(), cpu_seconds()
        gc_timer = GcTimer()
        result.update(
            add_s=add_s,
            add_us=add_s / n * 1e6,
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
        before = peer.counters()
        gc_timer.start()
        if window is not None:
            await asyncio.sleep(max(0.0, due_ts - time.time() - 0.05))
            window.start()
        try:
            await asyncio.wait_for(probe.done.wait(), timeout=due_ts - time.time() + BURST_TIMEOUT_S)
        finally:
            gc_timer.stop()
            if window is not None:
                window.stop()
        gc2, burst_cpu = gc_collections(), cpu_seconds() - ready_cpu
        drain = getattr(peer, "drain", None)
        if drain is not None:
            await drain()
            result["recorded_s"] = time.time() - due_ts
        await asyncio.sleep(0.05)  # nothing may run twice
        if probe.count != n:
            raise AssertionError(f"{probe.count} runs, expected {n}")
        after = peer.counters()
        burst_s = probe.last - due_ts
        result.update(
            burst_s=burst_s,
            first_lag_s=probe.first - due_ts,
            fires_per_s=n / burst_s if burst_s > 0 else math.inf,
            cpu_us_per_fire=burst_cpu / n * 1e6,
            gc_collections_burst=gc2 - gc1,
            gc_s_burst=sum(gc_timer.seconds),
            gc_s_by_generation=gc_timer.seconds,
            gc_runs_by_generation=gc_timer.counts,
            runs=probe.count,
        )
        for key in ("transactions", "batches", "wakeups"):
            if after.get(key) is not None and before.get(key) is not None:
                result[key] = after[key] - before[key]
        return result
    finally:
        await peer.stop()


def worker_main(variant: Variant, n: int, add_estimate_s: float | None) -> None:
    """One run in this process; prints one JSON line."""
    estimate = add_estimate_s if add_estimate_s is not None else n * DEFAULT_ADD_US[variant.store] / 1e6
    apply_gc_at_start(variant.gc)
    describe = {"label": variant.label, "peer": variant.peer, "n": n}
    run_worker_safely(describe, lambda: run_on(variant.loop, lambda: run_burst(variant, n, estimate)))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


class AddEstimates:
    """Per-variant add-time estimates: the slowest seen at a size, else scaled up from a smaller one."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], float] = {}

    def get(self, key: str, n: int) -> float | None:
        if (key, n) in self._seen:
            return self._seen[key, n]
        smaller = [(m, s) for (k, m), s in self._seen.items() if k == key and m < n]
        if not smaller:
            return None
        m, s = max(smaller)
        return s / m * n * 1.3  # per-add cost may grow with the number of jobs; late runs are retried

    def note(self, key: str, n: int, add_s: float) -> None:
        self._seen[key, n] = max(add_s, self._seen.get((key, n), 0.0))


def run_one(variant: Variant, n: int, estimates: AddEstimates) -> Result:
    """Spawn one worker (retried with a larger margin when its adds were late)."""
    result: Result = {}
    describe = {"label": variant.label, "peer": variant.peer, "n": n}
    key = variant.label.split(" [")[0].replace(" +metrics", "")  # the add cost hardly depends on loop/metrics
    for _ in range(MAX_ATTEMPTS):
        args = ["--worker", variant.peer, str(n), *variant.args()]
        estimate = estimates.get(key, n)
        if estimate is not None:
            args += ["--add-estimate", f"{estimate:.3f}"]
        result = spawn(SCRIPT, args, describe)
        if "add_s" in result:
            estimates.note(key, n, result["add_s"])
        if not str(result.get("error", "")).startswith("late"):
            break
    return result


Results = dict[tuple[Variant, int], list[Result]]


def measure(variants: Sequence[Variant], sizes: Sequence[int], rounds: int) -> Results:
    """Run every variant at every size for ``rounds`` rounds, rotating the order each round."""
    results: Results = {(v, n): [] for v in variants for n in sizes}
    estimates = AddEstimates()
    for n in sizes:
        for rnd in range(rounds):
            for variant in rotate(variants, rnd):
                r = run_one(variant, n, estimates)
                r["round"] = rnd
                results[variant, n].append(r)
                detail = r.get("error") or (
                    f"add {r['add_us']:.2f} µs/job, {r['rss_bytes_per_job']:.0f} B/job, "
                    f"burst {r['burst_s']:.4f} s ({r['fires_per_s']:,.0f}/s), gc {r['gc_collections_burst']}"
                )
                progress(f"  burst N={n:<7} round {rnd + 1}/{rounds} {variant.label:<28} {detail}")
    return results


def value(results: Results, variant: Variant, n: int, key: str, rnd: int | None = None) -> float | None:
    """The median of ``key`` over the good rounds (or its value in round ``rnd``)."""
    runs = [r for r in results.get((variant, n), []) if "error" not in r and (rnd is None or r["round"] == rnd)]
    return median(r.get(key) for r in runs)


def per_round_ratio(results: Results, a: Variant, b: Variant, n: int, key: str) -> float | None:
    """The median over rounds of ``key(a) / key(b)``, both from the same round."""
    rounds = {r["round"] for r in results.get((a, n), [])}
    return median(ratio(value(results, a, n, key, rnd), value(results, b, n, key, rnd)) for rnd in sorted(rounds))


HEADERS = [
    "variant",
    "N",
    "add µs/job",
    "RSS B/job",
    "due→last start s",
    "fires/s",
    "CPU µs/fire",
    "time ÷ floor",
    "fires/s ÷ APS",
    "GC runs in burst",
    "GC s in burst",
    "ok",
]


def table(results: Results, variants: Sequence[Variant], sizes: Sequence[int]) -> str:
    """The burst table (medians; ratios per round)."""
    rows = []
    for n in sizes:
        for v in variants:
            if (v, n) not in results:
                continue
            floor, aps = v.baseline("floor"), v.baseline("apscheduler")
            runs = results[v, n]
            rows.append(
                [
                    v.label,
                    f"{n:,}",
                    fmt(value(results, v, n, "add_us"), ".2f"),
                    fmt(value(results, v, n, "rss_bytes_per_job"), ".0f"),
                    fmt(value(results, v, n, "burst_s"), ".4f"),
                    fmt(value(results, v, n, "fires_per_s"), ",.0f"),
                    fmt(value(results, v, n, "cpu_us_per_fire"), ".1f"),
                    fmt(per_round_ratio(results, v, floor, n, "burst_s"), ".2f"),
                    fmt(per_round_ratio(results, v, aps, n, "fires_per_s"), ".2f"),
                    fmt(value(results, v, n, "gc_collections_burst"), ".0f"),
                    fmt(value(results, v, n, "gc_s_burst"), ".3f"),
                    f"{sum('error' not in r for r in runs)}/{len(runs)}",
                ]
            )
    return markdown_table(HEADERS, rows)


STORE_HEADERS = ["variant", "N", "add µs/job", "due→last start s", "fires/s", "due→recorded s", "batches", "tx", "ok"]


def store_table(results: Results, variants: Sequence[Variant], sizes: Sequence[int]) -> str:
    """The durable-store burst table."""
    rows = []
    for n in sizes:
        for v in variants:
            runs = results.get((v, n))
            if not runs:
                continue
            rows.append(
                [
                    v.label,
                    f"{n:,}",
                    fmt(value(results, v, n, "add_us"), ".1f"),
                    fmt(value(results, v, n, "burst_s"), ".3f"),
                    fmt(value(results, v, n, "fires_per_s"), ",.0f"),
                    fmt(value(results, v, n, "recorded_s"), ".3f"),
                    fmt(value(results, v, n, "batches"), ".0f"),
                    fmt(value(results, v, n, "transactions"), ".0f"),
                    f"{sum('error' not in r for r in runs)}/{len(runs)}",
                ]
            )
    return markdown_table(STORE_HEADERS, rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Standalone entry point: print the burst table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated job counts (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; the median is shown (default: 3)")
    parser.add_argument("--quick", action="store_true", help="sizes 10000, rounds 1")
    parser.add_argument("--uvloop", action="store_true", help="also run every peer on uvloop")
    parser.add_argument("--worker", nargs=2, metavar=("PEER", "N"), help="run one variant once, print one JSON line")
    parser.add_argument("--add-estimate", type=float, help="worker: expected add time in seconds (sets the margin)")
    add_variant_args(parser)
    args = parser.parse_args(argv)
    if args.worker:
        peer, n = args.worker
        worker_main(variant_from(peer, args), int(n), args.add_estimate)
        return
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    rounds = 1 if args.quick else args.rounds
    if rounds < 1 or not sizes or min(sizes) < 1:
        parser.error("need at least one positive size and one round")
    variants = [Variant("floor"), Variant("apscheduler"), Variant("aiosched"), Variant("aiosched", metrics=True)]
    if args.uvloop:
        variants += [v.but(loop="uvloop") for v in variants]
    env = environment()
    results = measure(variants, sizes, rounds)
    print("## Burst benchmark\n")
    print("\n".join(f"- {k}: {v}" for k, v in env.items()))
    print(f"- command: {' '.join([sys.executable, *sys.argv])}\n")
    print(table(results, variants, sizes))
    errors = errors_of(r for runs in results.values() for r in runs)
    if errors:
        print("\nErrors:\n" + "\n".join(f"- {e}" for e in errors))


if __name__ == "__main__":
    main()
