"""Where aiosched's time goes: cProfile over the measured window of the burst and steady workloads.

The profiler is switched on just before the burst's due instant (or at the start of the steady
window) and off when the last job has started (or the window ends), in the event loop's thread
only, so the adds and the shutdown are not in the profile. A worker prints the top functions
by self time as JSON:

    self %       share of the profiled time, the event loop's idle wait (``epoll.poll``) left out;
    µs/fire      that function's self time per fire under the profiler (cProfile slows
                 call-heavy code down, roughly 1.5-2x; compare shares, not absolute numbers);
    calls/fire   calls per fire (exact).

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_profile.py                          # burst 100k + steady 10k/20 s
    /tmp/venv/bin/python benchmarks/bench_profile.py --worker burst 100000 --metrics   # one raw profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    REPO_ROOT,
    Result,
    Variant,
    add_variant_args,
    apply_gc_at_start,
    fmt,
    markdown_table,
    progress,
    run_on,
    run_worker_safely,
    spawn,
)

SCRIPT = Path(__file__).resolve()
TOP = 15
IDLE = ("<method 'poll' of 'select.epoll' objects>", "<method 'select' of 'select.epoll' objects>")


class ProfileWindow:
    """cProfile switched on and off around the measured window; remembers the window's wall time."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.seconds = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self.profile.enable()

    def stop(self) -> None:
        self.profile.disable()
        self.seconds += time.perf_counter() - self._t0


def _where(key: tuple[str, int, str]) -> str:
    path, line, name = key
    if path == "~":
        return name
    p = Path(path)
    for root in (REPO_ROOT, Path(sys.prefix)):
        try:
            return f"{p.relative_to(root)}:{line} {name}"
        except ValueError:
            continue
    if "site-packages" in p.parts:
        return f"{'/'.join(p.parts[p.parts.index('site-packages') + 1 :])}:{line} {name}"
    return f"{'/'.join(p.parts[-2:])}:{line} {name}"


def top_functions(profile: cProfile.Profile, fires: int, top: int = TOP) -> tuple[list[dict[str, Any]], float]:
    """The ``top`` functions by self time, and the busy (non-idle) profiled seconds."""
    stats: dict[Any, Any] = getattr(pstats.Stats(profile), "stats")  # noqa: B009  # not in typeshed
    busy = sum(tt for key, (_, _, tt, _, _) in stats.items() if key[2] not in IDLE)
    rows = []
    for key, (_cc, nc, tt, ct, _callers) in sorted(stats.items(), key=lambda kv: -kv[1][2]):
        if key[2] in IDLE:
            continue
        rows.append(
            {
                "function": _where(key),
                "self_pct": tt / busy * 100 if busy else 0.0,
                "self_us_per_fire": tt / fires * 1e6,
                "cum_us_per_fire": ct / fires * 1e6,
                "calls_per_fire": nc / fires,
            }
        )
        if len(rows) >= top:
            break
    return rows, busy


def worker_main(workload: str, variant: Variant, n: int, duration: float) -> None:
    """Profile one run of the workload in this process; prints one JSON line."""
    apply_gc_at_start(variant.gc)
    describe = {"label": variant.label, "workload": workload, "n": n}

    def body() -> Result:
        window = ProfileWindow()
        if workload == "burst":
            from bench_burst import run_burst

            result = run_on(variant.loop, lambda: run_burst(variant, n, n * 60e-6, window))
            fires = n
        else:
            from bench_steady import run_steady

            result = run_on(variant.loop, lambda: run_steady(variant, n, duration, window))
            fires = int(n * duration)
        rows, busy = top_functions(window.profile, fires)
        return {
            **describe,
            **{k: v for k, v in result.items() if k in ("burst_s", "p99_ms", "cpu_pct", "error")},
            "fires": fires,
            "window_s": window.seconds,
            "busy_s": busy,
            "busy_us_per_fire": busy / fires * 1e6,
            "top": rows,
        }

    run_worker_safely(describe, body)


def profile(workload: str, variant: Variant, n: int, duration: float = 20.0) -> Result:
    """Spawn one profiled worker."""
    describe = {"label": variant.label, "workload": workload, "n": n}
    args = ["--worker", workload, str(n), "--duration", str(duration), *variant.args()]
    progress(f"  profile {workload} N={n} {variant.label}")
    return spawn(SCRIPT, args, describe)


HEADERS = ["function (self time)", "self %", "µs/fire (profiled)", "calls/fire"]


def table(result: Result) -> str:
    """The top functions of one profile."""
    if "error" in result and "top" not in result:
        return f"(profile failed: {result['error']})"
    rows = [
        [
            f"`{row['function']}`",
            fmt(row["self_pct"], ".1f"),
            fmt(row["self_us_per_fire"], ".2f"),
            fmt(row["calls_per_fire"], ".2f"),
        ]
        for row in result["top"]
    ]
    head = (
        f"{result['workload']} N={result['n']:,} ({result['label']}): {result['busy_us_per_fire']:.1f} µs of "
        f"profiled busy time per fire over {result['fires']:,} fires\n\n"
    )
    return head + markdown_table(HEADERS, rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Standalone entry point: profile the burst and the steady workloads, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "N"), help="burst|steady N: one raw profile")
    parser.add_argument("--duration", type=float, default=20.0, help="steady window in seconds (default: 20)")
    parser.add_argument("--peer", default="aiosched", help="peer to profile (default: aiosched)")
    add_variant_args(parser)
    args = parser.parse_args(argv)
    variant = Variant(args.peer, loop=args.loop, gc=args.gc, metrics=args.metrics, store=args.store)
    if args.worker:
        workload, n = args.worker
        worker_main(workload, variant, int(n), args.duration)
        return
    for workload, n in (("burst", 100_000), ("steady", 10_000)):
        print(table(profile(workload, variant, n, args.duration)) + "\n")


if __name__ == "__main__":
    main()
