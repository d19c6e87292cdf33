"""The SQL of the PostgreSQL store, built once per schema name.

Each statement is one round trip. Arrays (``unnest``) carry batches, so a release of a
thousand schedules is still a handful of statements. Lease checks use the database's
``clock_timestamp()``, never a node's clock.
"""

from __future__ import annotations

import re

from ._codec import RUN_COLUMNS, SCHEDULE_COLUMNS

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,49}")
IN_FLIGHT = "state IN ('queued', 'running')"
FINISHED = "state NOT IN ('queued', 'running')"
_RUN_TYPES = (
    "text",
    "timestamptz",
    "text",
    "int",
    "timestamptz",
    "timestamptz",
    "float8",
    "text",
    "text",
    "text",
    "text",
    "bool",
    "text",
)


class Sql:
    """Statements for the store in schema ``schema`` (a validated lower-case name)."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.schema = s
        self.channel = f"aiosched_{schema}"
        cols = ", ".join(SCHEDULE_COLUMNS)
        self.schedule_cols = cols
        run_cols = ", ".join(RUN_COLUMNS)
        self.run_cols = run_cols
        params = ", ".join(f"${i}" for i in range(1, len(SCHEDULE_COLUMNS) + 1))
        n = len(SCHEDULE_COLUMNS)
        notify = f"pg_notify('{self.channel}', ${n + 1})"
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in SCHEDULE_COLUMNS[1:] if c != "version")
        self.insert_schedule = (
            f"WITH w AS (INSERT INTO {s}.schedules ({cols}) VALUES ({params}) ON CONFLICT (id) DO NOTHING"
            f" RETURNING version) SELECT w.version, {notify} FROM w"
        )
        self.replace_schedule = (
            f"WITH w AS (INSERT INTO {s}.schedules ({cols}) VALUES ({params}) ON CONFLICT (id) DO UPDATE SET {sets},"
            f" version = {s}.schedules.version + 1 RETURNING version) SELECT w.version, {notify} FROM w"
        )
        # update: the values without ``version`` (the store bumps it), then the notify payload
        plain = [c for c in SCHEDULE_COLUMNS if c != "version"]
        updates = ", ".join(f"{c} = ${i}" for i, c in enumerate(plain, 1) if c != "id")
        self.update_schedule = (
            f"WITH w AS (UPDATE {s}.schedules SET {updates}, version = version + 1 WHERE id = $1 RETURNING version)"
            f" SELECT w.version, pg_notify('{self.channel}', ${len(plain) + 1}) FROM w"
        )
        self.version_index = SCHEDULE_COLUMNS.index("version")
        self.delete_schedule = (
            f"WITH d AS (DELETE FROM {s}.schedules WHERE id = $1 RETURNING id) SELECT d.id, pg_notify('{self.channel}',"
            " $2) FROM d"
        )
        self.get_schedule = f"SELECT {cols} FROM {s}.schedules WHERE id = $1"
        self.get_schedules_by_id = f"SELECT {cols} FROM {s}.schedules WHERE id = ANY($1::text[])"
        order = "(paused OR next_fire_time IS NULL), next_fire_time NULLS FIRST, id"
        self.get_schedules = f"SELECT {cols} FROM {s}.schedules ORDER BY {order}"
        self.next_fire_times = f"SELECT id, CASE WHEN paused THEN NULL ELSE next_fire_time END FROM {s}.schedules"
        # claim: due, unpaused, not leased (or lease expired by the database's clock), never an
        # id this node found invalid; SKIP LOCKED lets nodes claim side by side without waiting
        tcols = ", ".join(f"t.{c}" for c in SCHEDULE_COLUMNS)
        self.acquire = f"""
            WITH due AS (
                SELECT id FROM {s}.schedules
                WHERE NOT paused AND next_fire_time <= $1
                  AND (acquired_until IS NULL OR acquired_until < clock_timestamp())
                  AND NOT (id = ANY($5::text[]))
                ORDER BY next_fire_time, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            UPDATE {s}.schedules AS t
            SET acquired_by = $3, acquired_token = $4, acquired_until = clock_timestamp() + make_interval(secs => $6)
            FROM due WHERE t.id = due.id
            RETURNING {tcols},
                (SELECT count(*) FROM {s}.runs r
                 WHERE r.schedule_id = t.id AND r.{IN_FLIGHT} AND r.node IS DISTINCT FROM $3) AS elsewhere
        """
        self.unlease = (
            f"UPDATE {s}.schedules SET acquired_by = NULL, acquired_token = NULL, acquired_until = NULL"
            " WHERE id = ANY($1::text[]) AND acquired_token = $2"
        )
        self.unlease_all = (
            f"UPDATE {s}.schedules SET acquired_by = NULL, acquired_token = NULL, acquired_until = NULL"
            " WHERE acquired_token = $1"
        )
        # release, fenced: only rows whose lease is still this process's, by the database's clock;
        # a schedule changed since the claim (version moved on) keeps its own next fire time
        self.advance = f"""
            UPDATE {s}.schedules AS t
            SET next_fire_time = CASE WHEN t.version = v.version THEN v.nft ELSE t.next_fire_time END,
                acquired_by = NULL, acquired_token = NULL, acquired_until = NULL
            FROM unnest($1::text[], $2::timestamptz[], $3::int[]) AS v(id, nft, version)
            WHERE t.id = v.id AND t.acquired_token = $4 AND t.acquired_until > clock_timestamp()
            RETURNING t.id
        """
        self.existing = f"SELECT id FROM {s}.schedules WHERE id = ANY($1::text[])"
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(_RUN_TYPES, 1))
        self.insert_runs = (
            f"INSERT INTO {s}.runs ({run_cols}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
            " RETURNING schedule_id, fire_time"
        )
        vcols = ", ".join(RUN_COLUMNS)
        sets_runs = ", ".join(f"{c} = v.{c}" for c in RUN_COLUMNS[2:])
        self.update_runs = f"""
            UPDATE {s}.runs AS r SET {sets_runs}
            FROM unnest({arrays}) AS v({vcols})
            WHERE r.schedule_id = v.schedule_id AND r.fire_time = v.fire_time
              AND r.node IS NOT DISTINCT FROM v.node AND r.{IN_FLIGHT}
            RETURNING r.schedule_id
        """
        # settling: write a run as decided, whatever its node (the settler owns it now)
        self.settle_runs = f"""
            UPDATE {s}.runs AS r SET {sets_runs}
            FROM unnest({arrays}) AS v({vcols})
            WHERE r.schedule_id = v.schedule_id AND r.fire_time = v.fire_time
        """
        self.mark_release = f"INSERT INTO {s}.releases (id, node, inserted) VALUES ($1, $2, $3)"
        self.find_release = f"SELECT inserted FROM {s}.releases WHERE id = $1"
        self.forget_releases = f"DELETE FROM {s}.releases WHERE at < clock_timestamp() - make_interval(secs => $1)"
        self.next_fire_time = f"""
            SELECT min(next_fire_time) FILTER (WHERE acquired_until IS NULL OR acquired_until < clock_timestamp()),
                   extract(epoch FROM min(acquired_until) FILTER (WHERE acquired_until >= clock_timestamp())
                                       - clock_timestamp())::float8
            FROM {s}.schedules WHERE NOT paused AND next_fire_time IS NOT NULL
        """
        self.prune_count = f"""
            DELETE FROM {s}.runs WHERE (schedule_id, fire_time) IN (
                SELECT schedule_id, fire_time FROM {s}.runs WHERE {FINISHED}
                ORDER BY fire_time DESC, schedule_id DESC OFFSET $1)
        """
        self.prune_age = (
            f"DELETE FROM {s}.runs WHERE {FINISHED} AND fire_time < clock_timestamp() - make_interval(secs => $1)"
        )
        # nodes
        self.register = f"""
            INSERT INTO {s}.nodes (node_id, token, hostname, pid, started_at, last_seen)
            VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp())
            ON CONFLICT (node_id) DO UPDATE SET token = EXCLUDED.token, hostname = EXCLUDED.hostname,
                pid = EXCLUDED.pid, started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen
            WHERE {s}.nodes.last_seen < clock_timestamp() - make_interval(secs => $5) OR {s}.nodes.token = $6
            RETURNING node_id
        """
        self.holder = (
            f"SELECT hostname, pid, started_at, extract(epoch FROM clock_timestamp() - last_seen)::float8"
            f" FROM {s}.nodes WHERE node_id = $1"
        )
        self.heartbeat = f"UPDATE {s}.nodes SET last_seen = clock_timestamp() WHERE node_id = $1 AND token = $2"
        self.unregister = f"DELETE FROM {s}.nodes WHERE node_id = $1 AND token = $2"
        self.dead_nodes = f"""
            SELECT node_id FROM {s}.nodes
            WHERE last_seen < clock_timestamp() - make_interval(secs => $1) AND node_id <> $2
            FOR UPDATE SKIP LOCKED
        """
        self.delete_nodes = f"DELETE FROM {s}.nodes WHERE node_id = ANY($1::text[])"
        # the runs in flight of dead nodes, of nodes that are gone, and (once, at start) our own
        # previous incarnation's; the rows are locked so two survivors never settle the same run
        self.orphans = f"""
            SELECT {run_cols} FROM {s}.runs r
            WHERE r.{IN_FLIGHT}
              AND (r.node = ANY($1::text[])
                   OR (r.node = $2 AND $3)
                   OR ($4 AND r.node <> $2 AND NOT EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.node_id = r.node)))
            ORDER BY r.fire_time, r.schedule_id
            FOR UPDATE SKIP LOCKED
        """
        self.run_keys = f"""
            SELECT {run_cols} FROM {s}.runs
            WHERE (schedule_id, fire_time) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))
        """
