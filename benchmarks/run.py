"""Run every benchmark and write BENCHMARKS.md: one command, peers alternating, medians of rounds.

::

    /tmp/venv/bin/python benchmarks/run.py            # full: about 20-25 minutes on 2 cores
    /tmp/venv/bin/python benchmarks/run.py --quick    # about 1-2 minutes: a smoke check of every table

Workloads (each its own script, usable alone; see their docstrings for what is measured):

1. burst (``bench_burst.py``): 10,000 and 100,000 no-op jobs due at one instant;
   add cost and RSS per schedule come from the same runs (the 100,000 ones are the targets);
   GC modes (default, ``gc.freeze()`` after the adds, disabled) and uvloop beside it;
2. steady (``bench_steady.py``): 10,000 one-second interval schedules, 20 s window;
3. idle (``bench_idle.py``): 10,000 schedules an hour away, 10 s window;
4. cron math (``bench_cron.py``);
5. durable stores: the burst and the steady run on SQLite and PostgreSQL (when a server answers);
   the cluster rows come from ``bench_cluster.py`` when that script exists;
6. profiles (``bench_profile.py``): cProfile over the 100,000 burst and the steady window.

The hand-written analysis in ``benchmarks/analysis.md`` (explanations of missed targets, the
GC study's conclusion, the fixes proposed) is copied into BENCHMARKS.md after the tables;
``--refresh-analysis`` copies it again without running anything.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bench_burst
import bench_cron
import bench_idle
import bench_profile
import bench_steady
from _common import BENCH_DIR, REPO_ROOT, Result, Variant, environment, fmt, markdown_table, postgres_status, progress

OUTPUT = REPO_ROOT / "BENCHMARKS.md"
ANALYSIS = BENCH_DIR / "analysis.md"
CLUSTER = BENCH_DIR / "bench_cluster.py"
MAX_SLEEP_S = 30.0  # aiosched's default engine re-check bound
ANALYSIS_START = "<!-- analysis: copied from benchmarks/analysis.md by benchmarks/run.py -->"


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    quick: bool
    rounds: int
    burst_sizes: tuple[int, ...]
    steady_n: int
    steady_s: float
    idle_s: float
    store_burst_n: int
    sqlite_steady_n: int
    pg_steady_n: int
    cron_rounds: int
    profile: bool

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 1, (10_000,), 10_000, 5.0, 3.0, 2_000, 0, 0, 1, False)
        return cls(False, 3, (10_000, 100_000), 10_000, 20.0, 10.0, 10_000, 10_000, 2_000, 5, True)

    @property
    def big(self) -> int:
        """The burst size the targets are judged at."""
        return max(self.burst_sizes)


FLOOR, APS, AIO = Variant("floor"), Variant("apscheduler"), Variant("aiosched")
AIO_M = AIO.but(metrics=True)
MAIN = [FLOOR, APS, AIO, AIO_M]
GC_VARIANTS = [AIO.but(gc="freeze"), AIO.but(gc="off"), FLOOR.but(gc="freeze"), FLOOR.but(gc="off")]
UV_BURST = [FLOOR.but(loop="uvloop"), APS.but(loop="uvloop"), AIO.but(loop="uvloop")]
UV_STEADY = [FLOOR.but(loop="uvloop"), AIO.but(loop="uvloop")]
SQLITE, PG = AIO.but(store="sqlite"), AIO.but(store="postgres")


class Report:
    """The sections of BENCHMARKS.md and the figures the target table is built from."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.figures: dict[str, float | None] = {}
        self.timings: list[tuple[str, float]] = []

    def timed(self, name: str, body: Callable[[], str]) -> None:
        t0 = time.monotonic()
        progress(f"== {name}")
        try:
            text = body()
        except Exception as exc:  # one broken section must not lose the others
            text = f"## {name}\n\n(failed: {type(exc).__name__}: {exc})"
        self.sections.append(text)
        self.timings.append((name, time.monotonic() - t0))


def _errors(runs: Sequence[Result]) -> str:
    lines = sorted({f"- {r.get('label', '?')} N={r.get('n', '?')}: {r['error']}" for r in runs if "error" in r})
    return ("\n\nRuns that failed or fell short:\n\n" + "\n".join(lines)) if lines else ""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def burst_section(plan: Plan, report: Report) -> str:
    results: bench_burst.Results = {}
    small = [n for n in plan.burst_sizes if n != plan.big]
    if small:
        results.update(bench_burst.measure(MAIN, small, plan.rounds))
    extra = [] if plan.quick else GC_VARIANTS
    big_variants = [*MAIN, *extra, *UV_BURST]
    results.update(bench_burst.measure(big_variants, [plan.big], plan.rounds))
    n = plan.big
    for key, v in (("aio", AIO), ("aio_m", AIO_M)):
        report.figures[f"burst_vs_aps_{key}"] = bench_burst.per_round_ratio(results, v, APS, n, "fires_per_s")
        report.figures[f"burst_vs_floor_{key}"] = bench_burst.per_round_ratio(results, v, FLOOR, n, "burst_s")
        report.figures[f"add_us_{key}"] = bench_burst.value(results, v, n, "add_us")
        report.figures[f"rss_{key}"] = bench_burst.value(results, v, n, "rss_bytes_per_job")
        report.figures[f"burst_fps_{key}"] = bench_burst.value(results, v, n, "fires_per_s")
    report.figures["burst_fps_aps"] = bench_burst.value(results, APS, n, "fires_per_s")
    report.figures["burst_s_floor"] = bench_burst.value(results, FLOOR, n, "burst_s")
    main_rows = bench_burst.table(results, MAIN, plan.burst_sizes)
    text = [
        "## 1. Burst: N no-op jobs due at one instant (memory store)",
        "",
        "Time from the due instant to the start of the last job; `time ÷ floor` and `fires/s ÷ APS` are "
        "per-round ratios (median over rounds). `add µs/job` and `RSS B/job` (resident memory after the adds "
        "minus before, divided by N) come from the same runs: the N = "
        f"{plan.big:,} rows are the add-cost and memory figures (workloads 3 and 4). "
        "`GC runs in burst` counts CPython cyclic collections (all generations) between the due instant and the "
        "last start, `GC s in burst` the wall time they took (`gc.callbacks`). `CPU µs/fire` is the process's CPU "
        "time from the end of the adds to the last start, per job: the figure least disturbed by other load.",
        "",
        main_rows,
    ]
    gc_uv = [v for v in big_variants if v not in MAIN]
    if gc_uv:
        text += [
            "",
            f"### GC modes and uvloop (N = {n:,}, same rounds as above)",
            "",
            "`gc=freeze`: `gc.collect(); gc.freeze()` right after the adds; `gc=off`: `gc.disable()` for the "
            "whole worker. `[uvloop]`: the same peer on `uvloop.new_event_loop()`; its ratios are against the "
            "floor and APScheduler on uvloop in the same round.",
            "",
            bench_burst.table(results, [AIO, *gc_uv], [n]),
        ]
        for v in gc_uv:
            if v.peer == "aiosched":
                report.figures[f"burst_fps_{v.label}"] = bench_burst.value(results, v, n, "fires_per_s")
                report.figures[f"burst_vs_floor_{v.label}"] = bench_burst.per_round_ratio(
                    results, v, v.baseline("floor"), n, "burst_s"
                )
                report.figures[f"burst_vs_aps_{v.label}"] = bench_burst.per_round_ratio(
                    results, v, v.baseline("apscheduler"), n, "fires_per_s"
                )
    return "\n".join(text) + _errors([r for runs in results.values() for r in runs])


def steady_section(plan: Plan, report: Report) -> str:
    variants = [*MAIN] if plan.quick else [*MAIN, *UV_STEADY]
    results = bench_steady.measure(variants, plan.steady_n, plan.steady_s, plan.rounds)
    for key, v in (("aio", AIO), ("aio_m", AIO_M)):
        report.figures[f"steady_p99_{key}"] = bench_steady.value(results, v, "p99_ms")
        report.figures[f"steady_cpu_ratio_{key}"] = bench_steady.per_round_ratio(results, v, FLOOR, "cpu_pct")
        report.figures[f"steady_complete_{key}"] = float(bool(bench_steady._good(results, v)))
    text = [
        f"## 2. Steady: {plan.steady_n:,} interval schedules every 1 s, first fires spread over the second, "
        f"{plan.steady_s:g} s window (memory store)",
        "",
        "Lateness = the job's own `time.time()` at its start minus its nominal fire time (same method for every "
        "peer). CPU = process CPU time over the window / window length. `CPU ÷ floor` is a per-round ratio. "
        "Loop iterations are `select()` calls (not visible on uvloop). `fires ran` checks that every schedule "
        "fired every second of the window.",
        "",
        bench_steady.table(results, variants),
    ]
    return "\n".join(text) + _errors([r for runs in results.values() for r in runs])


def idle_section(plan: Plan, report: Report) -> str:
    results: bench_idle.Results = {v: [] for v in MAIN}
    for rnd in range(plan.rounds):  # the idle peers of one round run side by side: they hardly use the CPU
        with ThreadPoolExecutor(len(MAIN)) as pool:
            futures = {v: pool.submit(bench_idle.measure, [v], plan.steady_n, plan.idle_s, 1) for v in MAIN}
        for v, future in futures.items():
            results[v] += future.result()[v]
        progress(f"  idle round {rnd + 1}/{plan.rounds} done")
    for key, v in (("aio", AIO), ("aio_m", AIO_M)):
        good = [r for r in results[v] if "error" not in r]
        report.figures[f"idle_wakeups_{key}"] = max((r.get("engine_wakeups", 0) for r in good), default=None)
        report.figures[f"idle_cpu_ms_{key}"] = max((r["cpu_ms"] for r in good), default=None)
    text = [
        f"## 5. Idle: {plan.steady_n:,} schedules an hour away, {plan.idle_s:g} s window",
        "",
        "CPU time of the process and event loop iterations (`select()` calls, the same counting selector for "
        "every peer; one of them is the benchmark's own sleep) over the window, after a 1 s settle. The peers of "
        "a round run side by side (each idles; CPU time is per process). aiosched's engine re-reads the wall "
        f"clock at least every `max_sleep` = {MAX_SLEEP_S:g} s; with metrics started the loop watchdog probes "
        "the loop every 0.1 s by design.",
        "",
        bench_idle.table(results, MAIN),
    ]
    return "\n".join(text) + _errors([r for runs in results.values() for r in runs])


def cron_section(plan: Plan, report: Report) -> str:
    results = bench_cron.measure(plan.cron_rounds)
    return "\n".join(
        [
            "## 6. Cron math: µs per next fire time",
            "",
            'aiosched\'s `build_trigger("cron", ...).next_fire_time(prev, prev)` (APScheduler on a UTC copy plus '
            "aiosched's DST mapping) against the raw `CronTrigger.get_next_fire_time(prev, prev)`; fastest of "
            f"{bench_cron.REPEATS} walks of {bench_cron.STEPS} consecutive fire times per round, "
            f"median of {plan.cron_rounds} rounds; the ratio is per round.",
            "",
            bench_cron.table(results),
        ]
    ) + _errors(results)


def stores_section(plan: Plan, report: Report) -> str:
    pg_problem = postgres_status()
    stores = [SQLITE] if pg_problem else [SQLITE, PG]
    n = plan.store_burst_n
    burst = bench_burst.measure(stores, [n], plan.rounds)
    report.figures["sqlite_fps"] = bench_burst.value(burst, SQLITE, n, "fires_per_s")
    report.figures["pg_fps"] = None if pg_problem else bench_burst.value(burst, PG, n, "fires_per_s")
    text = [
        "## 7. Durable stores",
        "",
        f"### Burst, N = {n:,}",
        "",
        "As in section 1, on aiosched's SQLite store (WAL, `synchronous=NORMAL`, a fresh file in a temporary "
        "directory) and PostgreSQL store (`postgresql://postgres@127.0.0.1:5432/test`, a fresh schema per run, "
        "adds 8 at a time through the pool). `due→recorded` lasts until every final run record is written; "
        "`batches` are the engine's claiming passes with a result (`batch_size` 256 for SQLite; the PostgreSQL "
        "store claims at most its `batch` = 100 per pass); `tx` are SQLite transactions committed from the due "
        "instant until every record is written (`SQLiteStore.stats['transactions']`).",
        "",
        bench_burst.store_table(burst, stores, [n]),
    ]
    if pg_problem:
        text += ["", f"PostgreSQL: n/a ({pg_problem})."]
    errors = [r for runs in burst.values() for r in runs]
    steady_runs = [(SQLITE, plan.sqlite_steady_n)] + ([] if pg_problem else [(PG, plan.pg_steady_n)])
    steady_runs = [(v, k) for v, k in steady_runs if k]
    if steady_runs:
        steady: bench_steady.Results = {}
        for v, k in steady_runs:
            steady.update(bench_steady.measure([v], k, plan.steady_s, plan.rounds))
        text += [
            "",
            f"### Steady, {plan.steady_s:g} s window",
            "",
            "As in section 2 (N schedules every second). PostgreSQL runs at 2,000 fires/s, its burst target rate "
            "(10,000/s is beyond one node, see the burst). `batches/s`: engine passes that claimed schedules; "
            "`tx/s`: SQLite transactions.",
            "",
            bench_steady.table(steady, [v for v, _ in steady_runs], stores=True),
        ]
        errors += [r for runs in steady.values() for r in runs]
    text += ["", cluster_text(plan)]
    return "\n".join(text) + _errors(errors)


def cluster_text(plan: Plan) -> str:
    head = "### PostgreSQL cluster: 1, 2 and 3 nodes\n\n"
    if not CLUSTER.exists():
        return head + "n/a: `benchmarks/bench_cluster.py` does not exist yet (1 / 2 / 3 nodes: n/a / n/a / n/a)."
    size, rounds = ("500", "1") if plan.quick else ("2000", str(plan.rounds))
    cmd = [sys.executable, str(CLUSTER), "--size", size, "--nodes", "1,2,3", "--rounds", rounds]
    progress(f"  cluster: {shlex.join(cmd)}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return head + "n/a: `bench_cluster.py` did not finish within 900 s."
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return head + f"n/a: `bench_cluster.py` exited with {proc.returncode}:\n\n```\n{tail}\n```"
    body = "\n".join("#" + line if line.startswith("#") else line for line in proc.stdout.strip().splitlines())
    return head + f"Output of `{shlex.join(['python', 'benchmarks/bench_cluster.py', *cmd[2:]])}`:\n\n{body}"


def profile_section(plan: Plan, report: Report) -> str:
    text = [
        "## Profiles of aiosched's hot path",
        "",
        "cProfile, switched on only over the measured window, in the loop's thread: the top functions by self "
        "time (the loop's idle `epoll.poll` left out). Under cProfile everything runs about 1.5-2x slower and "
        "the steady run may fall behind, so read the shares and the calls per fire rather than absolute times.",
    ]
    for workload, n, v in (("burst", plan.big, AIO), ("steady", plan.steady_n, AIO), ("steady", plan.steady_n, AIO_M)):
        text += [
            "",
            f"### {workload}, {v.label}",
            "",
            bench_profile.table(bench_profile.profile(workload, v, n, plan.steady_s)),
        ]
    return "\n".join(text)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


Target = tuple[str, str, Callable[[float], bool], str, str]  # (text, figure key, test, format, unit)


def _verdict(value: float | None, ok: Callable[[float], bool], spec: str, unit: str) -> tuple[str, str]:
    if value is None or not math.isfinite(value):
        return "n/a", "n/a"
    return f"{format(value, spec)}{unit}", "met" if ok(value) else "**missed**"


def targets_section(plan: Plan, report: Report) -> str:
    n, idle_bound = plan.big, math.ceil(plan.idle_s / MAX_SLEEP_S)
    memory_targets: list[Target] = [
        (f"burst {n:,}: >= 4x APScheduler's fires/s", "burst_vs_aps", lambda x: x >= 4, ".2f", "x"),
        (f"burst {n:,}: <= 1.5x the floor's time", "burst_vs_floor", lambda x: x <= 1.5, ".2f", "x"),
        (f"steady {plan.steady_n:,}/s: p99 lateness <= 2 ms", "steady_p99", lambda x: x <= 2, ".2f", " ms"),
        (f"steady {plan.steady_n:,}/s: CPU <= 2x the floor's", "steady_cpu_ratio", lambda x: x <= 2, ".2f", "x"),
        (f"add: <= 10 µs per schedule at {n:,}", "add_us", lambda x: x <= 10, ".2f", " µs"),
        (f"memory: <= 800 B per schedule at {n:,}", "rss", lambda x: x <= 800, ".0f", " B"),
        (
            f"idle: <= {idle_bound} engine wake-up(s) in {plan.idle_s:g} s (the max_sleep re-check)",
            "idle_wakeups",
            lambda x: x <= idle_bound,
            ".0f",
            "",
        ),
    ]
    checks: list[tuple[str, str, str, Callable[[float], bool], str, str]] = []
    for key, name in (("aio", "aiosched"), ("aio_m", "aiosched +metrics")):
        checks += [(text, name, f"{fig}_{key}", ok, spec, unit) for text, fig, ok, spec, unit in memory_targets]
    for label in ("aiosched gc=freeze", "aiosched [uvloop]"):
        checks += [(t, label, f"{fig}_{label}", ok, s, u) for t, fig, ok, s, u in memory_targets[:2]]
    sn = plan.store_burst_n
    checks += [
        (f"SQLite burst {sn:,}: >= 10,000 fires/s", "aiosched @sqlite", "sqlite_fps", lambda x: x >= 1e4, ",.0f", ""),
        (
            f"PostgreSQL burst {sn:,}: >= 2,000 fires/s (1 node)",
            "aiosched @postgres",
            "pg_fps",
            lambda x: x >= 2e3,
            ",.0f",
            "",
        ),
    ]
    rows = []
    for text, name, key, ok, spec, unit in checks:
        if key in report.figures:
            rows.append([text, name, *_verdict(report.figures[key], ok, spec, unit)])
    scope = (
        " (quick run: smaller sizes and shorter windows than the targets', so indicative only)" if plan.quick else ""
    )
    return "\n".join(
        [
            f"## Targets{scope}",
            "",
            "Memory store, defaults on (events, run history); `+metrics` also has `SchedulerMetrics(scheduler)` "
            "started. Every figure as measured (medians; ratios per round).",
            "",
            markdown_table(["target", "variant", "measured", "verdict"], rows),
        ]
    )


def headline(report: Report) -> str:
    f = report.figures
    parts = [
        f"aiosched fires a 100,000-job burst at {fmt(f.get('burst_fps_aio'), ',.0f')} jobs/s "
        f"({fmt(f.get('burst_vs_aps_aio'), '.1f')}x APScheduler 3.11's rate, "
        f"{fmt(f.get('burst_vs_floor_aio'), '.2f')}x "
        "the bare-asyncio floor's time)",
        f"steady p99 lateness {fmt(f.get('steady_p99_aio'), '.2f')} ms at 10,000 fires/s",
        f"{fmt(f.get('add_us_aio'), '.1f')} µs and {fmt(f.get('rss_aio'), ',.0f')} B per schedule",
    ]
    return "; ".join(parts) + "."


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def render(plan: Plan, report: Report, env: dict[str, str], command: str, elapsed: float) -> str:
    load = os.getloadavg()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py`; do not edit by hand (the analysis at the end comes from "
        "`benchmarks/analysis.md`).",
        "",
        f"- command: `{command}`{' (quick mode)' if plan.quick else ''}",
        *(f"- {k}: {v}" for k, v in env.items()),
        f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; total time {elapsed / 60:.1f} min",
        f"- rounds: {plan.rounds} per table (median shown); each (variant, size, round) in a fresh process; the "
        "variant order rotates every round; ratios are taken within a round, then their median",
        "- the machine is a shared 2-core VM that other jobs (test runs) use at the same time: expect noise of "
        "±10-30 % between runs, more on latency tails",
        "",
        f"**Headline:** {headline(report)}",
        "",
        targets_section(plan, report),
    ]
    for section in report.sections:
        lines += ["", section]
    timings = [[name, f"{seconds / 60:.1f}"] for name, seconds in report.timings]
    lines += ["", "## Time per section", "", markdown_table(["section", "minutes"], timings)]
    return "\n".join(lines) + "\n\n" + analysis_block()


def analysis_block() -> str:
    """``benchmarks/analysis.md`` after the marker that :func:`refresh_analysis` looks for."""
    text = ANALYSIS.read_text().strip() if ANALYSIS.exists() else "(no benchmarks/analysis.md)"
    return f"{ANALYSIS_START}\n\n{text}\n"


def refresh_analysis(path: Path) -> None:
    """Replace the analysis part of an existing report with the current ``benchmarks/analysis.md``."""
    head, sep, _ = path.read_text().partition(ANALYSIS_START)
    if not sep:
        raise SystemExit(f"{path} has no analysis marker; run the benchmarks first")
    path.write_text(head + analysis_block())


def main(argv: Sequence[str] | None = None) -> None:
    """Run the plan and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round, small sizes and short windows (1-2 min)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write (default: BENCHMARKS.md)")
    parser.add_argument(
        "--only",
        help="comma-separated sections to run: burst,steady,idle,cron,stores,profile (default: all)",
    )
    parser.add_argument(
        "--refresh-analysis",
        action="store_true",
        help="only copy benchmarks/analysis.md into the existing report again (no benchmark runs)",
    )
    args = parser.parse_args(argv)
    if args.refresh_analysis:
        refresh_analysis(args.output)
        return
    plan = Plan.make(args.quick)
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    env = environment()
    report = Report()
    sections: dict[str, Callable[[Plan, Report], str]] = {
        "burst": burst_section,
        "steady": steady_section,
        "idle": idle_section,
        "cron": cron_section,
        "stores": stores_section,
        "profile": profile_section,
    }
    chosen = set(args.only.split(",")) if args.only else set(sections)
    if not plan.profile:
        chosen.discard("profile")
    t0 = time.monotonic()
    for name, build in sections.items():
        if name in chosen:
            report.timed(name, lambda build=build: build(plan, report))  # type: ignore[misc]
    text = render(plan, report, env, command, time.monotonic() - t0)
    args.output.write_text(text)
    progress(f"wrote {args.output} in {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
