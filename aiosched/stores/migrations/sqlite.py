"""The SQLite schema, step by step (see the package docstring).

Datetimes are UTC ISO 8601 text of fixed width (``2030-01-01T00:00:00.000000+00:00``), so
they sort as they compare; JSON columns hold what ``aiosched.stores._codec`` writes.
"""

from __future__ import annotations

V1 = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    task_ref       TEXT NOT NULL,             -- "package.module:qualname"
    trigger        TEXT NOT NULL,             -- JSON: TriggerSpec.to_dict()
    args           TEXT NOT NULL,             -- JSON list
    kwargs         TEXT NOT NULL,             -- JSON object
    policy         TEXT NOT NULL,             -- JSON object (enums by value, retry nested)
    paused         INTEGER NOT NULL DEFAULT 0,
    next_fire_time TEXT,                      -- NULL when the trigger is done
    version        INTEGER NOT NULL,
    source         TEXT NOT NULL DEFAULT 'runtime'
);

CREATE TABLE runs (
    schedule_id TEXT NOT NULL,
    fire_time   TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT,
    ended_at    TEXT,
    lateness    REAL,
    error       TEXT,
    traceback   TEXT,
    result      TEXT,
    reason      TEXT,
    manual      INTEGER NOT NULL DEFAULT 0,
    node        TEXT,
    PRIMARY KEY (schedule_id, fire_time)      -- one start per fire
);

-- history pages across schedules, newest first
CREATE INDEX runs_by_fire_time ON runs (fire_time);
-- retention: the oldest finished runs, and age pruning, without a scan
CREATE INDEX runs_finished ON runs (fire_time) WHERE state NOT IN ('queued', 'running');
-- (no index for the runs in flight: every run would pay for it twice, while only the start-up
-- of the store looks for them, in a table that retention keeps small)
"""

#: ``STEPS[n]`` migrates schema version n to n + 1.
STEPS: tuple[str, ...] = (V1,)
