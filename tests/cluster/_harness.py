"""Node subprocesses and the ledger for the cluster tests.

A :class:`Cluster` starts nodes (``tests/cluster/_node.py``) on one store URL, talks to
them over stdin/stdout, and reads the ledger table its tasks write. Every wait has a
deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import asyncpg  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]


def split_url(url: str) -> tuple[str, str]:
    """(the plain DSN, the schema) of a store URL."""
    base, _, query = url.partition("?")
    return base, dict(parse_qsl(query)).get("schema", "aiosched")


class Node:
    """One node subprocess: its JSON lines, its commands."""

    def __init__(self, node_id: str, proc: asyncio.subprocess.Process) -> None:
        self.node_id = node_id
        self.proc = proc
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.port: int | None = None  # its management API's, when started with NODE_API=1
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            await self.lines.put(json.loads(line))
        await self.lines.put({"eof": True})

    async def expect(self, key: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next line holding ``key`` (fails on EOF or after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                assert "eof" not in line, f"node {self.node_id} ended (exit {self.proc.returncode}) awaiting {key!r}"
                if key in line or "error" in line:
                    return line

    async def ask(self, command: str, key: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.expect(key)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for exit; SIGKILL if it takes longer than ``timeout``."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)
        return code


class Cluster:
    """Nodes on one store, plus the ledger (``<schema>_ledger`` schema, same database)."""

    def __init__(self, url: str, *, ledger_dsn: str | None = None) -> None:
        self.url = url
        self.dsn, schema = split_url(url)
        self.ledger_dsn = ledger_dsn or self.dsn
        self.ledger_schema = f"{schema}_ledger"
        self.nodes: list[Node] = []
        self.db: Any = None

    async def open(self) -> None:
        self.db = await asyncpg.connect(self.ledger_dsn, timeout=5)
        s = f'"{self.ledger_schema}"'
        await self.db.execute(
            f"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.ledger (
                schedule_id text NOT NULL, fire_time timestamptz NOT NULL, node text NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(), pid int, ended timestamptz);
            CREATE TABLE IF NOT EXISTS {s}.counters (running int NOT NULL, peak int NOT NULL);
            INSERT INTO {s}.counters VALUES (0, 0);
            """
        )

    async def reconnect(self) -> None:
        """Open the test's own connection again (after a server restart)."""
        if self.db is not None and not self.db.is_closed():
            self.db.terminate()
        self.db = await asyncpg.connect(self.ledger_dsn, timeout=5)

    async def close(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.kill()
            await node.stop(5)
        if self.db is not None and not self.db.is_closed():
            try:
                await self.db.execute(f'DROP SCHEMA IF EXISTS "{self.ledger_schema}" CASCADE')
            finally:
                await self.db.close()

    async def start(
        self,
        node_id: str,
        *,
        max_sleep: float = 30.0,
        ready: bool = True,
        env: dict[str, str] | None = None,
        stderr: Any = None,
    ) -> Node:
        """Start a node (``env`` adds to the environment: ``NODE_API``, libfaketime, ...)."""
        env = {**os.environ, "LEDGER_DSN": self.ledger_dsn, "LEDGER_SCHEMA": self.ledger_schema, **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.cluster._node",
            self.url,
            node_id,
            str(max_sleep),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        node = Node(node_id, proc)
        self.nodes.append(node)
        if ready:
            line = await node.expect("ready")
            assert "ready" in line, line
            node.port = line.get("port")
        return node

    async def query(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.db.fetch(sql.format(ledger=f'"{self.ledger_schema}".ledger'), *args))

    async def starts(self) -> int:
        return int((await self.query("SELECT count(*) FROM {ledger}"))[0][0])

    async def duplicates(self) -> list[Any]:
        return await self.query(
            "SELECT schedule_id, fire_time, array_agg(node) FROM {ledger} GROUP BY 1, 2 HAVING count(*) > 1"
        )

    async def ledger_keys(self) -> set[tuple[str, datetime]]:
        return {(r[0], r[1]) for r in await self.query("SELECT schedule_id, fire_time FROM {ledger}")}


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05) -> float:
    """Await ``check()`` becoming true; returns the seconds it took. Fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
    return loop.time() - start
