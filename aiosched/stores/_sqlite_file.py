"""The SQLite file behind :class:`~aiosched.stores.sqlite.SQLiteStore`: blocking, one thread.

Every method runs on the store's single worker thread (never on the event loop) and each
write is one transaction. Besides the connection it keeps the bookkeeping retention needs
so pruning never scans: how many finished runs the file holds and which runs are in flight.

Durability: WAL with ``synchronous=NORMAL`` (the default) makes a committed transaction
survive the process being killed at any point (SIGKILL, OOM); after a power loss or an OS
crash the last transactions may be lost but the file stays consistent. ``FULL`` also
survives power loss, at the price of an fsync per commit.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from ..exceptions import StoreError
from ..models import RunRecord, RunState, Schedule
from ._codec import RUN_COLUMNS, SCHEDULE_COLUMNS, from_iso, iso, run_from_values, run_values, schedule_from_values
from ._lock import FileLock
from .migrations.sqlite import STEPS

logger = logging.getLogger("aiosched.stores.sqlite")

RunKey = tuple[str, str]  # (schedule_id, fire_time as stored)

ABANDONED = "the scheduler stopped while the run was in flight"
RERUN = "re-run: the scheduler stopped while the run was in flight"
_FINISHED = "state NOT IN ('queued', 'running')"  # the exact text of the runs_finished index
_IN_FLIGHT = "state IN ('queued', 'running')"
_OPEN = frozenset({RunState.QUEUED.value, RunState.RUNNING.value})
_RUN_COLS = ", ".join(RUN_COLUMNS)
_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLS}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) ON CONFLICT DO NOTHING"
_SET_RUN = ", ".join(f"{c} = ?" for c in RUN_COLUMNS[2:])
_UPDATE_RUN = f"UPDATE runs SET {_SET_RUN} WHERE schedule_id = ? AND fire_time = ?"  # values: v[2:] + v[:2]
_SCHEDULE_COLS = ", ".join(SCHEDULE_COLUMNS)
_PUT_SCHEDULE = f"INSERT OR REPLACE INTO schedules ({_SCHEDULE_COLS}) VALUES ({', '.join('?' * len(SCHEDULE_COLUMNS))})"
_OLDEST_FINISHED = f"SELECT rowid FROM runs WHERE {_FINISHED} ORDER BY fire_time LIMIT ?"


class SQLiteFile:
    """One SQLite database file, its lock, and the retention bookkeeping.

    Attributes:
        stats: ``transactions`` committed and ``runs_pruned`` so far (read from any thread).
    """

    def __init__(self, path: str, *, history_limit: int, history_max_age: float | None, synchronous: str) -> None:
        self.path = path
        self._limit = history_limit
        self._max_age = None if history_max_age is None else timedelta(seconds=history_max_age)
        self._synchronous = synchronous
        self._lock = FileLock(path + ".lock")
        self._conn: sqlite3.Connection | None = None
        self._finished = 0  # finished runs in the file
        self._in_flight: set[RunKey] = set()  # runs in the file that are queued or running
        self._orphans: set[RunKey] = set()  # those left by a previous process, until recover()
        self.stats = {"transactions": 0, "runs_pruned": 0}

    # -- opening -------------------------------------------------------------------

    def open(self, node_id: str) -> tuple[list[Schedule], dict[str, str]]:
        """Lock, check the schema (create or migrate it), and load the schedules.

        Returns the schedules that load and ``{id: reason}`` for those that do not.
        Raises StoreError and leaves nothing open (and a file it cannot use untouched).
        """
        what = f"the SQLite store {self.path!r}"
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot open {what}: the directory {directory!r} does not exist")
        self._lock.acquire(node_id=node_id, what=what)
        try:
            self._conn = self._connect(what)
            version = self._version(what)
            if version == len(STEPS):  # read everything before the first write: a damaged file stays as it is
                self._count_runs()
                loaded = self._load()
            self._prepare(what, version)
            if version != len(STEPS):
                self._count_runs()
                loaded = self._load()
            return loaded
        except sqlite3.Error as exc:  # e.g. damaged pages behind a valid header
            self.close()
            raise StoreError(f"cannot open {what}: {exc}; aiosched leaves the file as it is") from exc
        except BaseException:
            self.close()
            raise

    def _connect(self, what: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=64)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {what}: {exc} (is it a writable file?)") from exc
        try:
            # A read first: a file that is not a database fails here, before anything is written.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot open {what}: {exc}; it is not a usable SQLite database. aiosched leaves it as it is: "
                "restore it from a backup, or move it away to start with an empty store"
            ) from exc
        return conn

    def _version(self, what: str) -> int:
        """The file's schema version (0: empty); refuses another program's or a newer aiosched's file."""
        conn = self._db
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version: int = 0
        if "schema_version" in tables:
            version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        elif tables:
            raise StoreError(f"cannot open {what}: it holds other tables ({', '.join(sorted(tables))}), not aiosched's")
        if version > len(STEPS):
            raise StoreError(
                f"cannot open {what}: written by a newer aiosched (schema {version}, this version knows "
                f"{len(STEPS)}); upgrade aiosched or use another file"
            )
        return version

    def _prepare(self, what: str, version: int) -> None:
        """WAL, the synchronous level, and the migration steps the file lacks (each one transaction)."""
        conn = self._db
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            for step in range(version, len(STEPS)):
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{STEPS[step]}\nDELETE FROM schema_version;\n"
                    f"INSERT INTO schema_version (version) VALUES ({step + 1});\nCOMMIT;"
                )
                logger.info("%s: schema migrated to version %d", what, step + 1)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"cannot open {what}: {exc}") from exc
        if mode != "wal":
            logger.warning("%s: journal mode is %s, not WAL (the file system may not support WAL)", what, mode)

    def _count_runs(self) -> None:
        conn = self._db
        self._finished = conn.execute(f"SELECT count(*) FROM runs WHERE {_FINISHED}").fetchone()[0]
        keys = conn.execute(f"SELECT schedule_id, fire_time FROM runs WHERE {_IN_FLIGHT}")
        self._in_flight = {(sid, fire) for sid, fire in keys}
        self._orphans = set(self._in_flight)

    def _load(self) -> tuple[list[Schedule], dict[str, str]]:
        schedules: list[Schedule] = []
        invalid: dict[str, str] = {}
        for row in self._db.execute(f"SELECT {_SCHEDULE_COLS} FROM schedules ORDER BY id"):
            try:
                schedules.append(schedule_from_values(row, from_iso))
            except Exception as exc:  # an isolation boundary: one bad row must not stop the others
                invalid[str(row[0])] = f"{type(exc).__name__}: {exc}"
        return schedules, invalid

    def close(self) -> None:
        """Close the connection and drop the lock. Safe to call twice."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                conn.close()
        finally:
            self._lock.release()

    def ping(self) -> bool:
        """Whether the connection answers ``SELECT 1``."""
        try:
            return bool(self._db.execute("SELECT 1").fetchone())
        except sqlite3.Error:
            return False

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the SQLite store {self.path!r} is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        conn = self._db
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn.cursor()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        self.stats["transactions"] += 1

    # -- schedules -----------------------------------------------------------------

    def put_schedule(self, values: Sequence[Any]) -> None:
        """Insert or replace one schedule row (``SCHEDULE_COLUMNS`` order)."""
        with self._transaction() as cur:
            cur.execute(_PUT_SCHEDULE, values)

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete one schedule row (its runs stay)."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    # -- runs ----------------------------------------------------------------------

    def release(self, advances: Sequence[tuple[str | None, str, int]], runs: Sequence[Sequence[Any]]) -> list[bool]:
        """Set next fire times ``(nft, id, version)`` and insert runs, in one transaction.

        A schedule whose version moved on is left alone. Returns, per run, whether it was
        inserted (False: its ``(schedule_id, fire_time)`` exists already).
        """
        with self._transaction() as cur:
            cur.executemany("UPDATE schedules SET next_fire_time = ? WHERE id = ? AND version = ?", advances)
            inserted = [cur.execute(_INSERT_RUN, values).rowcount == 1 for values in runs]
            new = [v for v, ok in zip(runs, inserted, strict=True) if ok]
            counts = _Counts(sum(v[2] not in _OPEN for v in new), [(v[0], v[1]) for v in new if v[2] in _OPEN], [])
            counts.pruned = self._prune(cur, counts.finished)
        self._settle(counts)
        return inserted

    def add_run(self, values: Sequence[Any]) -> bool:
        """Insert one run; False if its key exists already."""
        return self.release((), (values,))[0]

    def update_runs(self, runs: Sequence[Sequence[Any]]) -> None:
        """Write the current state of runs (matched by key; unknown keys are ignored)."""
        in_flight = self._in_flight
        ended = list({(v[0], v[1]) for v in runs if v[2] not in _OPEN and (v[0], v[1]) in in_flight})
        counts = _Counts(len(ended), [], ended)
        with self._transaction() as cur:
            cur.executemany(_UPDATE_RUN, [(*v[2:], v[0], v[1]) for v in runs])
            counts.pruned = self._prune(cur, counts.finished)
        self._settle(counts)

    def _prune(self, cur: sqlite3.Cursor, newly_finished: int) -> int:
        """Delete the finished runs beyond the age and count limits; returns how many.

        Cheap: both deletes walk the runs_finished index from its oldest end, and the count
        of finished runs is kept in memory rather than counted.
        """
        pruned = 0
        if self._max_age is not None:
            cutoff = iso(datetime.now(UTC) - self._max_age)
            pruned += cur.execute(f"DELETE FROM runs WHERE {_FINISHED} AND fire_time < ?", (cutoff,)).rowcount
        excess = self._finished + newly_finished - pruned - self._limit
        if excess > 0:
            pruned += cur.execute(f"DELETE FROM runs WHERE rowid IN ({_OLDEST_FINISHED})", (excess,)).rowcount
        return pruned

    def _settle(self, counts: _Counts) -> None:
        """Apply a committed transaction's changes to the bookkeeping."""
        self._finished += counts.finished - counts.pruned
        self._in_flight.update(counts.started)
        self._in_flight.difference_update(counts.ended)
        self._orphans.difference_update(counts.ended)
        self.stats["runs_pruned"] += counts.pruned

    def get_runs(
        self,
        schedule_id: str | None,
        states: Collection[RunState] | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> list[RunRecord]:
        """Run history, newest fire time first (see Store.get_runs)."""
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("schedule_id = ?", schedule_id),
            ("fire_time >= ?", since and iso(since)),
            ("fire_time < ?", until and iso(until)),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if states is not None:
            wanted = sorted({RunState(s).value for s in states})
            where.append(f"state IN ({', '.join('?' * len(wanted))})")
            params += wanted
        sql = f"SELECT {_RUN_COLS} FROM runs {'WHERE ' + ' AND '.join(where) if where else ''}"
        sql += " ORDER BY fire_time DESC LIMIT ? OFFSET ?"
        rows = self._db.execute(sql, (*params, limit, offset)).fetchall()
        return [run_from_values(row, from_iso) for row in rows]

    def recover(self, recoverable: Collection[str], node: str) -> list[RunRecord]:
        """Settle the runs a previous process left in flight; returns them as now stored.

        Each becomes ``abandoned`` unless its schedule id is in ``recoverable`` and it was not
        re-run once already: that one stays ``running`` (marked as a re-run) for the caller
        to run again. Runs this process started are never touched.
        """
        if not self._orphans:
            return []
        rows = self._db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE {_IN_FLIGHT} ORDER BY fire_time").fetchall()
        records = [run_from_values(row, from_iso) for row in rows if tuple(row[:2]) in self._orphans]
        now = datetime.now(UTC)
        for record in records:  # the attempt in flight counts as made (the runner writes attempts at the end)
            if record.state is RunState.RUNNING:
                record.attempt = max(record.attempt, 1)
        again = [r for r in records if r.schedule_id in recoverable and r.reason != RERUN]
        abandon = [r for r in records if r.schedule_id not in recoverable or r.reason == RERUN]
        for record in again:
            record.reason, record.node = RERUN, node
        for record in abandon:
            note = ABANDONED if record.reason != RERUN else f"{ABANDONED} (again, during its re-run)"
            record.state, record.ended_at, record.reason = RunState.ABANDONED, now, note
        ended = [(r.schedule_id, iso(r.fire_time)) for r in abandon]
        counts = _Counts(len(abandon), [], ended)
        with self._transaction() as cur:
            cur.executemany(_UPDATE_RUN, [(*v[2:], v[0], v[1]) for v in (run_values(r, iso) for r in records)])
            counts.pruned = self._prune(cur, counts.finished)
        self._settle(counts)
        self._orphans.clear()
        return records


class _Counts:
    """What one transaction changes in the run bookkeeping."""

    __slots__ = ("ended", "finished", "pruned", "started")

    def __init__(self, finished: int, started: list[RunKey], ended: list[RunKey]) -> None:
        self.finished = finished  # runs that are final now and were not (or did not exist) before
        self.started = started  # new runs in flight
        self.ended = ended  # runs that were in flight and are final now
        self.pruned = 0  # finished runs deleted by retention
