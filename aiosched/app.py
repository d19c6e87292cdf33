"""From a validated Config to a configured Scheduler with the config's tasks installed."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from .config import Config, TaskConfig
from .exceptions import ScheduleNotFound
from .scheduler import Scheduler
from .triggers import build_trigger

logger = logging.getLogger("aiosched")

# Trigger arguments whose default aiosched pins when building (so reloads keep the phase).
_PINNED = {"interval": {"start_date"}, "calendarinterval": {"start_date"}, "date": {"run_date"}}


def build_scheduler(config: Config, **overrides: Any) -> Scheduler:
    """A Scheduler with the config's zone, executors, defaults, store and node id."""
    options: dict[str, Any] = {
        "timezone": config.timezone,
        "executors": dict(config.executors),
        "job_defaults": dict(config.job_defaults),
        "store": config.store,
        "node_id": config.node_id,
    }
    options.update(overrides)
    return Scheduler(**options)


async def install_tasks(scheduler: Scheduler, config: Config) -> None:
    """Make the scheduler's schedules match the config's tasks.

    - A task new to the store is added.
    - A task already stored (from an earlier start) gets the config's task, arguments,
      trigger and policy, but keeps its runtime state: paused stays paused (``paused: true``
      in the config always pauses), and its next fire time is kept when the trigger did
      not change, so a restart neither skips nor repeats a fire.
    - A stored schedule that came from the config and is no longer in it is removed.
      Schedules added at runtime (through the API) are kept.
    """
    stored = {job.id: job for job in await scheduler.get_jobs()}
    for task in config.tasks:
        old = stored.pop(task.id, None)
        new = await scheduler.add_job(
            task.task_ref,
            task.trigger,
            id=task.id,
            name=task.name,
            kwargs=dict(task.kwargs),
            replace_existing=True,
            paused=task.paused or bool(old and old.paused),
            source="config",
            **{"timezone": task.timezone, **task.args},
            **task.options,
        )
        if old is not None and _same_trigger(old.trigger.spec, task) and old.next_fire_time != new.next_fire_time:
            await scheduler.modify_job(task.id, next_fire_time=old.next_fire_time)
    for job in stored.values():
        if job.source == "config":
            logger.info("schedule %s is no longer in the config: removed", job.id)
            with contextlib.suppress(ScheduleNotFound):  # removed meanwhile through the API
                await scheduler.remove_job(job.id)


def _same_trigger(spec: Any, task: TaskConfig) -> bool:
    if spec is None or spec.type != task.trigger:
        return False
    fresh = build_trigger(task.trigger, {"timezone": task.timezone, **task.args}, timezone=spec.timezone).spec
    assert fresh is not None
    pinned = _PINNED.get(task.trigger, set()) - set(task.args)
    old_args = {k: v for k, v in spec.args.items() if k not in pinned}
    new_args = {k: v for k, v in fresh.args.items() if k not in pinned}
    return old_args == new_args and spec.timezone == fresh.timezone
