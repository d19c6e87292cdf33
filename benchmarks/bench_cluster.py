"""Cluster benchmark: a burst of N due schedules on PostgreSQL, fired by 1, 2 and 3 nodes.

For each node count and round: a fresh schema, that many node subprocesses
(``--node URL ID``, each a Scheduler on the store), then N ``date`` schedules due at one
instant T0 (one added through the API, N copies of its row in one INSERT, then a NOTIFY).
Measured from the database's records:

    last start   T0 → the latest ``started_at`` of the N runs
    recorded     T0 → every run's final record committed (polled every 50 ms)
    fires/s      N / last start
    per node     how the runs spread over the nodes (min-max)

The task is a no-op coroutine. The table shows the median of the rounds. The server is
``$AIOSCHED_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``).

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_cluster.py                       # N=3000, 1/2/3 nodes, 2 rounds
    /tmp/venv/bin/python benchmarks/bench_cluster.py --size 10000 --rounds 3 --nodes 1,3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402

from aiosched import Scheduler  # noqa: E402

BASE = os.environ.get("AIOSCHED_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def noop() -> None:
    """The benchmark's task."""


# -- a node ---------------------------------------------------------------------------


async def node_main(url: str, node_id: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Scheduler(store=url, node_id=node_id, timezone="UTC"):
        print(json.dumps({"ready": node_id}), flush=True)
        await stop.wait()


# -- one measurement ------------------------------------------------------------------------


async def one_round(size: int, nodes: int) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = f"{BASE}?schema={schema}&lease=10&heartbeat=2"
    procs = []
    db = await asyncpg.connect(BASE)
    try:
        for i in range(nodes):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "bench_cluster.py"), "--node", url, f"n{i}", stdout=asyncio.subprocess.PIPE
            )
            procs.append(proc)
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                assert b"ready" in await proc.stdout.readline()
        due = datetime.now(UTC) + timedelta(seconds=2)
        admin = Scheduler(store=url, node_id="admin", timezone="UTC")
        try:  # one schedule through the API, then N copies of its row in one statement (adds are not measured)
            await admin.add_job("bench_cluster:noop", "date", run_date=due, id="template", paused=True)
        finally:
            await admin.shutdown()
        cols = "name, task_ref, trigger, args, kwargs, policy, next_fire_time, version, source"
        await db.execute(
            f"INSERT INTO \"{schema}\".schedules (id, paused, {cols}) SELECT format('b%s', i), false, {cols}"
            f" FROM \"{schema}\".schedules, generate_series(1, $1) AS i WHERE id = 'template'",
            size,
        )
        await db.execute(f"SELECT pg_notify('aiosched_{schema}', '')")
        if datetime.now(UTC) >= due:
            raise RuntimeError("adding the schedules took longer than planned; lower --size")
        runs = f'"{schema}".runs'
        async with asyncio.timeout(120 + size / 50):
            while await db.fetchval(f"SELECT count(*) FROM {runs} WHERE state = 'succeeded'") < size:  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.05)
        recorded = datetime.now(UTC)  # (polled every 50 ms)
        last_start = await db.fetchval(f"SELECT max(started_at) FROM {runs}")
        spread = [r[0] for r in await db.fetch(f"SELECT count(*) FROM {runs} GROUP BY node")]
        start_s = (last_start - due).total_seconds()
        return {
            "last_start": start_s,
            "recorded": (recorded - due).total_seconds(),
            "fires_per_s": size / start_s,
            "spread": (min(spread), max(spread)),
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await db.close()


async def bench(size: int, node_counts: list[int], rounds: int) -> None:
    rows = []
    for nodes in node_counts:
        results = [await one_round(size, nodes) for _ in range(rounds)]
        med = {k: statistics.median(r[k] for r in results) for k in ("last_start", "recorded", "fires_per_s")}
        spread = results[len(results) // 2]["spread"]
        rows.append((nodes, med, spread))
        print(f"  {nodes} node(s): {med['fires_per_s']:.0f} fires/s", file=sys.stderr, flush=True)
    argv = [Path(sys.executable).name, "benchmarks/bench_cluster.py", *sys.argv[1:]]
    command = " ".join(shlex.quote(a) for a in argv)
    print(f"\n### Cluster burst: {size} schedules due at once on PostgreSQL\n")
    print(f"`{command}` — median of {rounds} round(s); {platform.python_version()}, {os.cpu_count()} CPUs\n")
    print("| nodes | last start | recorded | fires/s | runs per node (min-max) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for nodes, med, spread in rows:
        print(
            f"| {nodes} | {med['last_start'] * 1000:.0f} ms | {med['recorded'] * 1000:.0f} ms"
            f" | {med['fires_per_s']:.0f} | {spread[0]}-{spread[1]} |"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        asyncio.run(node_main(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=3000, help="schedules due at once (default 3000)")
    parser.add_argument("--nodes", default="1,2,3", help="node counts to measure (default 1,2,3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per node count (median shown)")
    args = parser.parse_args()
    started = time.monotonic()
    asyncio.run(bench(args.size, [int(n) for n in args.nodes.split(",")], args.rounds))
    print(f"\n(took {time.monotonic() - started:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    main()
