"""The PostgreSQL schema, step by step (see the package docstring).

Every object lives in the store's own schema (``{schema}`` below, ``aiosched`` unless the
URL says ``?schema=...``), so one database can hold several independent clusters. Times
are ``timestamptz``; leases and heartbeats are compared with the database's clock only.
"""

from __future__ import annotations

V1 = """
CREATE TABLE {schema}.schema_version (
    version integer NOT NULL
);

CREATE TABLE {schema}.schedules (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    task_ref       text NOT NULL,             -- "package.module:qualname"
    trigger        text NOT NULL,             -- JSON: TriggerSpec.to_dict()
    args           text NOT NULL,             -- JSON list
    kwargs         text NOT NULL,             -- JSON object
    policy         text NOT NULL,             -- JSON object (enums by value, retry nested)
    paused         boolean NOT NULL DEFAULT false,
    next_fire_time timestamptz,               -- NULL when the trigger is done
    version        integer NOT NULL,
    source         text NOT NULL DEFAULT 'runtime',
    acquired_by    text,                      -- the node holding the lease
    acquired_token text,                      -- that node's process incarnation (fencing)
    acquired_until timestamptz                -- lease expiry, database clock
);
-- the claim query and the idle timer: unpaused schedules by next fire time
CREATE INDEX schedules_due ON {schema}.schedules (next_fire_time) WHERE NOT paused;

CREATE TABLE {schema}.runs (
    schedule_id text NOT NULL,
    fire_time   timestamptz NOT NULL,
    state       text NOT NULL,
    attempt     integer NOT NULL DEFAULT 0,
    started_at  timestamptz,
    ended_at    timestamptz,
    lateness    double precision,
    error       text,
    traceback   text,
    result      text,
    reason      text,
    manual      boolean NOT NULL DEFAULT false,
    node        text,
    PRIMARY KEY (schedule_id, fire_time)      -- one start per fire, across every node
);
CREATE INDEX runs_by_fire_time ON {schema}.runs (fire_time);
-- retention walks the oldest finished runs
CREATE INDEX runs_finished ON {schema}.runs (fire_time) WHERE state NOT IN ('queued', 'running');
-- max_instances across nodes and the settling of dead nodes' runs look at runs in flight only
CREATE INDEX runs_in_flight ON {schema}.runs (schedule_id) WHERE state IN ('queued', 'running');

CREATE TABLE {schema}.nodes (
    node_id    text PRIMARY KEY,
    token      text NOT NULL,                 -- the process incarnation holding the id
    hostname   text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL           -- heartbeat, database clock
);

-- one row per committed release: lets a node whose connection dropped during COMMIT
-- find out whether the commit happened, and which runs it inserted
CREATE TABLE {schema}.releases (
    id        uuid PRIMARY KEY,
    node      text NOT NULL,
    inserted  integer[] NOT NULL,             -- indexes of the runs the release inserted
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX releases_by_age ON {schema}.releases (at);      -- markers are forgotten after an hour
"""

#: ``STEPS[n]`` migrates schema version n to n + 1 (``{schema}``: the quoted schema name).
STEPS: tuple[str, ...] = (V1,)
