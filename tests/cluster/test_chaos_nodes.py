"""The C-tier cluster parts of S2, S4, S13 and S14 (RELIABILITY.md) at full size.

Run one with ``pytest -m chaos tests/cluster -k s02`` (``s04``, ``s13``, ``s14``); add ``-s``
to see the figures as they are measured. Their CI sizes run with every ``pytest``
(``test_cluster.py``). Same store options as ``test_chaos.py`` (lease 3 s, heartbeat 1 s,
poll 2 s) but batches of 100, so one claim can hold S2's 100 leases.

Steering work onto one node uses the node script's switches (``_node.py``): ``NODE_CLAIM=0``
and ``claim on`` keep the other nodes from claiming until the victim holds its runs (they
heartbeat and settle dead nodes' runs all along), and ``stop-at-claim 100`` makes a node
SIGSTOP itself right after a claim of 100 schedules, while it holds their leases.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiosched import Scheduler

from ._chaos import add_schedules, ledger_rows, wait_settled
from ._harness import Cluster, Node, split_url, until
from .conftest import FigureRecorder
from .test_chaos import HEARTBEAT, LEASE, POLL, runs_of

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.timeout(400)]


@pytest.fixture
async def cluster(pg_url: str) -> AsyncIterator[Cluster]:
    made = Cluster(f"{pg_url}&lease={LEASE:g}&heartbeat={HEARTBEAT:g}&batch=100&history_limit=1000000")
    await made.open()
    yield made
    await made.close()


def proc_state(node: Node) -> str:
    """The process state letter from ``/proc/PID/stat`` (``T``: stopped)."""
    text = Path(f"/proc/{node.proc.pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()[0]


async def stats(node: Node) -> dict[str, Any]:
    got: dict[str, Any] = (await node.ask("stats", "stats"))["stats"]
    return got


async def one_shots(url: str, jobs: dict[str, dict[str, Any]], *, lead: float = 2.0) -> datetime:
    """Add one-shot ledger schedules (``id -> options``) all due at one whole second; returns it."""
    when = datetime.fromtimestamp(math.ceil(time.time() + lead + len(jobs) * 0.01), UTC)
    admin = Scheduler(store=url, node_id="admin", timezone="UTC")
    try:
        for sid, options in jobs.items():
            await admin.add_job("tests.cluster._tasks:ledger", "date", run_date=when, id=sid, **options)
    finally:
        await admin.shutdown()
    assert datetime.now(UTC) < when, "adding the schedules took longer than planned"
    return when


async def ledger_count(cluster: Cluster, where: str = "TRUE", *args: Any) -> int:
    return int((await cluster.query("SELECT count(*) FROM {ledger} WHERE " + where, *args))[0][0])


# -- S2 ------------------------------------------------------------------------------------------

# Every row node2's own connections write to schedules or runs, judged as it is written: a write
# is stale when the node does not hold what it writes (a schedule whose lease is not its own and
# valid by the database's clock, and that it is not claiming; a run no longer in flight on it; a
# run inserted without a valid release of its schedule in the same transaction).
AUDIT = """
CREATE TABLE {L}.writes (tbl text, id text, fire_time timestamptz, txid bigint, stale bool, detail text,
                         at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION {L}.audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  is_stale bool;
BEGIN
  IF current_setting('application_name') IS DISTINCT FROM 'aiosched {node}' THEN
    RETURN NULL;
  END IF;
  IF TG_TABLE_NAME = 'schedules' THEN
    is_stale := NOT coalesce(
      (OLD.acquired_by = '{node}' AND OLD.acquired_until > clock_timestamp())
      OR (NEW.acquired_by = '{node}' AND (OLD.acquired_until IS NULL OR OLD.acquired_until < clock_timestamp())),
      false);
    INSERT INTO {L}.writes (tbl, id, txid, stale, detail)
    VALUES ('schedules', NEW.id, txid_current(), is_stale,
            coalesce(OLD.acquired_by, '-') || ' -> ' || coalesce(NEW.acquired_by, '-'));
  ELSIF TG_OP = 'UPDATE' THEN
    is_stale := NOT coalesce(OLD.state IN ('queued', 'running') AND OLD.node = '{node}', false);
    INSERT INTO {L}.writes (tbl, id, fire_time, txid, stale, detail)
    VALUES ('runs', NEW.schedule_id, NEW.fire_time, txid_current(), is_stale, OLD.state || ' -> ' || NEW.state);
  ELSE
    is_stale := NOT EXISTS (SELECT 1 FROM {L}.writes w WHERE w.tbl = 'schedules' AND w.id = NEW.schedule_id
                            AND w.txid = txid_current() AND NOT w.stale);
    INSERT INTO {L}.writes (tbl, id, fire_time, txid, stale, detail)
    VALUES ('runs', NEW.schedule_id, NEW.fire_time, txid_current(), is_stale, 'insert ' || NEW.state);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER UPDATE ON {S}.schedules FOR EACH ROW EXECUTE FUNCTION {L}.audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON {S}.runs FOR EACH ROW EXECUTE FUNCTION {L}.audit();
"""

S2_SCHEDULES, S2_SECONDS, S2_HOLD = 300, 40, 0.9


async def test_s02_sigstop_the_node_holding_100_leases(
    cluster: Cluster, figure: FigureRecorder, tmp_path: Path
) -> None:
    """node2 SIGSTOPs right after claiming 100 schedules, for 2 x lease; after SIGCONT it must write nothing stale."""
    log = tmp_path / "node2.log"
    nodes = [await cluster.start(f"node{i}", max_sleep=POLL) for i in range(2)]
    with log.open("w") as sink:
        nodes.append(await cluster.start("node2", max_sleep=POLL, stderr=sink))
    victim = nodes[2]
    store = f'"{split_url(cluster.url)[1]}"'
    ledger_schema = f'"{cluster.ledger_schema}"'
    await cluster.db.execute(AUDIT.replace("{L}", ledger_schema).replace("{S}", store).replace("{node}", "node2"))
    # runs of 0.9 s at 1 s: at a claim, node2 usually still has runs of the previous fire in flight
    first, fires = await add_schedules(
        cluster.url, S2_SCHEDULES, S2_SECONDS, max_instances=5, coalesce=False, kwargs={"hold": S2_HOLD}
    )
    expected = {(f"s{i:03d}", t) for i in range(S2_SCHEDULES) for t in fires}
    await asyncio.sleep((first + timedelta(seconds=5.3) - datetime.now(UTC)).total_seconds())
    before = await stats(victim)
    assert (await victim.ask("stop-at-claim 100", "armed"))["armed"] == 100
    stopping = await victim.expect("stopping", timeout=20)
    assert "stopping" in stopping, stopping
    stopped_at = datetime.now(UTC)

    async def is_stopped() -> bool:
        return proc_state(victim) == "T"

    await until(is_stopped, 2, "node2 to be stopped")
    ids = sorted(stopping["ids"])
    fire = datetime.fromisoformat(stopping["fire"])
    held = int(
        await cluster.db.fetchval(
            f"SELECT count(*) FROM {store}.schedules WHERE acquired_by = 'node2' AND acquired_until > clock_timestamp()"
        )
    )
    in_flight = int(
        await cluster.db.fetchval(
            f"SELECT count(*) FROM {runs_of(cluster.url)} WHERE node = 'node2' AND state IN ('queued', 'running')"
        )
    )
    await asyncio.sleep(max(0.0, 2 * LEASE - (datetime.now(UTC) - stopped_at).total_seconds()))
    assert proc_state(victim) == "T"
    victim.proc.send_signal(signal.SIGCONT)
    cont_at = datetime.now(UTC)

    async def noticed() -> bool:
        return int((await stats(victim))["lease_lost"]) >= int(before["lease_lost"]) + len(ids)

    noticed_in = await until(noticed, 10, "node2 to count its lost leases")
    left = (fires[-1] - datetime.now(UTC)).total_seconds()
    await wait_settled(cluster, runs_of(cluster.url), expected, left + LEASE + 30)
    after = await stats(victim)

    rows = await ledger_rows(cluster)
    duplicates = await cluster.duplicates()
    keys = {(r[0], r[1]) for r in rows}
    stale = await cluster.db.fetch(f"SELECT tbl, id, fire_time, detail, at FROM {ledger_schema}.writes WHERE stale")
    writes = await cluster.db.fetch(
        f"SELECT tbl, count(*) FROM {ledger_schema}.writes WHERE at >= $1 GROUP BY 1 ORDER BY 1", cont_at
    )
    claimed = {(sid, fire) for sid in ids}
    claimed_rows = [r for r in rows if (r[0], r[1]) in claimed]
    claimed_by = {r[2] for r in claimed_rows}
    taken_over = max((r[4] for r in claimed_rows), default=0.0)
    abandoned = {
        (r[0], r[1])
        for r in await cluster.db.fetch(
            f"SELECT schedule_id, fire_time FROM {runs_of(cluster.url)} WHERE node = 'node2' AND state = 'abandoned'"
        )
    }
    missed = expected - keys
    record_of = {
        (r[0], r[1]): (r[2], r[3], r[4])
        for r in await cluster.db.fetch(
            f"SELECT schedule_id, fire_time, state, node, reason FROM {runs_of(cluster.url)}"
        )
    }
    why: dict[str, int] = {}
    for key in missed - abandoned:
        state, node, reason = record_of.get(key, ("none", "-", ""))
        label = f"{state} on {node}: {(reason or '')[:60]}"
        why[label] = why.get(label, 0) + 1
    span = sorted(k[1] for k in missed - abandoned)
    if span:
        print(  # noqa: T201 - shown with -s
            f"\nS2: missed not abandoned by node2: {why}; fire times {(span[0] - stopped_at).total_seconds():+.1f}s"
            f"..{(span[-1] - stopped_at).total_seconds():+.1f}s from the stop"
        )
    lost_lines = [line for line in log.read_text().splitlines() if "lease lost" in line]
    lease_lost = after["lease_lost"] - before["lease_lost"]
    stale_updates = after["stale_run_updates"] - before["stale_run_updates"]
    print(  # noqa: T201 - shown with -s
        f"\nS2: node2 stopped after claiming {len(ids)} schedules (fire {fire:%H:%M:%S}), {held} leases valid"
        f" and {in_flight} runs in flight at the stop; SIGCONT after {(cont_at - stopped_at).total_seconds():.2f}s;"
        f" lease loss counted {noticed_in:.2f}s later; stale writes {len(stale)} {[tuple(r) for r in stale[:5]]};"
        f" node2 writes after SIGCONT { {r[0]: r[1] for r in writes} }; lease_lost +{lease_lost},"
        f" stale_run_updates +{stale_updates}, node2 runs abandoned {len(abandoned)}; the claimed fire started by"
        f" {sorted(claimed_by)} ({len(claimed_rows)} of {len(ids)}), at most {taken_over:.2f}s late;"
        f" duplicates {len(duplicates)}; missed {len(missed)} ({len(missed - abandoned)} not abandoned by node2);"
        f" 'lease lost' lines {len(lost_lines)}: {[line[:150] for line in lost_lines]}"
    )
    figure("S2", "leases node2 held (valid) when stopped / runs it had in flight", f"{held} / {in_flight}", "100")
    figure("S2", "stopped for (s)", round((cont_at - stopped_at).total_seconds(), 2), f"2 x lease = {2 * LEASE:g}")
    figure("S2", "rows node2 wrote without holding them (audit trigger), after SIGCONT", len(stale), "0")
    figure("S2", "rows node2 wrote after SIGCONT by table (each checked by the trigger)", str(dict(writes)), "")
    figure("S2", "lease_lost counter of node2", f"{before['lease_lost']} -> {after['lease_lost']}", "rises")
    figure(
        "S2",
        "stale_run_updates of node2 / its runs settled abandoned while stopped",
        f"+{stale_updates} / {len(abandoned)}",
        ">=",
    )
    figure("S2", "'lease lost' log lines of node2", len(lost_lines), ">= 1 per stale write kind")
    figure("S2", "claimed fire started by / late at most (s)", f"{sorted(claimed_by)} / {taken_over:.2f}", "others")
    figure("S2", "duplicates", len(duplicates), "0")
    figure(
        "S2",
        "fires / started / missed (abandoned in flight by node2, or skipped by max_instances)",
        f"{len(expected)} / {len(keys)} / {len(missed)}",
        "",
    )
    assert len(ids) == 100 and held == 100
    assert stale == []
    assert lease_lost >= len(ids) + 1  # the release of the 100, and the heartbeat that found it taken for dead
    assert stale_updates >= len(abandoned)
    assert any("lease lost on 100 schedule(s)" in line for line in lost_lines), lost_lines
    assert any("lease lost: node node2" in line for line in lost_lines), lost_lines
    logged_runs = sum(int(m) for line in lost_lines for m in re.findall(r"lease lost on (\d+) run\(s\)", line))
    assert logged_runs == stale_updates, lost_lines  # each batch of stale run updates says so
    assert "node2" not in claimed_by and len(claimed_rows) == len(ids)
    assert duplicates == []
    assert keys <= expected
    # a fire not started is one node2 had begun (abandoned), or one the policy skipped when the
    # machine fell behind (max_instances 5 of 0.9 s runs): recorded, never silently lost
    assert all(
        key in abandoned or (record_of[key][0] == "skipped" and "max_instances" in (record_of[key][2] or ""))
        for key in missed
    ), why
    for node in nodes:
        assert node.alive
        assert await node.stop() == 0


# -- S4 (multi-node) -----------------------------------------------------------------------------

S4_HOLD = 10.0


async def test_s04_sigkill_a_node_with_100_runs_in_flight(cluster: Cluster, figure: FigureRecorder) -> None:
    """node2 alone starts 100 runs (50 recover: false, 50 recover: true), is SIGKILLed; node0/node1 settle them."""
    survivors = [await cluster.start(f"node{i}", max_sleep=POLL, env={"NODE_CLAIM": "0"}) for i in range(2)]
    up_at = time.monotonic()
    victim = await cluster.start("node2", max_sleep=POLL)
    jobs = {f"keep{i:02d}": {"recover": False, "kwargs": {"hold": S4_HOLD}} for i in range(50)}
    jobs |= {f"again{i:02d}": {"recover": True, "kwargs": {"hold": S4_HOLD}} for i in range(50)}
    when = await one_shots(cluster.url, jobs)

    async def all_started() -> bool:
        return await ledger_count(cluster, "node = 'node2'") >= 100

    await until(all_started, (when - datetime.now(UTC)).total_seconds() + 10, "node2 to start the 100 runs")
    runs = runs_of(cluster.url)
    in_flight = int(
        await cluster.db.fetchval(f"SELECT count(*) FROM {runs} WHERE node = 'node2' AND state = 'running'")
    )
    for node in survivors:
        assert (await node.ask("claim on", "claim"))["claim"] is True
    await asyncio.sleep(max(0.0, up_at + LEASE + HEARTBEAT + 0.5 - time.monotonic()))  # survivors judge others
    victim.kill()
    killed_at = datetime.now(UTC)
    await victim.stop(5)

    async def settled() -> bool:
        abandoned = int(
            await cluster.db.fetchval(
                f"SELECT count(*) FROM {runs} WHERE schedule_id LIKE 'keep%' AND state = 'abandoned'"
            )
        )
        rerun = await ledger_count(cluster, "schedule_id LIKE 'again%' AND node <> 'node2'")
        return abandoned >= 50 and rerun >= 50

    seen_in = await until(settled, LEASE + 2 + 15, "50 abandoned and 50 re-run")
    [(abandoned_by,)] = await cluster.db.fetch(
        f"SELECT max(ended_at) FROM {runs} WHERE schedule_id LIKE 'keep%' AND state = 'abandoned'"
    )
    [(rerun_by,)] = await cluster.query(
        "SELECT max(at) FROM {ledger} WHERE schedule_id LIKE 'again%' AND node <> 'node2'"
    )
    abandoned_after = (abandoned_by - killed_at).total_seconds()
    rerun_after = (rerun_by - killed_at).total_seconds()

    async def reruns_done() -> bool:
        got = await cluster.db.fetchval(
            f"SELECT count(*) FROM {runs} WHERE schedule_id LIKE 'again%' AND state = 'succeeded'"
        )
        return int(got) >= 50

    await until(reruns_done, S4_HOLD + 15, "the 50 re-runs to succeed")
    # a new incarnation of node2 must not run anything again either
    back = await cluster.start("node2", max_sleep=POLL)
    await asyncio.sleep(LEASE + HEARTBEAT + 1)
    records = await cluster.db.fetch(f"SELECT schedule_id, state, attempt, node FROM {runs}")
    starts = await cluster.query("SELECT schedule_id, node, at FROM {ledger} ORDER BY at")
    per_schedule: dict[str, list[str]] = {}
    for sid, node, _ in starts:
        per_schedule.setdefault(sid, []).append(node)
    keep_starts = sorted({len(v) for k, v in per_schedule.items() if k.startswith("keep")})
    again_starts = sorted({len(v) for k, v in per_schedule.items() if k.startswith("again")})
    keep_states = sorted({(r[1], r[2]) for r in records if r[0].startswith("keep")})
    again_states = sorted({(r[1], r[2]) for r in records if r[0].startswith("again")})
    rerun_nodes = sorted({v[1] for k, v in per_schedule.items() if k.startswith("again") and len(v) > 1})
    rerun_split = {
        n: sum(1 for k, v in per_schedule.items() if k.startswith("again") and v[1:] == [n]) for n in rerun_nodes
    }
    print(  # noqa: T201 - shown with -s
        f"\nS4: node2 had {in_flight} runs in flight; SIGKILL; seen settled {seen_in:.2f}s later (abandoned stamped"
        f" +{abandoned_after:.2f}s, last re-run started +{rerun_after:.2f}s); keep: starts {keep_starts}, records"
        f" {keep_states}; again: starts {again_starts}, records {again_states}, re-run on {rerun_split}"
    )
    figure("S4", "runs in flight on node2 at the SIGKILL", in_flight, "100")
    figure(
        "S4",
        "recover: false: abandoned records (state, attempt) / starts per schedule",
        f"{keep_states} / {keep_starts}",
        "50 abandoned, 1 start",
    )
    figure(
        "S4",
        "recover: true: records (state, attempt) / starts per schedule",
        f"{again_states} / {again_starts}",
        "attempt 2, 2 starts",
    )
    figure("S4", "re-runs by surviving node", str(rerun_split), "a survivor")
    figure(
        "S4",
        "last abandoned stamped / last re-run started after the kill (s)",
        f"{abandoned_after:.2f} / {rerun_after:.2f}",
        f"<= lease + 2 = {LEASE + 2:g}",
    )
    figure("S4", "test saw all settled after (s)", round(seen_in, 2), "")
    assert in_flight == 100
    assert sum(1 for r in records if r[0].startswith("keep") and r[1] == "abandoned") == 50
    assert sum(1 for r in records if r[0].startswith("again") and r[1] == "succeeded" and r[2] == 2) == 50
    assert keep_starts == [1] and keep_states == [("abandoned", 1)]
    assert again_starts == [2] and again_states == [("succeeded", 2)]
    assert rerun_nodes and "node2" not in rerun_nodes
    assert max(abandoned_after, rerun_after) <= LEASE + 2
    for node in [*survivors, back]:
        assert node.alive
        assert await node.stop() == 0


# -- S13 (multi-node) ----------------------------------------------------------------------------

S13_GRACE, S13_SHORT, S13_LONG = 15.0, 5.0, 60.0
TICKERS, TICKER_SECONDS = 30, 40


async def test_s13_sigterm_a_node_with_100_running_runs(
    cluster: Cluster, figure: FigureRecorder, tmp_path: Path
) -> None:
    """node2 runs 100 (40 of 5 s, 60 of 60 s), SIGTERM with grace 15 s; node0/node1 keep every ticker on time."""
    others = [await cluster.start(f"node{i}", max_sleep=POLL, env={"NODE_CLAIM": "0"}) for i in range(2)]
    log = tmp_path / "node2.log"
    with log.open("w") as sink:
        victim = await cluster.start("node2", max_sleep=POLL, env={"NODE_GRACE": f"{S13_GRACE:g}"}, stderr=sink)
    jobs = {f"short{i:02d}": {"kwargs": {"hold": S13_SHORT}} for i in range(40)}
    jobs |= {f"long{i:02d}": {"kwargs": {"hold": S13_LONG}} for i in range(60)}
    when = await one_shots(cluster.url, jobs)

    async def all_started() -> bool:
        return await ledger_count(cluster, "node = 'node2'") >= 100

    await until(all_started, (when - datetime.now(UTC)).total_seconds() + 10, "node2 to start the 100 runs")
    runs = runs_of(cluster.url)
    running = int(await cluster.db.fetchval(f"SELECT count(*) FROM {runs} WHERE node = 'node2' AND state = 'running'"))
    for node in others:
        assert (await node.ask("claim on", "claim"))["claim"] is True
    first, fires = await add_schedules(cluster.url, TICKERS, TICKER_SECONDS, prefix="t", kwargs={"hold": 0.1})
    await asyncio.sleep((first + timedelta(seconds=4.5) - datetime.now(UTC)).total_seconds())
    ticking = await ledger_count(cluster, "schedule_id LIKE 't%' AND node = 'node2'")
    loop = asyncio.get_running_loop()
    victim.proc.send_signal(signal.SIGTERM)
    sent_at, sent_mono = datetime.now(UTC), loop.time()
    handled_at = datetime.fromisoformat((await victim.expect("shutdown", timeout=5))["at"])
    async with asyncio.timeout(S13_GRACE + 10):
        code = await victim.proc.wait()
    exit_after = loop.time() - sent_mono
    exited_at = datetime.now(UTC)
    await victim.stop(5)
    held = int(
        await cluster.db.fetchval(
            f"SELECT count(*) FROM \"{split_url(cluster.url)[1]}\".schedules WHERE acquired_by = 'node2'"
        )
    )
    registered = int(
        await cluster.db.fetchval(f"SELECT count(*) FROM \"{split_url(cluster.url)[1]}\".nodes WHERE node_id = 'node2'")
    )
    expected = {(f"t{i:03d}", t) for i in range(TICKERS) for t in fires}
    await wait_settled(cluster, runs, expected, (fires[-1] - datetime.now(UTC)).total_seconds() + 20)

    after_sent = await ledger_count(cluster, "node = 'node2' AND at > $1", sent_at)
    after_handled = await ledger_count(cluster, "node = 'node2' AND at > $1", handled_at)
    states = {
        (r[0], r[1]): r[2]
        for r in await cluster.db.fetch(
            f"SELECT left(schedule_id, 1), state, count(*) FROM {runs} WHERE schedule_id NOT LIKE 't%' GROUP BY 1, 2"
        )
    }
    rows = await ledger_rows(cluster)
    tick_rows = [r for r in rows if r[0].startswith("t")]
    after = [r for r in tick_rows if r[1] >= sent_at]
    late_after = max((r[4] for r in after), default=0.0)
    window = [r for r in after if r[1] <= exited_at + timedelta(seconds=1)]
    late_window = max((r[4] for r in window), default=0.0)
    missing = expected - {(r[0], r[1]) for r in tick_rows}
    duplicates = await cluster.duplicates()
    record_of = {
        (r[0], r[1]): f"{r[2]} on {r[3]} ({(r[4] or '')[:70]}; ended {(r[5] - sent_at).total_seconds():+.2f}s)"
        for r in await cluster.db.fetch(
            f"SELECT schedule_id, fire_time, state, node, reason, ended_at FROM {runs} WHERE schedule_id LIKE 't%'"
        )
    }
    why: dict[str, int] = {}
    for key in missing:
        label = f"fire {(key[1] - sent_at).total_seconds():+.1f}s from SIGTERM: {record_of.get(key, 'no record')}"
        label = label.split("; ended")[0] + ")"
        why[label] = why.get(label, 0) + 1
    print(f"\nS13: ticker fires not started: {why}")  # noqa: T201 - shown with -s
    print(  # noqa: T201 - shown with -s
        f"\nS13: node2 had {running} running (+ {ticking} ticker starts before); SIGTERM handled"
        f" {(handled_at - sent_at).total_seconds():.3f}s after it was sent; exit {code} after {exit_after:.2f}s;"
        f" node2 starts after SIGTERM sent {after_sent}, after handled {after_handled}; records {states};"
        f" leases held by node2 after exit {held}, registered {registered}; ticker fires due after SIGTERM"
        f" {len(after)} (until exit + 1 s: {len(window)}), max lateness {late_after:.3f}s"
        f" (until exit + 1 s: {late_window:.3f}s); missing {len(missing)}; duplicates {len(duplicates)}"
    )
    figure("S13", "runs running on node2 at SIGTERM", running, "100")
    figure("S13", "node2 starts after SIGTERM handled / sent", f"{after_handled} / {after_sent}", "0")
    figure(
        "S13",
        "short succeeded / long cancelled",
        f"{states.get(('s', 'succeeded'), 0)} / {states.get(('l', 'cancelled'), 0)}",
        "40 / 60",
    )
    figure("S13", "run records (first letter, state): count", str(states), "")
    figure("S13", "exit code; SIGTERM to exit (s)", f"{code}; {exit_after:.2f}", f"0; <= grace + 2 = {S13_GRACE + 2:g}")
    figure("S13", "leases held / node row left by node2 after exit", f"{held} / {registered}", "0 / 0")
    figure(
        "S13",
        "ticker fires due SIGTERM..exit+1s: count, max lateness on node0/1 (s)",
        f"{len(window)}, {late_window:.3f}",
        "<= 1 s",
    )
    figure(
        "S13",
        "ticker fires due after SIGTERM: max lateness; missing; duplicates",
        f"{late_after:.3f}; {len(missing)}; {len(duplicates)}",
        "<= 1 s; 0; 0",
    )
    assert running == 100
    assert after_handled == 0
    assert states == {("s", "succeeded"): 40, ("l", "cancelled"): 60}
    assert code == 0 and exit_after <= S13_GRACE + 2
    assert held == 0 and registered == 0
    assert window and all(r[2] != "node2" for r in after)
    assert late_window <= 1.0 and late_after <= 1.0
    assert missing == set() and duplicates == []
    for node in others:
        assert await node.stop() == 0


# -- S14 (cluster part) --------------------------------------------------------------------------

S14_SECONDS, S14_HOLD = 60, 3.5


def peak(spans: list[tuple[datetime, datetime]]) -> int:
    """The most intervals ``[start, end)`` open at once."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "cancel_other"])
async def test_s14_max_instances_1_across_3_nodes(cluster: Cluster, figure: FigureRecorder, overlap: str) -> None:
    """A 1 s schedule whose run takes 3.5 s, for 60 s, on 3 nodes: never two runs at once cluster-wide."""
    nodes = [await cluster.start(f"node{i}", max_sleep=POLL) for i in range(3)]
    first = datetime.fromtimestamp(math.ceil(time.time()) + 3, UTC)
    end = first + timedelta(seconds=S14_SECONDS)
    admin = Scheduler(store=cluster.url, node_id="admin", timezone="UTC")
    try:
        await admin.add_job(
            "tests.cluster._tasks:span",
            "interval",
            seconds=1,
            start_date=first,
            end_date=end,
            id="o",
            max_instances=1,
            overlap=overlap,
            kwargs={"hold": S14_HOLD},
        )
    finally:
        await admin.shutdown()
    runs = runs_of(cluster.url)

    async def done() -> bool:
        busy = await cluster.db.fetchval(f"SELECT count(*) FROM {runs} WHERE state IN ('queued', 'running')")
        open_spans = await ledger_count(cluster, "ended IS NULL")
        return datetime.now(UTC) > end and int(busy) == 0 and open_spans == 0

    await until(done, (end - datetime.now(UTC)).total_seconds() + 2 * S14_HOLD + 15, "every run of o to end", every=0.5)
    spans = await cluster.query("SELECT at, ended, node FROM {ledger} ORDER BY at")
    most = peak([(r[0], r[1]) for r in spans])
    overlaps = [
        (a[2], b[2], round((a[1] - b[0]).total_seconds(), 2)) for a, b in itertools.pairwise(spans) if b[0] < a[1]
    ]
    cross = sum(1 for a, b, _ in overlaps if a != b)
    states = dict(await cluster.db.fetch(f"SELECT state, count(*) FROM {runs} GROUP BY 1 ORDER BY 1"))
    per_node = {n: sum(1 for r in spans if r[2] == n) for n in sorted({r[2] for r in spans})}
    print(  # noqa: T201 - shown with -s
        f"\nS14 {overlap}: {len(spans)} runs {per_node}; peak concurrent {most}; overlapping successive runs"
        f" {len(overlaps)} ({cross} across nodes) e.g. {overlaps[:4]}; records {states}"
    )
    figure("S14", f"{overlap}: most runs going at once cluster-wide (ledger start/end)", most, "<= 1")
    figure(
        "S14",
        f"{overlap}: runs per node; overlapping pairs (across nodes)",
        f"{per_node}; {len(overlaps)} ({cross})",
        "",
    )
    figure("S14", f"{overlap}: run records by state", str(states), "")
    for node in nodes:
        assert node.alive
        assert await node.stop() == 0
    assert len(spans) >= S14_SECONDS / (S14_HOLD + 1) - 2
    assert most <= 1, f"{overlap}: {most} runs at once across the cluster; overlaps {overlaps[:6]}"
