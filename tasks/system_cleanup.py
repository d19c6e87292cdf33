"""system_cleanup: prune old report files and old synced records (a plain def: thread pool)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def run(reports: str = "var/reports", keep_reports: int = 20, database: str = "var/data.db",
        keep_orders: int = 100_000) -> dict[str, Any]:  # fmt: skip
    """Keep the newest ``keep_reports`` report files and the newest ``keep_orders`` orders."""
    removed_files = 0
    folder = Path(reports)
    if folder.is_dir():
        files = sorted(folder.glob("report-*.md"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[keep_reports:]:
            old.unlink(missing_ok=True)
            removed_files += 1
    removed_rows = 0
    if Path(database).exists():
        connection = sqlite3.connect(database, timeout=10)
        try:
            with connection:
                cursor = connection.execute(
                    "DELETE FROM orders WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM orders) - ?", (keep_orders,)
                )
                removed_rows = cursor.rowcount
        except sqlite3.OperationalError:  # no orders table yet
            pass
        finally:
            connection.close()
    return {"removed_reports": removed_files, "removed_orders": removed_rows, "at": time.strftime("%H:%M:%S")}
