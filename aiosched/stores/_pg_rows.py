"""Rows of the PostgreSQL store: schedules decoded once per content, run history queries, safe names."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..models import RunState, Schedule
from ._codec import schedule_from_values
from ._pg_sql import Sql

logger = logging.getLogger("aiosched.stores.postgres")

_CONTENT = (1, 2, 3, 4, 5, 6, 7, 9, 10)  # every schedule column but id and next_fire_time


def _same(value: Any) -> Any:
    return value


class Decoder:
    """Turns schedule rows into Schedules, decoding each content once (JSON, task import, trigger).

    A row is re-decoded only when one of its columns other than ``next_fire_time`` changed,
    so claiming the same schedules every second costs a tuple comparison, not a decode.

    Attributes:
        invalid: ``{id: reason}`` of rows that cannot be loaded (they never fire).
        skip: the invalid ids the claim query leaves alone until the next maintenance step.
    """

    def __init__(self, store_name: str) -> None:
        self._name = store_name
        self._cache: dict[str, tuple[tuple[Any, ...], Schedule]] = {}
        self.invalid: dict[str, str] = {}
        self.skip: dict[str, str] = {}

    def __call__(self, row: Sequence[Any]) -> Schedule | None:
        """The schedule of a row (``SCHEDULE_COLUMNS`` first); None if it cannot load (logged once)."""
        sid = row[0]
        raw = tuple(row[i] for i in _CONTENT)
        cached = self._cache.get(sid)
        if cached is not None and cached[0] == raw:
            schedule = cached[1]
        else:
            try:
                schedule = schedule_from_values(tuple(row)[:11], _same)
            except Exception as exc:  # an isolation boundary: one bad row must not stop the others
                reason = f"{type(exc).__name__}: {exc}"
                if self.invalid.get(sid) != reason:
                    logger.error("%s: schedule %r cannot be loaded, it will not fire: %s", self._name, sid, reason)
                self.invalid[sid] = self.skip[sid] = reason
                return None
            self._cache[sid] = (raw, schedule)
            self.invalid.pop(sid, None)
        nft = row[8]
        return schedule if schedule.next_fire_time == nft else replace(schedule, next_fire_time=nft)

    def forget(self, schedule_id: str) -> None:
        """Drop what is known of a schedule (replaced or removed)."""
        self._cache.pop(schedule_id, None)
        self.invalid.pop(schedule_id, None)
        self.skip.pop(schedule_id, None)


def runs_query(
    sql: Sql,
    schedule_id: str | None,
    states: Collection[RunState] | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[str, list[Any]]:
    """The history query (newest fire time first) and its parameters; LIMIT and OFFSET come last."""
    where: list[str] = []
    params: list[Any] = []
    wanted = None if states is None else sorted({RunState(s).value for s in states})
    for clause, value in (
        ("schedule_id = ${}", schedule_id),
        ("fire_time >= ${}", since),
        ("fire_time < ${}", until),
        ("state = ANY(${}::text[])", wanted),
    ):
        if value is not None:
            params.append(value)
            where.append(clause.format(len(params)))
    text = f"SELECT {sql.run_cols} FROM {sql.schema}.runs"
    text += f" WHERE {' AND '.join(where)}" if where else ""
    text += f" ORDER BY fire_time DESC, schedule_id DESC LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}"
    return text, params


def without_password(url: str) -> str:
    """The URL for logs: ``postgresql://user@host/db`` (a password is never shown)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}"))
