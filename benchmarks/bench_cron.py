"""Cron math: microseconds per next fire time, aiosched's trigger vs APScheduler 3's CronTrigger.

aiosched's ``build_trigger("cron", ...).next_fire_time(previous, now)`` asks a UTC copy of the
APScheduler trigger for the next matching wall time and maps it to an instant (DST rules:
repeated local times fire once, non-existent ones at the jump; see ``aiosched/triggers.py``).
The raw ``CronTrigger.get_next_fire_time(previous, now)`` is APScheduler 3's own answer.

Each case walks ``STEPS`` consecutive fire times (both triggers give strictly later times with
``now = previous``) ``REPEATS`` times, the two triggers taking turns, and keeps each trigger's
fastest walk (the least disturbed by other work on the machine). Each round runs in a fresh
subprocess; the ratio is taken per round and the median of the rounds is shown. The walks of
the first two cases cross New York's 2027 DST transitions.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_cron.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    Result,
    ensure_paths,
    environment,
    fmt,
    markdown_table,
    median,
    progress,
    ratio,
    run_worker_safely,
    spawn,
)

SCRIPT = Path(__file__).resolve()
STEPS = 500
REPEATS = 7
START = datetime(2027, 1, 1, tzinfo=UTC)
#: name -> (cron fields, zone, first step of the walk)
CASES: dict[str, tuple[dict[str, Any], str, datetime]] = {
    "every 15 min, New York, across spring-forward": (
        {"minute": "*/15"},
        "America/New_York",
        datetime(2027, 3, 13, 12, tzinfo=UTC),
    ),
    "hourly at :30, New York, across fall-back": (
        {"minute": "30"},
        "America/New_York",
        datetime(2027, 10, 20, tzinfo=UTC),
    ),
    "09:30 Mon-Fri, New York": ({"day_of_week": "mon-fri", "hour": "9", "minute": "30"}, "America/New_York", START),
    "daily 09:30, UTC": ({"hour": "9", "minute": "30"}, "UTC", START),
    "every minute, UTC": ({"minute": "*"}, "UTC", START),
}


def _walk(step: Callable[[datetime], datetime | None], start: datetime, steps: int) -> float:
    """Seconds per step of ``steps`` consecutive next-fire-time calls."""
    t: datetime | None = start
    t0 = time.perf_counter()
    for _ in range(steps):
        assert t is not None
        t = step(t)
    return (time.perf_counter() - t0) / steps


def _ours_step(trigger: Any) -> Callable[[datetime], datetime | None]:
    def step(t: datetime) -> datetime | None:
        nxt: datetime | None = trigger.next_fire_time(t, t)
        return nxt

    return step


def _raw_step(trigger: Any) -> Callable[[datetime], datetime | None]:
    def step(t: datetime) -> datetime | None:
        nxt: datetime | None = trigger.get_next_fire_time(t, t)
        return nxt

    return step


def run_cron(rnd: int, steps: int) -> Result:
    """Time every case with both triggers; the first of the two alternates with ``rnd``."""
    ensure_paths()
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    from aiosched.triggers import build_trigger

    out: dict[str, dict[str, float]] = {}
    for name, (fields, zone, start) in CASES.items():
        ours = build_trigger("cron", fields, timezone=zone)
        raw = CronTrigger(timezone=zone, **fields)
        ours_step, raw_step = _ours_step(ours), _raw_step(raw)
        _walk(ours_step, start, 100)  # warm the caches of both
        _walk(raw_step, start.astimezone(raw.timezone), 100)
        best = {"aiosched": float("inf"), "apscheduler": float("inf")}
        order = [("aiosched", ours_step, start), ("apscheduler", raw_step, start.astimezone(raw.timezone))]
        for rep in range(REPEATS):
            for label, step, first in order if (rnd + rep) % 2 == 0 else order[::-1]:
                best[label] = min(best[label], _walk(step, first, steps) * 1e6)
        out[name] = best
    return {"round": rnd, "cases": out}


def worker_main(rnd: int, steps: int) -> None:
    """One round in this process; prints one JSON line."""
    run_worker_safely({"round": rnd}, lambda: run_cron(rnd, steps))


def measure(rounds: int, steps: int = STEPS) -> list[Result]:
    """One fresh process per round."""
    results = []
    for rnd in range(rounds):
        r = spawn(SCRIPT, ["--worker", str(rnd), "--steps", str(steps)], {"round": rnd})
        results.append(r)
        progress(f"  cron round {rnd + 1}/{rounds}: {r.get('error') or 'ok'}")
    return results


HEADERS = ["case", "aiosched µs", "APScheduler µs", "aiosched ÷ APScheduler"]


def table(results: list[Result]) -> str:
    """Medians per case; the ratio is the median of the per-round ratios."""
    good = [r for r in results if "cases" in r]
    rows = []
    for name in CASES:
        ours = [r["cases"][name]["aiosched"] for r in good]
        raw = [r["cases"][name]["apscheduler"] for r in good]
        rows.append(
            [
                name,
                fmt(median(ours), ".1f"),
                fmt(median(raw), ".1f"),
                fmt(median(ratio(a, b) for a, b in zip(ours, raw, strict=True)), ".2f"),
            ]
        )
    return markdown_table(HEADERS, rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Standalone entry point: print the cron table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=STEPS, help="fire times per walk (default: %(default)s)")
    parser.add_argument("--worker", type=int, metavar="ROUND", help="one raw round (JSON line)")
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker, args.steps)
        return
    env = environment()
    results = measure(args.rounds, args.steps)
    print("## Cron math: µs per next fire time\n")
    print("\n".join(f"- {k}: {v}" for k, v in env.items()))
    print(f"- command: {' '.join([sys.executable, *sys.argv])}\n")
    print(table(results))


if __name__ == "__main__":
    main()
