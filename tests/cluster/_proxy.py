"""A small asyncio TCP proxy in front of PostgreSQL that breaks connections on purpose (RELIABILITY S11).

It reads the client's protocol messages (the connection must not use TLS: ``sslmode=disable``)
and, at random with the given probabilities, refuses a new connection, drops one just
before a ``COMMIT`` reaches the server (the transaction rolls back), or drops it right
after the server has received the ``COMMIT`` but before the client hears the answer (the
transaction committed; the client cannot know). Counts what it did in :attr:`faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct


class FaultyProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``target`` with injected faults."""

    def __init__(self, target: tuple[str, int], *, connect: float, pre_commit: float, post_commit: float) -> None:
        self.target = target
        self.p_connect, self.p_pre, self.p_post = connect, pre_commit, post_commit
        self.faults = {"connect": 0, "pre_commit": 0, "post_commit": 0, "commits": 0}
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.enabled = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.enabled and random.random() < self.p_connect:
                self.faults["connect"] += 1
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            down = asyncio.create_task(self._pipe(up_reader, writer))
            try:
                await self._client_to_server(reader, up_writer)
            finally:
                down.cancel()
                await asyncio.gather(down, return_exceptions=True)
                up_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        length = struct.unpack("!i", await reader.readexactly(4))[0]  # the startup packet: no type byte
        up.write(struct.pack("!i", length) + await reader.readexactly(length - 4))
        while True:
            head = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
            commit = head[:1] == b"Q" and body.upper().startswith(b"COMMIT")
            if commit and self.enabled:
                self.faults["commits"] += 1
                if random.random() < self.p_pre:
                    self.faults["pre_commit"] += 1
                    return
            up.write(head + body)
            await up.drain()
            if commit and self.enabled and random.random() < self.p_post:
                self.faults["post_commit"] += 1
                await asyncio.sleep(0.05)  # the server commits; its answer never reaches the client
                return

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
