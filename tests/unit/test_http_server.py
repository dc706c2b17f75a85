"""The master's HTTP listener (supervisor/http/server.py): malformed requests, slow and
many clients. In-process aiohttp, real sockets."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from config import load_settings
from config.logging import configure_logging, reset_logging
from supervisor.http.server import HardenedSite, make_runner

ADMIN = "adm-" + secrets.token_urlsafe(32)
OWNER_KEY = "bvo_12_" + secrets.token_urlsafe(32)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    load_settings(environ={}, overrides={"security": {"admin_key": ADMIN}})
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    yield stream
    reset_logging()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


@asynccontextmanager
async def serve(*, idle_timeout_s: float = 30, max_connections: int = 100) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = make_runner(app, idle_timeout_s=idle_timeout_s)
    await runner.setup()
    site = HardenedSite(runner, "127.0.0.1", 0, max_connections=max_connections)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exchange(port: int, raw: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


async def test_a_malformed_header_holding_a_key_is_neither_logged_nor_echoed(
    out: io.StringIO,
) -> None:
    async with serve() as port:
        for key in (ADMIN, OWNER_KEY):
            request = f"GET /v1/bots HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {key}\r\n\r\n"
            answer = await exchange(port, request.encode())
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
            assert key.encode() not in answer
    text = out.getvalue()
    assert ADMIN not in text and OWNER_KEY not in text
    assert "http.bad_request" in text and "Traceback" not in text


async def test_an_oversized_header_holding_a_key_is_not_logged(out: io.StringIO) -> None:
    async with serve() as port:
        request = (
            f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}{'A' * 20_000}\r\n\r\n"
        )
        answer = await exchange(port, request.encode())
    assert b" 400 " in answer.split(b"\r\n")[0] or b" 431 " in answer.split(b"\r\n")[0]
    assert ADMIN not in out.getvalue()


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() -> None:
    async with serve(idle_timeout_s=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        # a well-behaved client still gets answers
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.endswith(b"hello")


async def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    async with serve(max_connections=3) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        # each is registered once its handler runs: an answered request proves it
        for reader, writer in held:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5):
                assert b"hello" in await reader.readuntil(b"hello")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        for _, w in held:
            w.close()
