"""Idle benchmark: N schedules an hour away; what a scheduler costs while nothing is due.

After adding N one-hour interval schedules whose first fire is an hour away, the worker
waits ``SETTLE_S`` seconds and then measures a window of ``duration`` seconds:

    CPU          user + system CPU time of the process over the window (all threads);
    loop iter.   event loop iterations (``select()`` calls), counted by the same selector
                 wrapper for every peer (see ``_common.CountingSelector``); each one is a
                 wake-up of the process;
    engine       aiosched's ``scheduler.engine.wakeups`` (timer expiries and wake-up calls).

aiosched's engine sleeps until the earliest fire time but at most ``max_sleep`` (30 s by
default: the bounded wall-clock re-check), so over a 10 s window it should wake at most once.
With metrics started, the loop watchdog probes the loop every 0.1 s (by design).
The benchmark's own ``asyncio.sleep`` over the window accounts for one loop iteration.
The worker checks that no job ran.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_idle.py                 # 10,000 schedules, 10 s, 3 rounds
    /tmp/venv/bin/python benchmarks/bench_idle.py --worker aiosched 10000 10   # one raw run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from _common import (
    Result,
    Variant,
    add_variant_args,
    cpu_seconds,
    environment,
    errors_of,
    fmt,
    loop_iterations,
    markdown_table,
    median,
    progress,
    rotate,
    run_on,
    run_worker_safely,
    spawn,
    variant_from,
)

SCRIPT = Path(__file__).resolve()
SETTLE_S = 1.0


async def run_idle(variant: Variant, n: int, duration: float) -> Result:
    """Add ``n`` schedules an hour away, settle, then count CPU and wake-ups over ``duration`` s."""
    import _jobs
    from _peers import add_many, make_peer

    peer = make_peer(variant)
    await peer.start()
    try:
        first = datetime.fromtimestamp(time.time() + 3600, UTC)

        async def add(i: int) -> None:
            await peer.add_interval(_jobs.idle_job, 3600.0, first, (), f"i{i}")

        await add_many(peer, n, add)
        await asyncio.sleep(SETTLE_S)
        loops0, cpu0, wall0, c0 = loop_iterations() or 0, cpu_seconds(), time.perf_counter(), peer.counters()
        await asyncio.sleep(duration)
        loops1, cpu1, wall1, c1 = loop_iterations() or 0, cpu_seconds(), time.perf_counter(), peer.counters()
        if _jobs.idle_runs:
            raise AssertionError(f"{_jobs.idle_runs} jobs ran; none was due")
        span = wall1 - wall0
        result: Result = {
            "label": variant.label,
            "peer": variant.peer,
            "n": n,
            "window_s": span,
            "cpu_ms": (cpu1 - cpu0) * 1e3,
            "cpu_pct": (cpu1 - cpu0) / span * 100,
            "loop_iterations": loops1 - loops0 if loops0 else None,
        }
        if c0.get("wakeups") is not None and variant.peer == "aiosched":
            result["engine_wakeups"] = c1["wakeups"] - c0["wakeups"]
        return result
    finally:
        await peer.stop()


def worker_main(variant: Variant, n: int, duration: float) -> None:
    """One run in this process; prints one JSON line."""
    describe = {"label": variant.label, "peer": variant.peer, "n": n}
    run_worker_safely(describe, lambda: run_on(variant.loop, lambda: run_idle(variant, n, duration)))


Results = dict[Variant, list[Result]]


def measure(variants: Sequence[Variant], n: int, duration: float, rounds: int) -> Results:
    """Run every variant ``rounds`` times, rotating the order each round."""
    results: Results = {v: [] for v in variants}
    for rnd in range(rounds):
        for v in rotate(variants, rnd):
            describe = {"label": v.label, "peer": v.peer, "n": n}
            r = spawn(SCRIPT, ["--worker", v.peer, str(n), str(duration), *v.args()], describe)
            results[v].append(r)
            detail = r.get("error") or (
                f"CPU {r['cpu_ms']:.1f} ms, {r['loop_iterations']} loop iterations, engine {r.get('engine_wakeups')}"
            )
            progress(f"  idle N={n} {duration:g}s round {rnd + 1}/{rounds} {v.label:<20} {detail}")
    return results


HEADERS = ["variant", "CPU ms in window", "CPU %", "loop iterations", "engine wake-ups", "ok"]


def table(results: Results, variants: Sequence[Variant]) -> str:
    """The idle table (medians)."""
    rows = []
    for v in variants:
        runs = results.get(v, [])
        good = [r for r in runs if "error" not in r]
        rows.append(
            [
                v.label,
                fmt(median(r["cpu_ms"] for r in good), ".1f"),
                fmt(median(r["cpu_pct"] for r in good), ".3f"),
                fmt(median(r.get("loop_iterations") for r in good), ".0f"),
                fmt(median(r.get("engine_wakeups") for r in good), ".0f"),
                f"{len(good)}/{len(runs)}",
            ]
        )
    return markdown_table(HEADERS, rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Standalone entry point: print the idle table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=10_000, help="schedules (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0, help="window in seconds (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown (default: 3)")
    parser.add_argument("--worker", nargs=3, metavar=("PEER", "N", "SECONDS"), help="one raw run (JSON line)")
    add_variant_args(parser)
    args = parser.parse_args(argv)
    if args.worker:
        peer, n, duration = args.worker
        worker_main(variant_from(peer, args), int(n), float(duration))
        return
    variants = [Variant("floor"), Variant("apscheduler"), Variant("aiosched"), Variant("aiosched", metrics=True)]
    env = environment()
    results = measure(variants, args.n, args.duration, args.rounds)
    print(f"## Idle benchmark: {args.n:,} schedules an hour away, {args.duration:g} s window\n")
    print("\n".join(f"- {k}: {v}" for k, v in env.items()))
    print(f"- command: {' '.join([sys.executable, *sys.argv])}\n")
    print(table(results, variants))
    errors = errors_of(r for runs in results.values() for r in runs)
    if errors:
        print("\nErrors:\n" + "\n".join(f"- {e}" for e in errors))


if __name__ == "__main__":
    main()
