"""The PostgreSQL store's URL options and its schema: created on first start, migrated step by step.

Migrations run under a transaction-scoped advisory lock, so nodes starting together
apply each step once; a schema written by a newer aiosched, or one holding tables that
aiosched did not create, is refused untouched.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..exceptions import StoreError
from ._pg_sql import SCHEMA_NAME, Sql
from .migrations.postgres import STEPS

logger = logging.getLogger("aiosched.stores.postgres")

#: store options read from the URL's query string (everything else goes to asyncpg).
OPTIONS: dict[str, type] = {
    "schema": str,
    "lease": float,
    "heartbeat": float,
    "pool_size": int,
    "batch": int,
    "history_limit": int,
    "history_max_age": float,
    "command_timeout": float,
}


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``postgresql://...?schema=x&lease=30&sslmode=require`` into asyncpg's DSN and store options.

    Raises StoreError for a bad value or schema name.
    """
    base, _, query = url.partition("?")
    options: dict[str, Any] = {}
    passed: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        kind = OPTIONS.get(key)
        if kind is None:
            passed.append((key, value))
            continue
        try:
            options[key] = kind(value)
        except ValueError:
            raise StoreError(f"PostgreSQL store option {key}={value!r} is not a valid {kind.__name__}") from None
    schema = options.get("schema", "aiosched")
    if not SCHEMA_NAME.fullmatch(schema):
        raise StoreError(f"schema name {schema!r}: use 1-50 lower-case letters, digits and '_' (not first a digit)")
    if base.startswith("postgres://"):
        base = "postgresql://" + base[len("postgres://") :]
    return (f"{base}?{urlencode(passed)}" if passed else base), options


async def migrate(conn: Any, sql: Sql, schema: str, what: str) -> None:
    """Create the schema or bring it to the newest version; refuse one it does not understand."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"aiosched:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.schema}")
        has_version = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{sql.schema}.schema_version")
        if has_version:
            version = await conn.fetchval(f"SELECT max(version) FROM {sql.schema}.schema_version") or 0
        else:
            tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1", schema)
            if tables:
                raise StoreError(
                    f"cannot open {what}: schema {schema!r} holds {tables} table(s) that aiosched did not create "
                    "(no schema_version table); choose another schema with ?schema=..."
                )
            version = 0
        if version > len(STEPS):
            raise StoreError(
                f"cannot open {what}: its schema is version {version}, written by a newer aiosched "
                f"(this one knows up to {len(STEPS)}); upgrade aiosched, nothing was changed"
            )
        for step in range(version, len(STEPS)):
            await conn.execute(STEPS[step].format(schema=sql.schema))
            if step == 0:
                await conn.execute(f"INSERT INTO {sql.schema}.schema_version (version) VALUES (1)")
            else:
                await conn.execute(f"UPDATE {sql.schema}.schema_version SET version = $1", step + 1)
            logger.info("%s: schema migrated to version %d", what, step + 1)
