"""Fixtures of the reliability suite: ledgers, node processes, libfaketime, and the figures table.

The C tier is marked ``chaos`` (pyproject registers it and deselects it by default):
``pytest tests/reliability`` runs the U and I tiers, ``pytest -m chaos tests/reliability`` the C tier.

Each test records the figures its assertions check through the ``figure`` fixture; they are
printed in a "reliability figures" section at the end of the run, and written as JSON lines to
``$AIOSCHED_FIGURES`` when it is set (RELIABILITY-RESULTS.md is made from them).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import tasks
from .harness import FAKETIME_APT, Ledger, Node, faketime_env, faketime_library

_FIGURES = pytest.StashKey[list[dict[str, Any]]]()
_OUTCOMES = pytest.StashKey[dict[str, str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []
    config.stash[_OUTCOMES] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or report.outcome != "passed":
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        item.config.stash[_OUTCOMES][item.nodeid] = outcome
    return report


FigureRecorder = Callable[..., None]


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> FigureRecorder:
    """``figure("S4", "abandoned and never re-run", 50, "== 50")``: note a measured figure."""

    def record(scenario: str, name: str, value: Any, passes_when: str = "") -> None:
        request.config.stash[_FIGURES].append(
            {
                "scenario": scenario,
                "test": request.node.nodeid,
                "figure": name,
                "value": value,
                "passes_when": passes_when,
                "tier": "C" if request.node.get_closest_marker("chaos") else "U/I",
            }
        )

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if not figures:
        return
    outcomes = config.stash.get(_OUTCOMES, {})
    terminalreporter.section("reliability figures")
    for row in sorted(figures, key=lambda r: (r["scenario"], r["test"])):
        row["outcome"] = outcomes.get(row["test"], "?")
        value = f"{row['value']:.4g}" if isinstance(row["value"], float) else str(row["value"])
        terminalreporter.write_line(
            f"{row['scenario']:<4} {row['outcome']:<7} {row['figure']}: {value} (passes when {row['passes_when']})"
            f"  [{row['test'].split('::')[-1]}]"
        )
    target = os.environ.get("AIOSCHED_FIGURES")
    if target:
        machine = {"uname": " ".join(platform.uname()), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
        with open(target, "a", encoding="utf-8") as sink:
            for row in figures:
                sink.write(json.dumps({**row, **machine}, default=str) + "\n")


# -- ledgers and nodes ------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """This test's fire ledger (tasks append to it, the test reads it)."""
    return Ledger(tmp_path / "ledger.jsonl")


NodeFactory = Callable[..., Any]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start node processes (``await nodes(args, name=...)``); any still running is SIGKILLed after the test."""
    made: list[Node] = []

    async def spawn(args: list[str], *, name: str, **options: Any) -> Node:
        node = await Node.spawn(args, name=name, log=tmp_path / f"{name}.log", **options)
        made.append(node)
        return node

    yield spawn
    for node in made:
        await node.close()


@pytest.fixture
def release_threads() -> Iterator[None]:
    """End the threads of tasks.stubborn at teardown (they ignore their timeout on purpose)."""
    tasks.RELEASE.clear()
    yield
    tasks.RELEASE.set()


# -- libfaketime ------------------------------------------------------------------------------


def _faketime_problem(library: str | None) -> str | None:
    if library is None:
        return f"libfaketime is not installed ({FAKETIME_APT})"
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **faketime_env(library, FAKETIME="+1d")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        shift = float(probe.stdout) - time.time()
    except ValueError:
        return f"libfaketime at {library} does not work here: {probe.stderr.strip()[:200]}"
    if abs(shift - 86400) > 60:
        return f"libfaketime at {library} did not move the clock (+{shift:.0f}s instead of +1d)"
    return None


@pytest.fixture(scope="session")
def faketime() -> str:
    """The libfaketime library: skips locally when it is missing or broken, fails under CI."""
    library = faketime_library()
    problem = _faketime_problem(library)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI must run the libfaketime scenarios")
        pytest.skip(problem)
    assert library is not None
    return library
