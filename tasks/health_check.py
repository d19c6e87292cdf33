"""health_check: GET a URL and fail (retryably) when it does not answer as expected.

Point ``url`` at the scheduler's own ``/healthz`` or any service you depend on. Without a
URL it checks the machine instead: free disk space where the scheduler runs.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import aiohttp

from aiosched import RetryableError


async def run(
    url: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - an HTTP timeout, not a cancel scope
    expect_status: int = 200,
    min_free_mb: int = 100,
) -> dict[str, Any]:
    """Check ``url`` (or the local disk) and return what was measured."""
    if url is None:
        free_mb = shutil.disk_usage(".").free // 2**20
        if free_mb < min_free_mb:
            raise RetryableError(f"only {free_mb} MB free on the scheduler's disk (want {min_free_mb})")
        return {"check": "disk", "free_mb": free_mb}
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RetryableError(f"{url} did not answer: {type(exc).__name__}: {exc}") from exc
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    if status != expect_status:
        raise RetryableError(f"{url} answered {status}, expected {expect_status}")
    return {"check": url, "status": status, "ms": elapsed_ms}
