"""The reliability harness: a fire ledger, node processes under real signals, libfaketime, RSS.

The ledger
    An append-only JSONL file the test owns (one per test, under ``tmp_path``). A ledger task
    (``tasks.py``) appends a row when its body starts and when it ends: one ``os.write`` of one
    short line on an ``O_APPEND`` descriptor, then ``fsync``, before the task goes on. A row is
    therefore whole or absent, survives the SIGKILL of its writer, and the rows of several
    processes interleave without a lock. JSONL rather than a SQLite table with
    ``UNIQUE(schedule_id, fire_time)``: a unique key would *refuse* the duplicate a test wants to
    count, and a writer killed mid-transaction would leave a lock behind. So duplicates are
    counted, not prevented (:meth:`Ledger.duplicates` is the figure).

    Every row names its fire: ``sid`` and ``fire`` (the run's schedule id and nominal fire time,
    found on the stack by :func:`tasks.current_run`) and ``attempt``. ``mono`` is
    ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every process of the machine (and
    libfaketime leaves it alone here), so the rows of several processes and the test's own
    instants compare exactly. ``wall`` is ``time.time()`` as the writer saw it.

Nodes
    :class:`Node` is a scheduler process (``python -m tests.reliability.node SPEC`` or the real
    ``python -m aiosched run``) that the test SIGKILLs, SIGSTOPs, SIGCONTs or SIGTERMs. Its
    stdout is read as JSON lines with deadlines, its stderr goes to a log file.

Whole-process clock jumps
    :class:`WallClock` steps the wall clock of the processes started with its environment
    (libfaketime via ``LD_PRELOAD``, the offset re-read from a file on every call) and leaves
    their monotonic clock alone, like an NTP step. Caveat of libfaketime 0.9.10: with the
    monotonic clock left alone, ``time.sleep()`` fails with EINVAL in such a process (its
    ``clock_nanosleep(TIMER_ABSTIME)`` is translated wrongly); asyncio, threading waits and
    SQLite are unaffected, so node tasks use ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
POLL = 0.01  # seconds between two looks at a file another process writes

Row = dict[str, Any]


def append(ledger: str | os.PathLike[str], ev: str, **fields: Any) -> None:
    """Append one row to a ledger file: one write of one line, then fsync (blocking, ~0.3 ms)."""
    row = {"ev": ev, "pid": os.getpid(), "mono": time.monotonic(), "wall": time.time(), **fields}
    data = (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class Ledger:
    """Reads a ledger file incrementally (other processes append to it while the test reads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: list[Row] = []
        self._offset = 0
        self._partial = b""

    def __str__(self) -> str:
        return str(self.path)

    def refresh(self) -> list[Row]:
        """Read what was appended since the last call; returns every row so far."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self._rows
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a complete line
        self._rows.extend(json.loads(line) for line in lines if line)
        return self._rows

    def rows(self, ev: str | None = None, sid: str | None = None) -> list[Row]:
        """The rows so far, optionally of one kind (``start``, ``end``, ``cancelled``) and schedule."""
        return [r for r in self.refresh() if (ev is None or r["ev"] == ev) and (sid is None or r.get("sid") == sid)]

    def starts(self, sid: str | None = None) -> list[Row]:
        return self.rows("start", sid)

    def duplicates(self) -> int:
        """Starts beyond the first of the same fire and attempt (0 when every fire started once)."""
        counts = Counter((r["sid"], r["fire"], r["attempt"]) for r in self.starts())
        return sum(n - 1 for n in counts.values())

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll until ``predicate()`` holds (it reads :meth:`rows`); AssertionError after ``timeout``."""
        await until(predicate, f"ledger {self.path.name}: {what}", timeout)

    async def wait_starts(self, count: int, sid: str | None = None, timeout: float = 30.0) -> list[Row]:
        await self.wait(lambda: len(self.starts(sid)) >= count, f"{count} starts of {sid or 'any'}", timeout)
        return self.starts(sid)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition that another process or thread makes true, with a deadline."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g}s: {what}") from None


def intervals(rows: Sequence[Row]) -> list[tuple[float, float]]:
    """(start, end) monotonic pairs per fire and attempt; a fire still going ends at +inf."""
    ends = {(r["sid"], r["fire"], r["attempt"]): r["mono"] for r in rows if r["ev"] != "start"}
    return [
        (r["mono"], ends.get((r["sid"], r["fire"], r["attempt"]), float("inf"))) for r in rows if r["ev"] == "start"
    ]


def max_overlap(spans: Sequence[tuple[float, float]]) -> int:
    """The largest number of spans open at one instant (an end at t closes before a start at t)."""
    marks = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda m: (m[0], m[1]))
    peak = level = 0
    for _, step in marks:
        level += step
        peak = max(peak, level)
    return peak


# -- processes -----------------------------------------------------------------------------


class Node:
    """A scheduler process a test signals for real; stdout is read as JSON lines, stderr logged."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, log: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def spawn(
        cls,
        args: Sequence[str],
        *,
        name: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        json_stdout: bool = True,
        stdin: bool = False,
    ) -> Node:
        """Start ``python ARGS`` in the repository root (``-m aiosched run ...`` or ``-m tests.reliability.node``)."""
        with log.open("ab") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if json_stdout else asyncio.subprocess.DEVNULL,
                stderr=sink,
                env={**os.environ, **(env or {})},
            )
        return cls(proc, name, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def expect(self, key: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next stdout line that has ``key`` (earlier lines are kept in :attr:`lines`)."""
        stdout = self.proc.stdout
        assert stdout is not None, "spawned without json_stdout"
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await stdout.readline()
                    if not raw:
                        raise AssertionError(f"{self.name} ended before printing {key!r}; log:\n{self.log_text()}")
                    line = json.loads(raw)
                    self.lines.append(line)
                    if key in line:
                        return dict(line)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} printed no {key!r} within {timeout:g}s; log:\n{self.log_text()}"
            ) from None

    async def send(self, line: str) -> None:
        """Write a line to the process's stdin (spawned with ``stdin=True``)."""
        assert self.proc.stdin is not None, "spawned without stdin"
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_log(self, text: str, timeout: float = 30.0) -> str:
        """Wait until the log holds ``text``; returns the log. Fails at once if the process ends first."""
        await until(lambda: text in self.log_text() or not self.alive, f"{self.name} logs {text!r}", timeout)
        log = self.log_text()
        if text not in log:
            raise AssertionError(f"{self.name} ended (code {self.proc.returncode}) before logging {text!r}:\n{log}")
        return log

    def signal(self, signum: signal.Signals) -> float:
        """Send ``signum``; returns ``time.monotonic()`` just before sending."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        return sent

    def kill(self) -> float:
        return self.signal(signal.SIGKILL)

    def terminate(self) -> float:
        return self.signal(signal.SIGTERM)

    def stop(self) -> float:
        return self.signal(signal.SIGSTOP)

    def cont(self) -> float:
        return self.signal(signal.SIGCONT)

    async def exit_code(self, timeout: float = 30.0) -> int:
        """Wait for the process to end (reading the rest of its stdout); returns its exit code."""
        try:
            async with asyncio.timeout(timeout):
                out, _ = await self.proc.communicate()
        except TimeoutError:
            raise AssertionError(f"{self.name} did not exit within {timeout:g}s; log:\n{self.log_text()}") from None
        self.lines.extend(json.loads(line) for line in (out or b"").splitlines() if line.strip())
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def close(self) -> None:
        """SIGKILL if still running, and reap (fixture teardown)."""
        if self.alive:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process must run to die cleanly
            self.proc.kill()
        await self.proc.communicate()

    def cpu_seconds(self) -> float:
        """User + system CPU time the process used so far (``/proc/PID/stat``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_args(spec: Mapping[str, Any]) -> list[str]:
    """Arguments of :meth:`Node.spawn` for the node script (see ``node.py``) with ``spec``."""
    return ["-m", "tests.reliability.node", json.dumps(spec)]


# -- libfaketime -----------------------------------------------------------------------------

FAKETIME_APT = "apt-get install -y faketime"
_LIBRARIES = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)


def faketime_library() -> str | None:
    """The thread-safe libfaketime on this machine, or None."""
    for pattern in _LIBRARIES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def faketime_env(library: str, **settings: str) -> dict[str, str]:
    """Environment for a process under libfaketime whose monotonic clock stays real."""
    return {"LD_PRELOAD": library, "FAKETIME_DONT_FAKE_MONOTONIC": "1", **settings}


def starting_at(library: str, when: datetime) -> dict[str, str]:
    """Environment for a process whose wall clock starts at ``when`` (UTC) and then runs."""
    return faketime_env(library, FAKETIME=f"@{when:%Y-%m-%d %H:%M:%S}", TZ="UTC")


class WallClock:
    """Steps the wall clock of processes started with :meth:`env`, while they run."""

    def __init__(self, library: str, folder: Path) -> None:
        self.library = library
        self.path = folder / "faketime.rc"
        self.offset = 0.0
        self.set(0)

    def env(self) -> dict[str, str]:
        return faketime_env(self.library, FAKETIME_TIMESTAMP_FILE=str(self.path), FAKETIME_NO_CACHE="1")

    def set(self, offset: float) -> None:
        """Put the wall clock ``offset`` seconds from the real one (atomically: readers never see half a file)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{round(offset):+d}\n")
        os.replace(tmp, self.path)
        self.offset = offset


# -- memory ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
