"""daily_report: CPU work for the process pool — a sales report built from the synced orders.

Runs as a BaseTask: ``execute`` does the number crunching in a worker process (so it can
be killed on timeout and never slows the event loop); the hooks run in the scheduler.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosched import BaseTask


class DailyReport(BaseTask):
    """Writes ``reports/report-<stamp>.md`` with totals, percentiles and top customers."""

    def validate_params(self, **kwargs: Any) -> bool:
        return int(kwargs.get("top", 3)) > 0

    def execute(self, database: str = "var/data.db", reports: str = "var/reports", top: int = 3) -> dict[str, Any]:
        rows = _orders(Path(database))
        per_customer: dict[str, list[float]] = defaultdict(list)
        for customer, amount in rows:
            per_customer[customer].append(amount)
        amounts = sorted(amount for _, amount in rows)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        lines = [f"# Sales report {stamp}", "", f"orders: {len(amounts)}"]
        if amounts:
            quartiles = statistics.quantiles(amounts, n=4) if len(amounts) > 1 else [amounts[0]] * 3
            lines += [
                f"total: {sum(amounts):.2f}",
                f"median: {statistics.median(amounts):.2f}  p25: {quartiles[0]:.2f}  p75: {quartiles[2]:.2f}",
                "",
                "| customer | orders | total |",
                "|---|---:|---:|",
            ]
            ranked = sorted(per_customer.items(), key=lambda item: -sum(item[1]))[:top]
            lines += [f"| {name} | {len(values)} | {sum(values):.2f} |" for name, values in ranked]
        out = Path(reports)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"report-{stamp}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"report": str(path), "orders": len(amounts)}


def _orders(database: Path) -> list[tuple[str, float]]:
    if not database.exists():
        return []
    connection = sqlite3.connect(database)
    try:
        return [(str(c), float(a)) for c, a in connection.execute("SELECT customer, amount FROM orders")]
    except sqlite3.OperationalError:  # no orders table yet: data_sync has not run
        return []
    finally:
        connection.close()
