"""Steady benchmark: N interval schedules firing every second, first fires spread over a second.

Schedule ``i`` fires at ``S + i / N + k`` seconds (k = 0, 1, ...), so N fires are due every second,
evenly spread. After a warm-up of ``WARMUP_S`` seconds the worker measures a window of
``duration`` seconds:

    lateness   start time of the run (``time.time()`` inside the job) minus its nominal fire
               time, for every fire whose nominal time is in the window: p50, p99, max;
    CPU        user + system CPU time of the process over the window / window length
               (100 % = one core busy);
    loop/s     event loop iterations (``select()`` calls, same counting selector for every
               peer on the asyncio loop; not visible on uvloop).

Each job counts its own runs; the worker checks that exactly the expected number of fires of the
window ran (every schedule, every second), waiting at most ``GRACE_S`` past the window for
stragglers; a peer that falls further behind is reported with the fires it managed.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_steady.py                # 10,000 schedules, 20 s, 3 rounds
    /tmp/venv/bin/python benchmarks/bench_steady.py --quick        # 5 s, 1 round
    /tmp/venv/bin/python benchmarks/bench_steady.py --worker aiosched 10000 20 --metrics   # one raw run
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

from _common import (
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
    loop_iterations,
    markdown_table,
    median,
    percentile,
    progress,
    ratio,
    rotate,
    run_on,
    run_worker_safely,
    spawn,
    variant_from,
)
from bench_burst import Window

SCRIPT = Path(__file__).resolve()
WARMUP_S = 2.0
GRACE_S = 5.0
ADD_US = {"memory": 60.0, "sqlite": 1500.0, "postgres": 1500.0}  # to place the first fire after the adds


class _Sample:
    def __init__(self) -> None:
        self.wall = time.time()
        self.cpu = cpu_seconds()
        self.loops = loop_iterations()
        self.gc = gc_collections()


async def _sleep_until(ts: float) -> None:
    await asyncio.sleep(max(0.0, ts - time.time()))


async def run_steady(
    variant: Variant, n: int, duration: float, window: Window | None = None, add_us: float | None = None
) -> Result:
    """Add ``n`` one-second interval schedules to a running peer and measure a window of ``duration`` s.

    ``add_us`` is the expected add cost (microseconds per schedule): the first fires are placed
    1.5 times that plus a second after now, so that every schedule is in before they are due.
    """
    import _jobs
    from _peers import add_many, make_peer

    result: Result = {"label": variant.label, "peer": variant.peer, "n": n, "duration": duration}
    peer = make_peer(variant)
    await peer.start()
    try:
        start = math.ceil(time.time() + n * (add_us or ADD_US[variant.store]) / 1e6 * 1.5 + 1.0)
        first = [start + i / n for i in range(n)]
        first = [round(t, 6) for t in first]  # what a datetime holds: whole microseconds
        w0 = start + WARMUP_S
        w1 = w0 + duration
        _jobs.steady = probe = _jobs.SteadyProbe(first, 1.0, (w0, w1))

        async def add(i: int) -> None:
            await peer.add_interval(_jobs.steady_job, 1.0, datetime.fromtimestamp(first[i], UTC), (i,), f"s{i}")

        t0 = time.perf_counter()
        await add_many(peer, n, add)
        await asyncio.sleep(0)
        result["add_us"] = (time.perf_counter() - t0) / n * 1e6
        apply_gc_after_adds(variant.gc)
        if time.time() > start:
            result["error"] = f"late: adds done {time.time() - start:+.3f} s after the first fire"
            return result
        await _sleep_until(w0)
        before, counters0 = _Sample(), peer.counters()
        if window is not None:
            window.start()
        try:
            await _sleep_until(w1)
        finally:
            if window is not None:
                window.stop()
        after, counters1 = _Sample(), peer.counters()
        try:
            await asyncio.wait_for(probe.done.wait(), timeout=max(0.0, w1 + GRACE_S - time.time()))
        except TimeoutError:
            result["error"] = (
                f"behind: {probe.runs:,} of {probe.expected:,} fires ran by {GRACE_S:g} s after the window"
            )
        late = sorted(probe.lateness)
        span = after.wall - before.wall
        result.update(
            expected=probe.expected,
            runs=probe.runs,
            fires_per_s=probe.runs / duration,
            p50_ms=percentile(late, 0.50) * 1e3,
            p99_ms=percentile(late, 0.99) * 1e3,
            max_ms=late[-1] * 1e3 if late else math.nan,
            cpu_pct=(after.cpu - before.cpu) / span * 100,
            loops_per_s=(after.loops - before.loops) / span if after.loops and before.loops else None,
            gc_per_s=(after.gc - before.gc) / span,
        )
        for key in ("wakeups", "transactions", "batches"):
            if counters1.get(key) is not None and counters0.get(key) is not None:
                result[f"{key}_per_s"] = (counters1[key] - counters0[key]) / span
        return result
    finally:
        await peer.stop()


def worker_main(variant: Variant, n: int, duration: float, add_us: float | None) -> None:
    """One run in this process; prints one JSON line."""
    apply_gc_at_start(variant.gc)
    describe = {"label": variant.label, "peer": variant.peer, "n": n}
    run_worker_safely(describe, lambda: run_on(variant.loop, lambda: run_steady(variant, n, duration, None, add_us)))


Results = dict[Variant, list[Result]]


def measure(variants: Sequence[Variant], n: int, duration: float, rounds: int) -> Results:
    """Run every variant ``rounds`` times, rotating the order each round."""
    results: Results = {v: [] for v in variants}
    add_us = {v: ADD_US[v.store] for v in variants}
    for rnd in range(rounds):
        for v in rotate(variants, rnd):
            describe = {"label": v.label, "peer": v.peer, "n": n}
            for _ in range(2):  # once more with twice the margin if the adds were late
                args = ["--worker", v.peer, str(n), str(duration), "--add-us", f"{add_us[v]:.1f}", *v.args()]
                r = spawn(SCRIPT, args, describe)
                late = str(r.get("error", "")).startswith("late")
                add_us[v] = add_us[v] * 2 if late else r.get("add_us", add_us[v]) * 1.3
                if not late:
                    break
            r["round"] = rnd
            results[v].append(r)
            detail = f"p50 {r.get('p50_ms', math.nan):.2f} ms, p99 {r.get('p99_ms', math.nan):.2f} ms, "
            detail += f"max {r.get('max_ms', math.nan):.1f} ms, CPU {r.get('cpu_pct', math.nan):.1f} %"
            if "error" in r:
                detail = f"{r['error']} ({detail})"
            progress(f"  steady N={n} {duration:g}s round {rnd + 1}/{rounds} {v.label:<28} {detail}")
    return results


def _good(results: Results, v: Variant) -> list[Result]:
    return [r for r in results.get(v, []) if "p99_ms" in r and "error" not in r]


def value(results: Results, v: Variant, key: str, rnd: int | None = None) -> float | None:
    """Median of ``key`` over the complete rounds (or its value in round ``rnd``)."""
    return median(r.get(key) for r in _good(results, v) if rnd is None or r["round"] == rnd)


def per_round_ratio(results: Results, a: Variant, b: Variant, key: str) -> float | None:
    """Median over rounds of ``key(a) / key(b)`` from the same round."""
    rounds = sorted({r["round"] for r in results.get(a, [])})
    return median(ratio(value(results, a, key, rnd), value(results, b, key, rnd)) for rnd in rounds)


HEADERS = [
    "variant",
    "N",
    "p50 ms",
    "p99 ms",
    "max ms",
    "CPU % of a core",
    "CPU ÷ floor",
    "loop iterations/s",
    "engine wake-ups/s",
    "fires ran",
    "ok",
]
STORE_HEADERS = [
    "variant",
    "N",
    "p50 ms",
    "p99 ms",
    "max ms",
    "CPU % of a core",
    "batches/s",
    "tx/s",
    "fires ran",
    "ok",
]


def table(results: Results, variants: Sequence[Variant], *, stores: bool = False) -> str:
    """The steady table: medians of the complete rounds; a variant that fell behind shows what ran.

    ``stores`` picks the durable-store columns (claiming passes and SQLite transactions per second)
    instead of the floor ratio and loop counters.
    """
    rows = []
    for v in variants:
        runs = results.get(v, [])
        if not runs:
            continue
        good = _good(results, v)
        shown = good or [r for r in runs if "p99_ms" in r]

        def med(key: str, shown: list[Result] = shown) -> float | None:
            return median(r.get(key) for r in shown)

        head = [v.label, fmt(med("n"), ",.0f"), fmt(med("p50_ms"), ".2f"), fmt(med("p99_ms"), ".2f")]
        head += [fmt(med("max_ms"), ".1f"), fmt(med("cpu_pct"), ".1f")]
        if stores:
            middle = [fmt(med("batches_per_s"), ",.0f"), fmt(med("transactions_per_s"), ",.0f")]
        else:
            middle = [
                fmt(per_round_ratio(results, v, v.baseline("floor"), "cpu_pct"), ".2f"),
                fmt(med("loops_per_s"), ",.0f"),
                fmt(med("wakeups_per_s"), ",.0f"),
            ]
        ran = f"{fmt(med('runs'), ',.0f')}/{fmt(med('expected'), ',.0f')}"
        rows.append([*head, *middle, ran, f"{len(good)}/{len(runs)}"])
    return markdown_table(STORE_HEADERS if stores else HEADERS, rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Standalone entry point: print the steady table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=10_000, help="schedules (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help="window in seconds (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown (default: 3)")
    parser.add_argument("--quick", action="store_true", help="5 s window, 1 round")
    parser.add_argument("--worker", nargs=3, metavar=("PEER", "N", "SECONDS"), help="one raw run (JSON line)")
    parser.add_argument("--add-us", type=float, help="worker: expected add cost per schedule in µs (sets the margin)")
    add_variant_args(parser)
    args = parser.parse_args(argv)
    if args.worker:
        peer, n, duration = args.worker
        worker_main(variant_from(peer, args), int(n), float(duration), args.add_us)
        return
    duration, rounds = (5.0, 1) if args.quick else (args.duration, args.rounds)
    variants = [Variant("floor"), Variant("apscheduler"), Variant("aiosched"), Variant("aiosched", metrics=True)]
    env = environment()
    results = measure(variants, args.n, duration, rounds)
    print(f"## Steady benchmark: {args.n:,} schedules every second, {duration:g} s window\n")
    print("\n".join(f"- {k}: {v}" for k, v in env.items()))
    print(f"- command: {' '.join([sys.executable, *sys.argv])}\n")
    print(table(results, variants))
    errors = errors_of(r for runs in results.values() for r in runs)
    if errors:
        print("\nErrors:\n" + "\n".join(f"- {e}" for e in errors))


if __name__ == "__main__":
    main()
