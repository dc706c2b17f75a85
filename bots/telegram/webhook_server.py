"""The webhook ingress's listener: connections (bots/telegram/webhook_http.py) accepted,
swept for timeouts once a second, and drained on shutdown (`close`): no new connections;
idle ones close at once, busy ones answer what they already read (`Connection: close`)
and close; past the timeout they are aborted."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from bots.telegram.webhook_http import Connection
from bots.telegram.webhook_reply import Answerer

#: the timeout sweep's period
SWEEP_S: Final = 1.0


class IngressServer:
    """Listens for the ingress: `start`, then `close` on shutdown."""

    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.draining = False
        #: set while no connection is open
        self.empty = asyncio.Event()
        self.empty.set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0  # the one listened on, once started

    async def start(self, host: str, port: int) -> None:
        """Raises OSError when it cannot listen (the caller explains)."""
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, reuse_address=True, backlog=1024
        )
        # uvloop's server is no asyncio.Server, but has its sockets too
        sockets = getattr(self._server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self._sweeper = asyncio.create_task(self._sweep(), name="webhook:http-sweep")

    def joined(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.empty.clear()

    def lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self.empty.set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.expired(now)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, finish the answers already owed, then close every connection."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.drain()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.empty.wait()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()
