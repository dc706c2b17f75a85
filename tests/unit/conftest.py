"""Fixtures of the unit tests' own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.rawhttp import RawServer


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    """A raw HTTP server on 127.0.0.1 answering what the test scripts (tests/rawhttp.py)."""
    raw = RawServer()
    srv = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield raw
        srv.close()
