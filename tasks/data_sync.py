"""data_sync: import new records from a local JSON-lines source into a SQLite table.

Batched and idempotent: records are upserted by id and the import resumes after the
highest id already imported, so a retry or an overlapping run never duplicates a row.
It checks ``should_stop()`` between batches and returns early on shutdown. SQLite and
file calls run on a worker thread so the event loop never blocks.

``generate`` appends that many new records to the source first (a stand-in for an
upstream system, so the demo always has something to import).
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio.to_thread

from aiosched import should_stop

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    amount REAL NOT NULL,
    created TEXT NOT NULL
)
"""
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")


async def run(
    source: str = "var/source/orders.jsonl",
    database: str = "var/data.db",
    batch_size: int = 100,
    generate: int = 0,
) -> dict[str, Any]:
    """Import what is new in ``source`` into ``database``; returns counts."""
    if generate:
        await anyio.to_thread.run_sync(_generate, Path(source), generate)
    done = await anyio.to_thread.run_sync(_last_imported, Path(database))
    imported = 0
    stopped = False
    while True:
        if should_stop():
            stopped = True
            break
        batch = await anyio.to_thread.run_sync(_read_batch, Path(source), done, batch_size)
        if not batch:
            break
        await anyio.to_thread.run_sync(_upsert, Path(database), batch)
        imported += len(batch)
        done = batch[-1]["id"]
    return {"imported": imported, "last_id": done, "stopped_early": stopped}


def _generate(source: Path, count: int) -> None:
    source.parent.mkdir(parents=True, exist_ok=True)
    last = 0
    if source.exists():
        with source.open("rb") as handle:
            lines = handle.read().splitlines()
        last = json.loads(lines[-1])["id"] if lines else 0
    rng = random.Random(last)
    with source.open("a", encoding="utf-8") as handle:
        for n in range(last + 1, last + count + 1):
            record = {
                "id": n,
                "customer": rng.choice(CUSTOMERS),
                "amount": round(rng.uniform(5, 500), 2),
                "created": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            }
            handle.write(json.dumps(record) + "\n")


def _connect(database: Path) -> sqlite3.Connection:
    database.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(database)
    connection.execute(SCHEMA)
    return connection


def _last_imported(database: Path) -> int:
    connection = _connect(database)
    try:
        (last,) = connection.execute("SELECT COALESCE(MAX(id), 0) FROM orders").fetchone()
        return int(last)
    finally:
        connection.close()


def _read_batch(source: Path, after: int, size: int) -> list[dict[str, Any]]:
    if not source.exists():
        return []
    batch: list[dict[str, Any]] = []
    with source.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["id"] > after:
                batch.append(record)
                if len(batch) == size:
                    break
    return batch


def _upsert(database: Path, batch: list[dict[str, Any]]) -> None:
    connection = _connect(database)
    try:
        with connection:
            connection.executemany(
                "INSERT INTO orders (id, customer, amount, created) VALUES (:id, :customer, :amount, :created) "
                "ON CONFLICT(id) DO UPDATE SET customer=excluded.customer, amount=excluded.amount, "
                "created=excluded.created",
                batch,
            )
    finally:
        connection.close()
