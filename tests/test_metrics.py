"""Prometheus metrics fed by a real scheduler's runs, scraped over HTTP; the loop stall detector."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aiosched import FakeClock, RetryableError, RunRecord, RunState, Scheduler
from aiosched.metrics import _SEED_PAGE, SKIP_REASONS, SchedulerMetrics, skip_reason
from aiosched.web import create_app

from .conftest import SchedulerFactory

counts: dict[str, int] = {}
gate = asyncio.Event()


async def flaky() -> str:
    """Succeeds three times, then fails."""
    counts["flaky"] = counts.get("flaky", 0) + 1
    if counts["flaky"] > 3:
        raise ValueError("fourth time unlucky")
    return "ok"


async def retried() -> None:
    counts["retried"] = counts.get("retried", 0) + 1
    if counts["retried"] == 1:
        raise RetryableError("once more")


async def slow() -> None:
    await asyncio.Event().wait()


started_blocking: list[float] = []


async def blocker() -> None:
    started_blocking.append(time.monotonic())
    time.sleep(0.6)  # blocks the loop on purpose (RELIABILITY S3)


async def quick() -> None:
    return None


@pytest.fixture(autouse=True)
def _reset() -> None:
    counts.clear()
    started_blocking.clear()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
async def scrape(aiohttp_client: Any) -> AsyncIterator[Callable[[Scheduler, SchedulerMetrics], Any]]:
    """Serve the scheduler's API and return a coroutine that scrapes /metrics into samples."""
    clients: dict[int, Any] = {}

    async def do(s: Scheduler, metrics: SchedulerMetrics) -> Samples:
        if id(s) not in clients:
            clients[id(s)] = await aiohttp_client(create_app(s, metrics=metrics))
        response = await clients[id(s)].get("/metrics")
        assert response.status == 200
        return parse(await response.text())

    yield do


async def test_runs_are_counted_with_their_labels(
    make_scheduler: SchedulerFactory, clock: FakeClock, scrape: Any
) -> None:
    s, rec = await make_scheduler(clock=clock, node_id="node-1")
    metrics = SchedulerMetrics(s)
    await s.add_job(flaky, "interval", seconds=1, id="flaky")
    for n in range(1, 5):
        clock.advance(1)
        await rec.wait_runs(n, "flaky")
    samples = await scrape(s, metrics)
    assert value(samples, "scheduler_task_executions_total", task_name="flaky", status="success") == 3
    assert value(samples, "scheduler_task_executions_total", task_name="flaky", status="failure") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="flaky", status="timeout") == 0
    assert value(samples, "scheduler_task_duration_seconds_count", task_name="flaky") == 4
    assert value(samples, "scheduler_task_lateness_seconds_count", task_name="flaky") == 4
    assert value(samples, "scheduler_task_lateness_seconds_sum", task_name="flaky") == 0  # fake clock: on time
    assert value(samples, "scheduler_active_tasks", task_name="flaky") == 0
    success = [r for r in rec.final_runs("flaky") if r.state == "succeeded"][-1]
    assert value(samples, "scheduler_task_last_success_timestamp_seconds", task_name="flaky") == pytest.approx(
        success.ended_at.timestamp()
    )
    job = await s.get_job("flaky")
    assert job.next_fire_time is not None
    assert value(samples, "scheduler_task_next_fire_timestamp_seconds", task_name="flaky") == pytest.approx(
        job.next_fire_time.timestamp()
    )
    from aiosched import __version__

    info = {"version": __version__, "timezone": "UTC", "jobs_count": "1", "store": "memory", "node_id": "node-1"}
    assert value(samples, "scheduler_info", **info) == 1
    assert value(samples, "scheduler_state", scheduler_state="running") == 1
    assert value(samples, "scheduler_state", scheduler_state="stopped") == 0
    await s.pause_job("flaky")
    samples = await scrape(s, metrics)
    assert value(samples, "scheduler_task_next_fire_timestamp_seconds", task_name="flaky") is None


async def test_retries_misfires_skips_timeouts_and_cancels(
    make_scheduler: SchedulerFactory, clock: FakeClock, scrape: Any
) -> None:
    s, rec = await make_scheduler(clock=clock)
    metrics = SchedulerMetrics(s)
    await s.add_job(retried, "date", run_date=clock.now(), id="retried", max_attempts=2)
    await rec.wait_runs(1, "retried")
    # max_instances 1: while the first run hangs, the next two fires are skipped
    await s.add_job(slow, "interval", seconds=1, id="busy")
    for n in range(3):
        clock.advance(1)
        await rec.wait(lambda n=n: len(rec.of("submitted", "busy")) == 1 and len(rec.final_runs("busy")) == n)
    await s.remove_job("busy")  # its run goes on
    # three fire times due at once: grace 1.5 s misses the first; catch-up "latest" coalesces the second
    await s.add_job(quick, "interval", seconds=1, id="late", misfire_grace_time=1.5, catchup="latest")
    clock.advance(3)
    await rec.wait_runs(3, "late")
    await s.add_job(slow, "cron", hour=9, id="limited", timeout=0.05)
    await s.run_job("limited", wait=True)
    await s.add_job(slow, "cron", hour=9, id="cancelled")
    await s.run_job("cancelled")
    await rec.wait(lambda: bool(rec.of("submitted", "cancelled")))
    assert await s.cancel_job_run("cancelled") == 1
    samples = await scrape(s, metrics)
    assert value(samples, "scheduler_task_retries_total", task_name="retried") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="retried", status="success") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="retried", status="failure") == 0
    assert value(samples, "scheduler_task_skipped_total", task_name="busy", reason="max_instances") == 2
    assert value(samples, "scheduler_task_executions_total", task_name="busy", status="skipped") == 2
    assert value(samples, "scheduler_active_tasks", task_name="busy") == 1
    assert value(samples, "scheduler_task_misfires_total", task_name="late") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="late", status="missed") == 1
    assert value(samples, "scheduler_task_skipped_total", task_name="late", reason="coalesced") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="late", status="skipped") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="late", status="success") == 1
    assert value(samples, "scheduler_task_lateness_seconds_count", task_name="late") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="limited", status="timeout") == 1
    assert value(samples, "scheduler_task_executions_total", task_name="cancelled", status="cancelled") == 1
    assert value(samples, "scheduler_active_tasks", task_name="cancelled") == 0


def test_skip_reasons_are_a_fixed_vocabulary() -> None:
    assert skip_reason("max_instances reached (1 running)") == "max_instances"
    assert skip_reason("buffer full (1 running)") == "max_instances"
    assert skip_reason("coalesced into the run of 2030-01-01T00:00:00+00:00 (catchup: latest)") == "coalesced"
    assert skip_reason("rate limit: 5 calls per 60s") == "rate_limit"
    assert skip_reason("the task said: api key abc123 expired") == "other"
    assert skip_reason(None) == "other"
    assert set(SKIP_REASONS) == {"max_instances", "coalesced", "rate_limit", "other"}


async def test_registries_are_private_unless_given(make_scheduler: SchedulerFactory) -> None:
    s1, _ = await make_scheduler()
    s2, _ = await make_scheduler()
    m1, m2 = SchedulerMetrics(s1), SchedulerMetrics(s2)  # would raise "Duplicated timeseries" if shared
    assert m1.registry is not m2.registry
    mine = CollectorRegistry()
    m3 = SchedulerMetrics(s1, registry=mine)
    assert m3.registry is mine and mine.get_sample_value("scheduler_loop_stalls_total") == 0
    await m1.close()
    await m3.close()


async def test_task_labels_are_capped(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    metrics = SchedulerMetrics(s, max_tasks=2)
    for name in ("one", "two", "three", "four"):
        await s.run_job((await s.add_job(quick, "cron", hour=9, id=name)).id, wait=True)
    assert list(metrics.task_names()) == ["one", "two", "_other"]
    get = metrics.registry.get_sample_value
    assert get("scheduler_task_executions_total", {"task_name": "_other", "status": "success"}) == 2


async def test_last_success_survives_a_restart_through_the_history(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    await s.add_job(quick, "cron", hour=9, id="daily_report")
    record = await s.run_job("daily_report", wait=True)
    fresh = SchedulerMetrics(s)  # as after a restart: no event seen yet
    await fresh.refresh()
    assert record.ended_at is not None
    assert fresh.registry.get_sample_value(
        "scheduler_task_last_success_timestamp_seconds", {"task_name": "daily_report"}
    ) == pytest.approx(record.ended_at.timestamp())


async def test_last_success_seeding_pages_through_a_long_history(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    await s.add_job(quick, "cron", hour=9, id="rare")
    await s.add_job(quick, "cron", hour=9, id="busy")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    rare_end = base + timedelta(seconds=1)
    await s.store.add_run(RunRecord(schedule_id="rare", fire_time=base, state=RunState.SUCCEEDED, ended_at=rare_end))
    for i in range(1, 2 * _SEED_PAGE + 1):  # newer successes of another schedule: "rare" is on the third page
        at = base + timedelta(minutes=i)
        await s.store.add_run(RunRecord(schedule_id="busy", fire_time=at, state=RunState.SUCCEEDED, ended_at=at))
    fresh = SchedulerMetrics(s)
    await fresh.refresh()
    get = fresh.registry.get_sample_value
    assert get("scheduler_task_last_success_timestamp_seconds", {"task_name": "rare"}) == rare_end.timestamp()
    busy_end = base + timedelta(minutes=2 * _SEED_PAGE)
    assert get("scheduler_task_last_success_timestamp_seconds", {"task_name": "busy"}) == busy_end.timestamp()


async def test_stall_is_reported_with_the_schedule_within_a_second(
    make_scheduler: SchedulerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """RELIABILITY S3 at small scale: a task blocks the loop for 0.6 s with time.sleep."""
    s, rec = await make_scheduler()
    await s.add_job(blocker, "cron", hour=9, id="blocker", name="Blocking report")
    await s.add_job(quick, "cron", hour=9, id="after")
    caplog.set_level(logging.WARNING, logger="aiosched.watchdog")
    async with SchedulerMetrics(s) as metrics:
        await s.run_job("blocker", wait=True)
        assert metrics.stalls, "no stall reported"
        stall = metrics.stalls[0]
        assert stall.schedule_id == "blocker" and stall.schedule_name == "Blocking report"
        assert 0.25 < stall.blocked_for < 1.0
        assert stall.detected_at - started_blocking[0] < 1.0
        assert "time.sleep(0.6)" in stall.stack and "in blocker" in stall.stack
        assert metrics.registry.get_sample_value("scheduler_loop_stalls_total") == 1
        warning = next(r for r in caplog.records if "blocked" in r.getMessage())
        assert "schedule blocker (Blocking report)" in warning.getMessage()
        assert "time.sleep(0.6)" in warning.getMessage()
        # the scheduler keeps going
        assert (await s.run_job("after", wait=True)).state == "succeeded"
        lag = metrics.loop_lag_seconds
        assert lag is not None and lag >= 0
    assert rec.states("blocker") == ["succeeded"]
    assert metrics.loop_lag_seconds is None  # stopped


async def test_stall_outside_any_run_is_still_reported(
    make_scheduler: SchedulerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s, _ = await make_scheduler()
    reported = threading.Event()
    async with SchedulerMetrics(s, stall_threshold=0.1, on_stall=lambda _: reported.set()) as metrics:
        time.sleep(0.4)  # blocks the loop, outside any run
        assert await asyncio.to_thread(reported.wait, 5.0)
        assert metrics.stalls[0].schedule_id is None and "test_stall_outside_any_run" in metrics.stalls[0].stack
    assert "no aiosched run on its stack" in caplog.text
