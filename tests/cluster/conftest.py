"""Fixtures of the cluster suite: ``pg_url`` (the shared server), ``server`` (a throwaway one),
``faketime``, and ``figure``.

``figure("S9", "duplicates", 0, "0")`` notes a measured figure; the figures are printed in a
"cluster figures" section at the end of the run and appended as JSON lines to
``$AIOSCHED_FIGURES`` when it is set (RELIABILITY-RESULTS.md is made from them).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .._pg import pg_url
from ..reliability.conftest import faketime
from ._pgctl import ThrowawayServer, problem

__all__ = ["faketime", "figure", "pg_url"]

_FIGURES: list[dict[str, Any]] = []

FigureRecorder = Callable[..., None]


@pytest.fixture
async def server() -> AsyncIterator[ThrowawayServer]:
    """A throwaway PostgreSQL server (initdb on a spare port) for tests that stop or restart it."""
    reason = problem()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a throwaway PostgreSQL server: {reason}")
        pytest.skip(reason)
    made = ThrowawayServer()
    try:
        await made.init()
        await made.start()
        yield made
    finally:
        await made.destroy()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> FigureRecorder:
    """Note a measured figure of this test (shown at the end of the run)."""

    def record(scenario: str, name: str, value: Any, passes_when: str = "") -> None:
        _FIGURES.append(
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
    if not _FIGURES:
        return
    terminalreporter.section("cluster figures")
    for row in _FIGURES:
        value = f"{row['value']:.4g}" if isinstance(row["value"], float) else str(row["value"])
        terminalreporter.write_line(
            f"{row['scenario']:<4} {row['figure']}: {value} (passes when {row['passes_when']})"
            f"  [{row['test'].split('::')[-1]}]"
        )
    target = os.environ.get("AIOSCHED_FIGURES")
    if target:
        machine = {"uname": " ".join(platform.uname()), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
        with open(target, "a", encoding="utf-8") as sink:
            for row in _FIGURES:
                sink.write(json.dumps({**row, **machine}, default=str) + "\n")
