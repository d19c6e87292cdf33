"""A throwaway PostgreSQL server (initdb + pg_ctl) on a spare loopback port, for outage tests.

Never touches the machine's shared server. As root, the server runs as the ``postgres``
OS user (``runuser``); otherwise as the current user. :func:`problem` says why one cannot
be made here (no binaries, no suitable user), for the tests to skip with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import tempfile


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def problem() -> str | None:
    """Why a throwaway server cannot be made here, or None."""
    if _bindir() is None:
        return "no initdb/pg_ctl found (install the PostgreSQL server binaries)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run a throwaway server"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayServer:
    """A PostgreSQL cluster in a temporary directory; :meth:`stop` and :meth:`start` as often as needed."""

    def __init__(self) -> None:
        bindir = _bindir()
        assert bindir is not None
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="aiosched-pg-")
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]

    async def _run(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._prefix,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {out.decode()[-2000:]}")

    async def init(self) -> None:
        data = os.path.join(self.dir, "data")
        await self._run(f"{self.bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        data = os.path.join(self.dir, "data")
        log = os.path.join(self.dir, "log")
        await self._run(f"{self.bindir}/pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "30", "start")

    async def stop(self, mode: str = "fast") -> None:
        await self._run(f"{self.bindir}/pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", mode, "-w", "stop")

    async def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            await self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
