"""The ``aiosched`` command: run, check, list, next, run-once.

Exit codes: 0 success, 1 a run or the scheduler failed, 2 bad configuration or usage.
SIGTERM and SIGINT shut down gracefully (runs get ``shutdown_grace`` seconds to finish);
a second signal cancels what is still running at once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .app import build_scheduler, install_tasks
from .config import Config, load_config
from .exceptions import AioschedError, ConfigError
from .log import configure_logging
from .metrics import SchedulerMetrics
from .models import RunState
from .triggers import build_trigger
from .web import serve

logger = logging.getLogger("aiosched")

DEFAULT_ENV = Path("config/env.yaml")
DEFAULT_TASKS = Path("config/dev.yaml")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", metavar="FILE", type=Path, help=f"tasks file (tasks:); default {DEFAULT_TASKS} if it exists"
    )
    common.add_argument(
        "--env",
        "-e",
        metavar="FILE",
        type=Path,
        help=f"environment file (scheduler:); default {DEFAULT_ENV} if it exists",
    )
    parser = argparse.ArgumentParser(
        prog="aiosched",
        description="An asyncio job scheduler. Runs the tasks of a YAML config until stopped.",
        parents=[common],
        epilog="Without a command, 'run' is assumed. Exit codes: 0 ok, 1 failure, 2 bad configuration.",
    )
    parser.add_argument("--version", action="version", version=f"aiosched {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the scheduler until SIGTERM/SIGINT (default)")
    commands.add_parser("check", parents=[common], help="validate the config and task imports; exit 0 or 2")
    commands.add_parser("list", parents=[common], help="list the configured tasks with their next fire times")
    nxt = commands.add_parser("next", parents=[common], help="preview a task's next fire times")
    nxt.add_argument("name", help="task name")
    nxt.add_argument("-n", type=int, default=5, help="how many (default 5)")
    once = commands.add_parser("run-once", parents=[common], help="run one task now and print its result")
    once.add_argument("name", help="task name")
    return parser


def _files(args: argparse.Namespace) -> list[Path]:
    env = args.env or (DEFAULT_ENV if DEFAULT_ENV.exists() else None)
    tasks = args.config or (DEFAULT_TASKS if DEFAULT_TASKS.exists() else None)
    return [f for f in (env, tasks) if f is not None]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aiosched`` and ``python -m aiosched``; returns the exit code."""
    args = _parser().parse_args(argv)
    command = args.command or "run"
    files = _files(args)
    if not files:
        sys.stderr.write(f"aiosched: no config: pass --config/--env, or create {DEFAULT_TASKS}\n")
        return 2
    try:
        config = load_config(files)
    except ConfigError as exc:
        sys.stderr.write(f"aiosched: {exc}\n")
        return 2
    if command == "check":
        sys.stdout.write(f"ok: {len(config.tasks)} tasks in {', '.join(config.files)}\n")
        return 0
    if command == "list":
        return _list(config)
    if command == "next":
        return _next(config, args.name, args.n)
    configure_logging(config.logging.level, config.logging.format)
    try:
        if command == "run-once":
            return _run(_run_once(config, args.name))
        return _run(_serve(config))
    except (AioschedError, OSError) as exc:  # OSError: the API's port is taken, a path is unusable
        logger.error("%s", exc)
        return 1


def _freeze_startup_objects() -> None:
    """Move what start-up built (modules, config, schedules) out of the cyclic GC's way.

    It lives as long as the process, yet every full collection would rescan it: with many
    schedules that is most of the collector's time during a burst of fires. One collection
    first, so no garbage is frozen with it. The CLI owns its process, so it may do this; an
    embedding application can do the same after adding its schedules (docs/execution.md).
    """
    gc.collect()
    gc.freeze()


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run the command's coroutine on uvloop when it is installed (``aiosched[uvloop]``).

    ``AIOSCHED_LOOP=asyncio`` keeps the standard loop. Only the command chooses a loop;
    the library runs on whatever loop it is given.
    """
    factory = None
    if os.environ.get("AIOSCHED_LOOP", "auto") != "asyncio":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _list(config: Config) -> int:
    rows = [("TASK", "NEXT FIRE TIME", "TRIGGER", "EXECUTOR")]
    for task in config.tasks:
        trigger = build_trigger(task.trigger, dict(task.args), timezone=task.timezone or config.timezone)
        times = trigger.preview(1)
        when = "paused" if task.paused else (times[0].astimezone(trigger.timezone).isoformat() if times else "never")
        executor = str(task.options.get("executor", config.job_defaults.get("executor", "default")))
        rows.append((task.id, when, trigger.describe(), executor))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)) + "\n")
    return 0


def _next(config: Config, name: str, count: int) -> int:
    try:
        task = config.task(name)
    except KeyError as exc:
        sys.stderr.write(f"aiosched: {exc.args[0]}\n")
        return 2
    trigger = build_trigger(task.trigger, dict(task.args), timezone=task.timezone or config.timezone)
    for when in trigger.preview(count):
        sys.stdout.write(when.astimezone(trigger.timezone).isoformat() + "\n")
    return 0


async def _run_once(config: Config, name: str) -> int:
    """Run one task now on an in-memory scheduler (the configured store is left alone)."""
    try:
        task = config.task(name)
    except KeyError as exc:
        sys.stderr.write(f"aiosched: {exc.args[0]}\n")
        return 2
    scheduler = build_scheduler(config, store="memory://")
    async with scheduler:
        await scheduler.add_job(
            task.task_ref, "date", id=task.id, kwargs=dict(task.kwargs), paused=True, **dict(task.options)
        )
        record = await scheduler.run_job(task.id, wait=True)
    if record.state is RunState.SUCCEEDED:
        sys.stdout.write(f"{record.result}\n")
        return 0
    sys.stderr.write(f"{task.id}: {record.state.value}: {record.error or record.reason}\n")
    return 1


async def _serve(config: Config) -> int:
    scheduler = build_scheduler(config)
    metrics = SchedulerMetrics(scheduler)
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            logger.info(
                "%s: shutting down (runs get %ss to finish; signal again to stop now)", name, config.shutdown_grace
            )
            stop.set()
        else:
            logger.warning("%s again: cancelling the runs still going", name)
            scheduler.cancel_all_runs("scheduler stopped by a second signal")

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    server = None
    try:
        await install_tasks(scheduler, config)
        await scheduler.start()
        await metrics.start()
        if config.api.enabled:
            server = await serve(scheduler, config.api, metrics)
            logger.info("management API and dashboard on %s", server.url)
        logger.info("running %d tasks from %s", len(config.tasks), ", ".join(config.files))
        _freeze_startup_objects()
        await stop.wait()
    finally:
        # shutdown() stops firing before its first await; the API's close waits up to 5 s for requests
        # in flight, so it goes on meanwhile rather than first (no run may start after the signal, RELIABILITY S13)
        closing = asyncio.ensure_future(server.close()) if server is not None else None
        try:
            await scheduler.shutdown(wait=True, grace=config.shutdown_grace)
        finally:
            if closing is not None:
                await closing
        await metrics.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0
