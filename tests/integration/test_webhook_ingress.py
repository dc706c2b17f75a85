"""The webhook ingress against real Redis: secret checks (401s counted, no secret in the
logs), updates in the shard stream as received, 429 past the backlog cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import structlog

from bots.telegram.webhook_ingress import SECRET_HEADER, WebhookIngress
from bots.telegram.webhook_server import IngressServer
from ipc import keys
from ipc.redis_client import redis_client

SHARDS = 4
SECRET = "A" * 20 + "very-secret-token_42"


class Secrets:
    """The registry's lookup, as a plain table (the registry itself has its own tests)."""

    def __init__(self, table: dict[int, str]) -> None:
        self.table = table
        self.queries = 0

    async def webhook_secrets(self, bot_ids: Sequence[int]) -> dict[int, str]:
        self.queries += 1
        return {b: self.table[b] for b in bot_ids if b in self.table}


@contextlib.asynccontextmanager
async def serving(ingress: WebhookIngress) -> AsyncIterator[str]:
    server = IngressServer(ingress)
    await server.start("127.0.0.1", 0)
    task = asyncio.create_task(ingress.run())
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close(2.0)  # requests in flight finish first, with the appender
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_secret_checked_counted_and_never_logged(redis_url: str, key_prefix: str) -> None:
    client = redis_client(redis_url, 2.0)
    seen: list[str] = []
    secrets = Secrets({7001: SECRET})
    ingress = WebhookIngress(
        client,
        key_prefix,
        SHARDS,
        secrets,
        backlog_max=3,
        retry_after_s=7,
        timeout_s=2.0,
        on_result=seen.append,
    )
    body = (
        b'{"update_id":5,"message":{"message_id":1,"chat":{"id":9,"type":"private"},"text":"hi"}}'
    )
    with structlog.testing.capture_logs() as logs:
        async with serving(ingress) as base, aiohttp.ClientSession() as http:
            url = f"{base}/tg/7001"
            async with http.post(url, data=body) as r:
                assert r.status == 401
            wrong = SECRET[:-1] + "x"  # a near miss
            async with http.post(url, data=body, headers={SECRET_HEADER: wrong}) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "unauthorized"
            async with http.post(
                f"{base}/tg/7002", data=body, headers={SECRET_HEADER: SECRET}
            ) as r:
                assert r.status == 401  # another bot's secret
            async with http.post(url, data=b"not json", headers={SECRET_HEADER: SECRET}) as r:
                assert r.status == 400
            for _ in range(3):
                async with http.post(url, data=body, headers={SECRET_HEADER: SECRET}) as r:
                    assert r.status == 200
            async with http.post(url, data=body, headers={SECRET_HEADER: SECRET}) as r:
                assert r.status == 429  # the shard holds 3 unhandled: the cap
                assert r.headers["Retry-After"] == "7"
    assert Counter(seen) == {"unauthorized": 3, "bad_request": 1, "accepted": 3, "backlog_full": 1}
    assert ingress.counts["unauthorized"] == 3
    entries: Any = await client.xrange(keys.inbox_key(key_prefix, 7001 % SHARDS))
    assert [e[1][b"u"] for e in entries] == [body] * 3  # stored as received
    assert entries[0][1][b"b"] == b"7001"
    assert not any(SECRET in repr(line) or wrong in repr(line) for line in logs)
    await client.delete(keys.inbox_key(key_prefix, 7001 % SHARDS))
    await client.aclose()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_only_post_to_a_bot_path_reaches_the_ingress(redis_url: str, key_prefix: str) -> None:
    """The ingress checks the path and the method itself, the body cap holds (413,
    counted), and no access line is logged per update."""
    access = logging.getLogger("aiohttp.access")
    lines, level = Lines(), access.level
    access.addHandler(lines)
    access.setLevel(logging.DEBUG)
    client = redis_client(redis_url, 2.0)
    seen: list[str] = []
    ingress = WebhookIngress(
        client,
        key_prefix,
        SHARDS,
        Secrets({7001: SECRET}),
        backlog_max=100,
        retry_after_s=7,
        timeout_s=2.0,
        max_body=1024,
        on_result=seen.append,
    )
    ok = b'{"update_id":6,"message":{"message_id":1,"chat":{"id":9,"type":"private"}}}'
    headers = {SECRET_HEADER: SECRET}
    try:
        async with serving(ingress) as base, aiohttp.ClientSession() as http:
            for path in ("/", "/tg/", "/tg/7001/x", "/tg/-7001", "/tg/7x", "/tg/٧٠٠١", "/x/7001"):
                async with http.post(base + path, data=ok, headers=headers) as r:
                    assert r.status == 404, path
            async with http.get(f"{base}/tg/7001", headers=headers) as r:
                assert r.status == 405 and r.headers["Allow"] == "POST"
            big = b'{"update_id":7,"pad":"' + b"x" * 2048 + b'"}'
            async with http.post(f"{base}/tg/7001", data=big, headers=headers) as r:
                assert r.status == 413
            async with http.post(f"{base}/tg/7001", data=ok, headers=headers) as r:
                assert r.status == 200
        assert Counter(seen) == {"bad_request": 9, "accepted": 1}
        assert lines.records == []
    finally:
        access.removeHandler(lines)
        access.setLevel(level)
        await client.delete(keys.inbox_key(key_prefix, 7001 % SHARDS))
        await client.aclose()


async def test_one_batch_over_several_shards_lands_in_each_stream(
    redis_url: str, key_prefix: str
) -> None:
    """Requests of one loop turn share a script call: each update in its bot's shard
    stream, in arrival order, and the backlog figure per shard from the call's reply."""
    client = redis_client(redis_url, 2.0)
    bots = [8001, 8002, 8003, 8005]  # shards 1, 2, 3, 1
    ingress = WebhookIngress(
        client,
        key_prefix,
        SHARDS,
        Secrets(dict.fromkeys(bots, SECRET)),
        backlog_max=100,
        retry_after_s=7,
        timeout_s=2.0,
    )
    headers = {SECRET_HEADER: SECRET}
    try:
        async with serving(ingress) as base, aiohttp.ClientSession() as http:

            async def post(bot: int, n: int) -> int:
                body = b'{"update_id":%d}' % n
                async with http.post(f"{base}/tg/{bot}", data=body, headers=headers) as r:
                    return r.status

            assert await asyncio.gather(*(post(b, 0) for b in bots)) == [200] * 4  # cached
            rounds = ingress.round_trips
            for n in (1, 2):  # a bot's next update once its last one is answered
                assert await asyncio.gather(*(post(b, n) for b in bots)) == [200] * 4
            assert ingress.round_trips - rounds < 8  # shared calls
        for shard, members in ((1, [8001, 8005]), (2, [8002]), (3, [8003])):
            entries: Any = await client.xrange(keys.inbox_key(key_prefix, shard))
            got = [(int(f[b"b"]), f[b"u"]) for _, f in entries]
            for bot in members:
                assert [u for b, u in got if b == bot] == [
                    b'{"update_id":%d}' % n for n in (0, 1, 2)
                ]
            assert ingress.backlog[shard][0] == 3 * len(members)
            assert all(float(f[b"t"]) > 0 for _, f in entries)
    finally:
        for shard in range(SHARDS):
            await client.delete(keys.inbox_key(key_prefix, shard))
        await client.aclose()
