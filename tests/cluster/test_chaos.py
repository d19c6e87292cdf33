"""The C-tier cluster scenarios of RELIABILITY.md: S1, S9, S10, S19, S20 at full size.

Run one with ``pytest -m chaos tests/cluster -k s01`` (``s09``, ``s10``, ``s19``, ``s20``);
add ``-s`` to see the figures as they are measured, ``AIOSCHED_FIGURES=f.jsonl`` to keep
them. Each asserts its pass figures. Lateness is ``ledger.at - fire_time``: ``at`` is the
database's ``clock_timestamp()`` when the task wrote its start, so it is true time even for
a node whose own clock is off (S9). The ledger and the fault plans are in ``_chaos.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest

from aiosched import Scheduler

from ..reliability.harness import faketime_env
from ._chaos import (
    STARTED,
    Faults,
    add_schedules,
    counter_sum,
    healthz,
    ledger_rows,
    p99,
    scrape,
    wait_settled,
)
from ._harness import Cluster, Node, split_url, until
from ._pgctl import ThrowawayServer
from .conftest import FigureRecorder
from .test_cluster import test_a_second_process_with_the_same_node_id_is_refused

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.timeout(900)]

LEASE, HEARTBEAT = 3.0, 1.0
POLL = 2.0  # the nodes' max_sleep: the longest an idle node goes without looking at the store
SECONDS = int(os.environ.get("AIOSCHED_CHAOS_SECONDS", "120"))


def chaos_url(base: str) -> str:
    return f"{base}&lease={LEASE:g}&heartbeat={HEARTBEAT:g}&batch=50&history_limit=1000000"


@pytest.fixture
async def cluster(pg_url: str) -> AsyncIterator[Cluster]:
    made = Cluster(chaos_url(pg_url))
    await made.open()
    yield made
    await made.close()


def runs_of(url: str) -> str:
    return f'"{split_url(url)[1]}".runs'


# -- S1 (and S20's second half) ---------------------------------------------------------------


async def s1(
    cluster: Cluster, figure: FigureRecorder, scenario: str, *, api: bool, lateness: bool = True
) -> dict[str, Node]:
    """500 schedules at 1 s for SECONDS s on 3 nodes; SIGKILL a random node every 15 s, back 5 s later.

    ``lateness=False`` records the p99 lateness without asserting it (S20, whose pass figure is
    the counters; S1's lateness is asserted by S1 itself).
    """
    env = {"NODE_API": "1"} if api else None
    live = {f"node{i}": await cluster.start(f"node{i}", max_sleep=POLL, env=env) for i in range(3)}
    count = 500
    first, fires = await add_schedules(
        cluster.url, count, SECONDS, max_instances=5, coalesce=False, kwargs={"hold": 0.1}
    )
    expected = {(f"s{i:03d}", t) for i in range(count) for t in fires}
    faults = Faults(cluster, live, env=env)
    print(f"\n{scenario}: fault plan seed {faults.seed}")  # noqa: T201 - shown with -s
    await faults.run(first, SECONDS)
    runs = runs_of(cluster.url)
    left = (fires[-1] - datetime.now(UTC)).total_seconds()
    await wait_settled(cluster, runs, expected, left + LEASE + 60)

    rows = await ledger_rows(cluster)
    duplicates = await cluster.duplicates()
    keys = {(r[0], r[1]) for r in rows}
    states = {
        (r[0], r[1]): (r[2], r[3])
        for r in await cluster.db.fetch(f"SELECT schedule_id, fire_time, state, node FROM {runs}")
    }
    missed = expected - keys
    window = timedelta(seconds=LEASE + POLL)
    unexplained: list[Any] = []
    offsets: list[float] = []
    for key in missed:
        state, node = states.get(key, (None, None))
        near = [k for k in faults.kills if k.node == node and k.at - timedelta(seconds=1) <= key[1] <= k.at + window]
        if state != "abandoned" or not near:
            unexplained.append((key, state, node))
        else:
            offsets.append(min((key[1] - k.at).total_seconds() for k in near))
    in_window = [r[4] for r in rows if any(k.at <= r[1] <= k.at + window for k in faults.kills)]
    rest = [r[4] for r in rows if not any(k.at <= r[1] <= k.at + window for k in faults.kills)]
    late_rest, late_all = p99(rest), p99([r[4] for r in rows])
    kills = ", ".join(f"{k.node}@+{(k.at - first).total_seconds():.1f}s" for k in faults.kills)
    print(  # noqa: T201 - shown with -s
        f"{scenario}: kills {kills}; fires {len(expected)}, started {len(keys)}, duplicates {len(duplicates)},"
        f" missed {len(missed)} (abandoned in flight; {min(offsets, default=0):+.2f}..{max(offsets, default=0):+.2f}s"
        f" from their kill), unexplained {len(unexplained)}; lateness p99 outside kill windows {late_rest:.3f}s,"
        f" overall {late_all:.3f}s, max inside windows {max(in_window, default=0):.3f}s"
    )
    figure(scenario, "duplicates", len(duplicates), "0")
    figure(scenario, "kills (SIGKILL, back 5 s later)", len(faults.kills), f"every 15 s for {SECONDS} s")
    figure(scenario, "fires / started / missed", f"{len(expected)} / {len(keys)} / {len(missed)}", "")
    figure(scenario, "misses outside [kill - 1 s, kill + lease + poll] of the killed node", len(unexplained), "0")
    figure(
        scenario,
        "miss fire times from their kill (min..max s)",
        f"{min(offsets, default=0):+.2f}..{max(offsets, default=0):+.2f}",
        "",
    )
    figure(scenario, "p99 lateness outside kill windows (s)", round(late_rest, 3), "<= 1 s")
    figure(
        scenario, "p99 lateness overall; max inside windows (s)", f"{late_all:.3f}; {max(in_window, default=0):.3f}", ""
    )
    assert duplicates == []
    assert keys <= expected
    assert unexplained == []
    assert late_rest <= 1.0 or not lateness
    for node in live.values():
        assert node.alive
    return live


async def test_s01_sigkill_a_random_node_every_15s(cluster: Cluster, figure: FigureRecorder) -> None:
    live = await s1(cluster, figure, "S1", api=False)
    for node in live.values():
        assert await node.stop() == 0


# -- S20 ---------------------------------------------------------------------------------------


async def test_s20_a_twin_is_refused_then_counters_equal_the_ledger_after_s1(
    cluster: Cluster, figure: FigureRecorder
) -> None:
    """The twin check of test_cluster, then S1 with the API on; every incarnation alive at the end is compared.

    A SIGKILLed incarnation takes its in-process counters with it (a restarted node counts from
    zero, as Prometheus counters do after any restart), so what can be compared exactly is each
    incarnation that is scraped while alive and idle: the last one of each node, which also took
    over the killed nodes' work. Its ``scheduler_task_executions_total`` for runs that started
    (success, failure, timeout, cancelled) must equal the ledger rows written by its pid.
    """
    await test_a_second_process_with_the_same_node_id_is_refused(cluster)
    figure("S20", "second process with the same node id refused, naming pid and host", "yes", "refused")
    live = await s1(cluster, figure, "S20", api=True, lateness=False)
    rows = await ledger_rows(cluster)
    per_pid: dict[int, int] = {}
    for r in rows:
        per_pid[r[3]] = per_pid.get(r[3], 0) + 1
    compared: list[str] = []
    total_abandoned = 0
    for name, node in sorted(live.items()):
        assert node.port is not None
        samples = await scrape(node.port)
        started = sum(counter_sum(samples, "scheduler_task_executions_total", status=s) for s in STARTED)
        success = counter_sum(samples, "scheduler_task_executions_total", status="success")
        lateness_count = counter_sum(samples, "scheduler_task_lateness_seconds_count")
        total_abandoned += counter_sum(samples, "scheduler_task_executions_total", status="abandoned")
        ledger = per_pid.get(node.proc.pid, 0)
        compared.append(f"{name} pid {node.proc.pid}: counters {started} (success {success}), ledger {ledger}")
        assert started == ledger, (name, started, ledger, sorted({k[0] for k in samples}))
        assert success == ledger  # every run succeeds (hold 0.1 s, no faults inside tasks)
        assert lateness_count >= ledger
    abandoned_rows = int(
        await cluster.db.fetchval(f"SELECT count(*) FROM {runs_of(cluster.url)} WHERE state = 'abandoned'")
    )
    print(f"S20: {'; '.join(compared)}; abandoned counted by the survivors {total_abandoned} of {abandoned_rows}")  # noqa: T201
    figure("S20", "counters == ledger rows of the same incarnation", "; ".join(compared), "equal, exactly")
    figure("S20", "abandoned: counted by final incarnations / rows", f"{total_abandoned} / {abandoned_rows}", "<=")
    assert total_abandoned <= abandoned_rows
    for node in live.values():
        assert await node.stop() == 0


# -- S9 ----------------------------------------------------------------------------------------

LEASE_CHECK = """
CREATE TABLE {ledger}.violations (id text, old_by text, new_by text, old_until timestamptz,
                                  at timestamptz DEFAULT clock_timestamp());
CREATE TABLE {ledger}.takes (node text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION {ledger}.check_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.acquired_token IS NOT NULL AND NEW.acquired_token IS DISTINCT FROM OLD.acquired_token THEN
    IF OLD.acquired_token IS NOT NULL AND OLD.acquired_until > clock_timestamp() THEN
      INSERT INTO {ledger}.violations (id, old_by, new_by, old_until)
      VALUES (OLD.id, OLD.acquired_by, NEW.acquired_by, OLD.acquired_until);
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER lease_check BEFORE UPDATE ON {store}.schedules FOR EACH ROW EXECUTE FUNCTION {ledger}.check_lease();
"""


async def test_s09_one_node_30s_ahead(cluster: Cluster, figure: FigureRecorder, faketime: str, tmp_path: Path) -> None:
    """node2 runs 30 s ahead (libfaketime): nobody fires early, no lease is taken before it expired (database time)."""
    log = tmp_path / "node2.log"
    nodes = [await cluster.start(f"node{i}", max_sleep=POLL) for i in range(2)]
    with log.open("w") as sink:
        nodes.append(
            await cluster.start("node2", max_sleep=POLL, env=faketime_env(faketime, FAKETIME="+30s"), stderr=sink)
        )
    store = f'"{split_url(cluster.url)[1]}"'
    await cluster.db.execute(LEASE_CHECK.format(ledger=f'"{cluster.ledger_schema}"', store=store))
    offset = (await nodes[2].ask("stats", "stats"))["stats"]["clock_offset"]
    count = 200
    _, fires = await add_schedules(cluster.url, count, SECONDS, max_instances=5, coalesce=False, kwargs={"hold": 0.1})
    expected = {(f"s{i:03d}", t) for i in range(count) for t in fires}

    async def complete() -> bool:
        return len(await cluster.ledger_keys()) >= len(expected)

    await until(complete, (fires[-1] - datetime.now(UTC)).total_seconds() + 20, "every fire started", every=0.5)
    rows = await ledger_rows(cluster)
    duplicates = await cluster.duplicates()
    violations = await cluster.db.fetch(f'SELECT * FROM "{cluster.ledger_schema}".violations')
    lateness = [r[4] for r in rows]
    early = sum(1 for x in lateness if x < 0)
    by_node = {n: sum(1 for r in rows if r[2] == n) for n in ("node0", "node1", "node2")}
    late = p99(lateness)
    print(  # noqa: T201 - shown with -s
        f"\nS9: node2 offset {offset:.3f}s; fires {len(expected)}, started {len(rows)} ({by_node}); duplicates"
        f" {len(duplicates)}; leases taken before expiry {len(violations)}; started early {early};"
        f" lateness min {min(lateness):.3f}s p99 {late:.3f}s max {max(lateness):.3f}s"
    )
    figure("S9", "node2 clock offset measured against the database (s)", round(offset, 3), "about -30")
    figure("S9", "duplicates", len(duplicates), "0")
    figure("S9", "leases taken before expiry by database time (trigger on schedules)", len(violations), "0")
    figure("S9", "fires started before their fire time (database time)", early, "0")
    figure("S9", "p99 lateness (database time, s)", round(late, 3), "<= 1 s")
    figure("S9", "starts per node", str(by_node), "node2 takes a share")
    assert abs(offset + 30) < 0.5
    assert duplicates == []
    assert {(r[0], r[1]) for r in rows} == expected
    assert violations == []
    assert early == 0
    assert late <= 1.0
    assert by_node["node2"] > 0
    for node in nodes:
        assert node.alive
        assert await node.stop() == 0
    assert "node clock is 30.0 s ahead of the database; using database time" in log.read_text()


# -- S10 ---------------------------------------------------------------------------------------

OUTAGE = float(os.environ.get("AIOSCHED_CHAOS_OUTAGE", "60"))


async def test_s10_postgres_stopped_for_60s_under_load(
    server: ThrowawayServer, pg_url: str, figure: FigureRecorder
) -> None:
    """The store's server stops for 60 s; the ledger lives on the shared server, which stays up."""
    ledger_dsn, schema = split_url(pg_url)
    url = chaos_url(f"{server.url}?schema={schema}")
    cluster = Cluster(url, ledger_dsn=ledger_dsn)
    await cluster.open()
    store_db: Any = None
    try:
        env = {"NODE_API": "1"}
        nodes = [await cluster.start(f"node{i}", max_sleep=POLL, env=env) for i in range(3)]
        count, seconds = 300, int(OUTAGE) + 45
        # runs take 0.5 s: ~150 are in flight at the stop, and they end during the outage
        first, fires = await add_schedules(url, count, seconds, max_instances=5, kwargs={"hold": 0.5})
        expected = {(f"s{i:03d}", t) for i in range(count) for t in fires}
        await asyncio.sleep((first + timedelta(seconds=15.3) - datetime.now(UTC)).total_seconds())

        await server.stop()
        down_at = datetime.now(UTC)
        ports = [n.port for n in nodes]
        assert all(p is not None for p in ports)

        async def degraded() -> bool:
            return all(s == 503 for s in await asyncio.gather(*(healthz(p) for p in ports if p)))

        degraded_in = await until(degraded, 5.0, "/healthz of every node to answer 503", every=0.1)
        exits_during: list[int | None] = []

        async def watch() -> None:
            while True:
                exits_during.extend(n.proc.returncode for n in nodes if not n.alive)
                await asyncio.sleep(0.5)

        watcher = asyncio.get_running_loop().create_task(watch())
        await asyncio.sleep(max(0.0, OUTAGE - (datetime.now(UTC) - down_at).total_seconds()))
        await server.start()
        up_at = datetime.now(UTC)
        watcher.cancel()

        async def healthy() -> bool:
            return all(s == 200 for s in await asyncio.gather(*(healthz(p) for p in ports if p)))

        healthy_in = await until(healthy, 30.0, "/healthz of every node to answer 200", every=0.1)

        async def all_firing() -> bool:
            got = await cluster.query("SELECT count(DISTINCT node) FROM {ledger} WHERE at > $1", up_at)
            return int(got[0][0]) == 3

        await until(all_firing, 30.0, "every node to start runs again", every=0.1)
        firsts = await cluster.query("SELECT node, min(at) FROM {ledger} WHERE at > $1 GROUP BY 1 ORDER BY 1", up_at)
        again = {r[0]: (r[1] - up_at).total_seconds() for r in firsts}
        store_db = await asyncpg.connect(split_url(url)[0], timeout=5)
        runs = runs_of(url)

        async def settled() -> bool:
            got = await cluster.ledger_keys()
            recorded = await store_db.fetch(f"SELECT schedule_id, fire_time, state FROM {runs}")
            busy = any(r[2] in ("queued", "running") for r in recorded)
            return not busy and (got | {(r[0], r[1]) for r in recorded}) >= expected

        await until(settled, (fires[-1] - datetime.now(UTC)).total_seconds() + 30, "every fire settled", every=0.5)
        duplicates = await cluster.duplicates()
        keys = await cluster.ledger_keys()
        records = {
            (r[0], r[1]): (r[2], r[3])
            for r in await store_db.fetch(f"SELECT schedule_id, fire_time, state, ended_at FROM {runs}")
        }
        lost = [k for k in keys if records.get(k, ("?",))[0] != "succeeded"]
        during = [
            k
            for k, (state, ended) in records.items()
            if state == "succeeded" and ended is not None and down_at <= ended <= up_at
        ]
        started_during = await cluster.query(
            "SELECT count(*) FROM {ledger} WHERE at > $1 AND at < $2", down_at + timedelta(seconds=1), up_at
        )
        states: dict[str, int] = {}
        for state, _ in records.values():
            states[state] = states.get(state, 0) + 1
        print(  # noqa: T201 - shown with -s
            f"\nS10: server down {OUTAGE:g}s; all /healthz 503 after {degraded_in:.2f}s;"
            f" all 200 {healthy_in:.2f}s after the restart; first start per node after the restart {again};"
            f" duplicates {len(duplicates)};"
            f" runs that ended during the outage {len(during)}, results lost {len(lost)}; starts during the outage"
            f" {started_during[0][0]}; states {states}; exits {exits_during}"
        )
        figure("S10", "process exits", len(exits_during) + sum(1 for n in nodes if not n.alive), "0")
        figure("S10", "every /healthz 503 after the stop (s)", round(degraded_in, 2), "<= 5 s")
        figure("S10", "every /healthz 200 after the start (s)", round(healthy_in, 2), "")
        figure(
            "S10",
            "first start per node after the start (s)",
            str({k: round(v, 2) for k, v in again.items()}),
            "<= 5 s + one backoff step",
        )
        figure("S10", "duplicates", len(duplicates), "0")
        figure("S10", "runs that ended during the outage, persisted as succeeded", len(during), "all")
        figure("S10", "ledger starts without a succeeded record (lost results)", len(lost), "0")
        figure("S10", "run records by state", str(states), "")
        assert exits_during == [] and all(n.alive for n in nodes)
        assert degraded_in <= 5.0
        assert max(again.values()) <= 5.0 + 5.0  # 5.0: the engine's backoff cap (min(5, max_sleep) = 2 here)
        assert duplicates == []
        assert lost == []
        assert during
        for node in nodes:
            assert await node.stop() == 0
    finally:
        if store_db is not None:
            await store_db.close()
        await cluster.close()


# -- S19 ---------------------------------------------------------------------------------------

B_POLL = 5.0  # node B's max_sleep: the longest it goes without looking when nothing wakes it


async def test_s19_listen_connection_killed_every_10s(cluster: Cluster, figure: FigureRecorder) -> None:
    """Node A only changes (its engine is off); node B must fire what A resumes while B's LISTEN keeps dying."""
    a = await cluster.start("nodeA", env={"NODE_API": "1", "NODE_ENGINE": "0"})
    b = await cluster.start("nodeB", max_sleep=B_POLL)
    count, spacing = 40, 1.5
    admin = Scheduler(store=cluster.url, node_id="admin", timezone="UTC")
    base = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) + 8, UTC)
    due = {f"r{i:03d}": base + timedelta(seconds=spacing * i) for i in range(count)}
    try:
        for sid, when in due.items():  # paused: nothing is due until A resumes it, shortly before its time
            await admin.add_job(
                "tests.cluster._tasks:ledger",
                "interval",
                seconds=1,
                start_date=when,
                end_date=when + timedelta(seconds=0.5),
                id=sid,
                paused=True,
            )
    finally:
        await admin.shutdown()
    kills: list[datetime] = []

    async def killer() -> None:
        while True:
            await asyncio.sleep(10)
            got = await cluster.db.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'aiosched nodeB listen'"
            )
            if any(r[0] for r in got):
                kills.append(datetime.now(UTC))

    task = asyncio.get_running_loop().create_task(killer())
    resumed: dict[str, datetime] = {}
    try:
        async with aiohttp.ClientSession() as http:
            for sid, when in due.items():
                await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds() - 0.4))
                async with http.post(f"http://127.0.0.1:{a.port}/scheduler/jobs/{sid}/resume") as answer:
                    assert answer.status == 200, await answer.text()
                resumed[sid] = datetime.now(UTC)

        async def all_fired() -> bool:
            return int((await cluster.query("SELECT count(DISTINCT schedule_id) FROM {ledger}"))[0][0]) >= count

        await until(all_fired, B_POLL + 5, "every resumed schedule to fire", every=0.2)
    finally:
        task.cancel()
    rows = await ledger_rows(cluster)
    first = {}
    for r in sorted(rows, key=lambda r: r[1]):
        first.setdefault(r[0], r)
    never = sorted(set(due) - set(first))
    lateness = [r[4] for r in first.values()]
    on_b = all(r[2] == "nodeB" for r in rows)
    stats = (await b.ask("stats", "stats"))["stats"]
    worst = max(lateness, default=0.0)
    print(  # noqa: T201 - shown with -s
        f"\nS19: LISTEN of B killed {len(kills)}x; reconnects {stats['listen_reconnects']}; fired {len(first)}/{count}"
        f" all on B {on_b}; first-fire lateness p50 {sorted(lateness)[len(lateness) // 2]:.3f}s max {worst:.3f}s"
    )
    figure(
        "S19",
        "LISTEN connection killed / reconnects counted",
        f"{len(kills)} / {stats['listen_reconnects']}",
        "counted",
    )
    figure("S19", "schedules resumed via A's API that never fired (on B)", len(never), "0")
    figure("S19", "first-fire lateness max (s)", round(worst, 3), f"<= max poll {B_POLL:g} s + 1 s")
    assert never == []
    assert on_b
    assert worst <= B_POLL + 1.0
    assert len(kills) >= 3 and stats["listen_reconnects"] >= len(kills)
    assert await cluster.duplicates() == []
    for node in (a, b):
        assert await node.stop() == 0
