"""One process per store file: an exclusive ``flock`` on a sidecar ``<file>.lock``.

The lock file holds the holder's identity (pid, host, node id, since) so a second process
can say who is in the way. The operating system drops the lock when the holder's file
descriptor closes, so a process killed with SIGKILL never leaves a stale lock behind; the
file itself stays (deleting it would race with a process that just opened it).
Blocking calls: run these on the store's worker thread, not on the event loop.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime

from ..exceptions import StoreError


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (created if missing).

    Raises StoreError from :meth:`acquire` naming the holder when another process has it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, node_id: str, what: str) -> None:
        """Take the lock and write our identity into the file.

        Args:
            node_id: this scheduler's node id, shown to a process that is refused.
            what: the guarded resource in error messages (``"the SQLite store /x/a.db"``).
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open {what}: cannot create the lock file {self.path!r} ({exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise StoreError(
                f"{what} is in use by another aiosched process ({holder}); one process at a time may open it"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path!r} ({exc.strerror})") from exc
        identity = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "node_id": node_id,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(identity).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it). Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "holder unknown: it has not written its identity yet"
    return (
        f"pid {holder.get('pid')} on host {holder.get('hostname')}, "
        f"node {holder.get('node_id')}, since {holder.get('since')}"
    )
