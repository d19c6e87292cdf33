"""The ``pg_url`` fixture: a fresh schema on the test PostgreSQL server per test, dropped after it.

The server is ``$AIOSCHED_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When it does not answer, tests that use the fixture skip with the reason, except under CI
(``$CI`` set), where they fail: a CI run must never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

PG_BASE = os.environ.get("AIOSCHED_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_problem: list[str | None] = []  # the server check's outcome, once per session


async def _server_problem() -> str | None:
    if _problem:
        return _problem[0]
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        _problem.append("asyncpg is not installed (pip install -e '.[test]')")
        return _problem[0]
    try:
        conn = await asyncpg.connect(PG_BASE, timeout=3)
        await conn.close()
        _problem.append(None)
    except Exception as exc:  # whatever stops us from connecting is the skip reason
        _problem.append(f"no PostgreSQL server answers at {PG_BASE} ({type(exc).__name__}: {exc})")
    return _problem[0]


def need_server(problem: str | None) -> None:
    """Skip (locally) or fail (under CI) when the server is not usable."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI needs PostgreSQL for the tests marked 'postgres': {problem}")
    pytest.skip(problem)


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_BASE, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


T = TypeVar("T")


def run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own, in a helper thread (from sync code)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``postgresql://...?schema=t_<random>``: a schema of its own, dropped after the test.

    A plain (sync) fixture, so that async fixtures may ask for it by ``getfixturevalue``.
    """
    need_server(run_aside(_server_problem()))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_BASE}?schema={schema}"
    run_aside(drop_schema(schema))
