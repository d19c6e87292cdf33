"""Per-task run statistics kept as plain numbers, exposed as Prometheus families on collect.

The hot path (one or two events per fire) only bumps ints and floats in a per-task object;
the label handling, locking and formatting of prometheus_client's metric objects happens
once per scrape instead of once per fire. Updates come from the event loop's thread;
:meth:`RunStats.collect` may run in another thread (a scrape served by prometheus_client's
own HTTP server) and then sees a snapshot that is at most a few updates old.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .models import RunRecord, RunState

#: ``status`` label values of ``scheduler_task_executions_total`` by final run state.
STATUSES: Final = {
    RunState.SUCCEEDED: "success",
    RunState.FAILED: "failure",
    RunState.TIMED_OUT: "timeout",
    RunState.CANCELLED: "cancelled",
    RunState.MISSED: "missed",
    RunState.SKIPPED: "skipped",
    RunState.ABANDONED: "abandoned",
}
#: ``reason`` label values of ``scheduler_task_skipped_total``.
SKIP_REASONS: Final = ("max_instances", "coalesced", "rate_limit", "other")
OTHER_TASKS: Final = "_other"
DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
LATENESS_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_STATUS_INDEX: Final = {state: i for i, state in enumerate(STATUSES)}
_STATUS_NAMES: Final = tuple(STATUSES.values())
_SKIPPED: Final = _STATUS_INDEX[RunState.SKIPPED]
_MISSED: Final = _STATUS_INDEX[RunState.MISSED]
_SUCCEEDED: Final = _STATUS_INDEX[RunState.SUCCEEDED]


def skip_reason(reason: str | None) -> str:
    """Map a skipped run's free-text reason to one of :data:`SKIP_REASONS`."""
    text = (reason or "").lower()
    if text.startswith(("max_instances", "buffer full")):
        return "max_instances"
    if text.startswith("coalesced"):
        return "coalesced"
    if text.startswith("rate limit"):
        return "rate_limit"
    return "other"


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


_DURATION_LE: Final = tuple(_le(b) for b in (*DURATION_BUCKETS, float("inf")))
_LATENESS_LE: Final = tuple(_le(b) for b in (*LATENESS_BUCKETS, float("inf")))


class _Histogram:
    __slots__ = ("bounds", "counts", "labels", "sum")

    def __init__(self, bounds: Sequence[float], labels: Sequence[str]) -> None:
        self.bounds = bounds
        self.labels = labels  # the ``le`` values, +Inf last
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for label, count in zip(self.labels, list(self.counts), strict=True):
            total += count
            out.append((label, float(total)))
        return out


class TaskStats:
    """The numbers of one ``task_name``."""

    __slots__ = ("duration", "executions", "last_success", "lateness", "misfires", "retries", "skipped")

    def __init__(self) -> None:
        self.executions = [0] * len(STATUSES)
        self.skipped = [0] * len(SKIP_REASONS)
        self.retries = 0
        self.misfires = 0
        self.duration = _Histogram(DURATION_BUCKETS, _DURATION_LE)
        self.lateness = _Histogram(LATENESS_BUCKETS, _LATENESS_LE)
        self.last_success = 0.0  # 0: no success seen; the series is left out then (0 would read "1970")

    def final(self, run: RunRecord) -> None:
        index = _STATUS_INDEX.get(run.state)
        if index is None:  # not a final state (never emitted so)
            return
        self.executions[index] += 1
        started, ended = run.started_at, run.ended_at
        if started is not None:  # it ran: its lateness is start minus fire time
            lateness = run.lateness or 0.0
            self.lateness.observe(lateness if lateness > 0 else 0.0)
            if ended is not None:
                self.duration.observe((ended - started).total_seconds())
        if index == _SUCCEEDED:
            if ended is not None:
                stamp = ended.timestamp()
                if stamp > self.last_success:
                    self.last_success = stamp
        elif index == _MISSED:
            self.misfires += 1
        elif index == _SKIPPED:
            self.skipped[SKIP_REASONS.index(skip_reason(run.reason))] += 1


class RunStats(Collector):
    """A Prometheus collector over :class:`TaskStats` by task name (at most ``max_tasks`` names)."""

    def __init__(self, max_tasks: int, *, active: Callable[[], Mapping[str, int]]) -> None:
        self.tasks: dict[str, TaskStats] = {}
        self._max_tasks = max_tasks
        self._active = active  # runs in flight by schedule id, read at scrape time

    def task(self, name: str) -> TaskStats:
        """The stats of ``name`` (those of ``_other`` once ``max_tasks`` names are in use)."""
        stats = self.tasks.get(name)
        if stats is None:
            if len(self.tasks) >= self._max_tasks:
                name = OTHER_TASKS
                stats = self.tasks.get(name)
            if stats is None:
                stats = self.tasks[name] = TaskStats()
        return stats

    def describe(self) -> Iterator[Metric]:
        """The families (without samples), so a registry can refuse duplicate names."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        """The families with one sample set per task name."""
        families = _families()
        executions, duration, active, lateness, retries, misfires, skipped, last_success = families
        in_flight: dict[str, int] = {}
        for name, count in self._active().items():
            key = name if name in self.tasks or len(self.tasks) < self._max_tasks else OTHER_TASKS
            in_flight[key] = in_flight.get(key, 0) + count
        for name, stats in list(self.tasks.items()):
            task = (name,)
            for status, count in zip(_STATUS_NAMES, list(stats.executions), strict=True):
                executions.add_metric((name, status), count)
            for reason, count in zip(SKIP_REASONS, list(stats.skipped), strict=True):
                skipped.add_metric((name, reason), count)
            duration.add_metric(task, stats.duration.buckets(), stats.duration.sum)
            lateness.add_metric(task, stats.lateness.buckets(), stats.lateness.sum)
            active.add_metric(task, in_flight.get(name, 0))
            retries.add_metric(task, stats.retries)
            misfires.add_metric(task, stats.misfires)
            if stats.last_success:
                last_success.add_metric(task, stats.last_success)
        return iter(families)


_Families = tuple[
    CounterMetricFamily,
    HistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
]


def _families() -> _Families:
    """Fresh, empty families of the per-run metrics (one set per collect)."""
    task, status = ["task_name"], ["task_name", "status"]
    return (
        CounterMetricFamily("scheduler_task_executions", "Runs by final outcome.", labels=status),
        HistogramMetricFamily("scheduler_task_duration_seconds", "Run duration, first start to end.", labels=task),
        GaugeMetricFamily("scheduler_active_tasks", "Runs in flight on this node.", labels=task),
        HistogramMetricFamily("scheduler_task_lateness_seconds", "Start time minus due (fire) time.", labels=task),
        CounterMetricFamily("scheduler_task_retries", "Attempts that failed and were retried.", labels=task),
        CounterMetricFamily("scheduler_task_misfires", "Fires not run: later than the grace time.", labels=task),
        CounterMetricFamily("scheduler_task_skipped", "Fires not run, by reason.", labels=["task_name", "reason"]),
        GaugeMetricFamily(
            "scheduler_task_last_success_timestamp_seconds",
            "Unix time of the end of the last successful run.",
            labels=task,
        ),
    )
