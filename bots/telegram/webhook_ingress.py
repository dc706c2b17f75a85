"""The webhook ingress: one per host (in the master), `POST /tg/{bot_id}` from Telegram.

An update is answered 200 only once it is in the bot's shard stream (ipc/inbox.py, the
same durable inbox polled updates go through), so Telegram keeps retrying anything we
could not queue. A missing or wrong `X-Telegram-Bot-Api-Secret-Token` is a 401 (compared
in constant time, counted, never logged with its value). Redis unavailable: 503; the
shard's backlog over `webhook.backlog_max`: 429; both with Retry-After.

Appends are batched: every request of one loop turn joins one script call (`APPEND`:
the XADDs, then the length of each stream touched, which keeps the backlog figure
fresh), and the body goes into the stream as received — no re-encoding of the update's
JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, Protocol

import orjson
import redis.asyncio as aioredis
import structlog

from bots.telegram.webhook_reply import Reply
from ipc import keys
from ipc.inbox import REDIS_ERRORS

log = structlog.get_logger(__name__)

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
#: a bot's cached secret is looked up again after a mismatch at most this often (a mode
#: switch brings a new secret; a stranger guessing must not cost a query per request)
RELOOKUP_S: Final = 1.0
#: a matching cached secret is trusted this long (a bot switched back to polling or
#: removed stops being accepted within it)
CACHE_S: Final = 60.0
#: a full shard's backlog figure is read again (XLEN) at most this often
BACKLOG_RECHECK_S: Final = 0.5
#: appends per script call at most
BATCH_MAX: Final = 2000
#: KEYS: the shards' streams of a batch; ARGV[1]: the wall time received, then per update
#: its stream (an index into KEYS), bot id and body (as received). Returns the length of
#: each stream after the appends (the backlog figure). Fields as ipc/inbox.py's.
APPEND: Final = """
local t = ARGV[1]
for i = 2, #ARGV, 3 do
    redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'b', ARGV[i + 1], 't', t, 'u', ARGV[i + 2])
end
local lengths = {}
for i = 1, #KEYS do
    lengths[i] = redis.call('XLEN', KEYS[i])
end
return lengths
"""

#: results counted per request (`on_result`)
RESULTS: Final = ("accepted", "unauthorized", "bad_request", "backlog_full", "unavailable")
#: what a refusal's status counts as (every other status: bad_request)
_RESULT_OF: Final = {401: "unauthorized", 429: "backlog_full", 503: "unavailable"}
OK: Final = Reply(200)


class SecretSource(Protocol):
    """The registry (supervisor/registry/bot_queries.py: Registry.webhook_secrets)."""

    async def webhook_secrets(self, bot_ids: Sequence[int]) -> dict[int, str]: ...


class _Pending(NamedTuple):
    shard: int
    bot_id: int
    body: bytes
    future: asyncio.Future[Reply]


class WebhookIngress:
    """Runs in the master's event loop."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        shards_total: int,
        secrets: SecretSource,
        *,
        backlog_max: int,
        retry_after_s: int,
        timeout_s: float,
        max_body: int = 1_048_576,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = redis
        # EVALSHA: the script's text is not sent with every batch
        self._append_script = redis.register_script(APPEND)
        self._prefix = prefix
        self._shards_total = shards_total
        self._secrets = secrets
        self._backlog_max = backlog_max
        self._retry_after = str(retry_after_s)
        self.timeout_s = timeout_s
        self.max_body = max_body
        self._on_result = on_result
        self._refusals: dict[tuple[int, str], Reply] = {}
        not_post = orjson.dumps({"error": {"code": "bad_request", "message": "use POST"}})
        self._not_post = Reply(405, not_post, (("Allow", "POST"),))
        #: bot id -> (secret or None, when looked up)
        self._cache: dict[int, tuple[bytes | None, float]] = {}
        self._lookups: dict[int, asyncio.Future[str | None]] = {}
        self._lookup_task: asyncio.Task[None] | None = None
        #: per shard: unhandled entries (the last XLEN plus what we appended since), and
        #: when XLEN was read
        self.backlog: dict[int, tuple[int, float]] = {}
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._keys = [keys.inbox_key(prefix, s) for s in range(shards_total)]
        self.counts = dict.fromkeys(RESULTS, 0)
        self.round_trips = 0
        self._down_logged = False

    # -- requests -------------------------------------------------------------------------

    def answer(
        self, path: bytes, method: bytes, secret: bytes | None, body: bytes
    ) -> Reply | asyncio.Future[Reply]:
        """A parsed request's answer (bots/telegram/webhook_http.py): at once when the
        bot's secret is cached, else a future — the append's own in the common case."""
        raw_id = path[4:] if path.startswith(b"/tg/") else b""
        # bytes.isdigit is ASCII digits only
        if not raw_id.isdigit() or len(raw_id) > 20:
            return self.refused(404, "no such webhook")
        if method != b"POST":
            self._count("bad_request")
            return self._not_post
        bot_id = int(raw_id)
        if secret is None:
            return self._unauthorized(bot_id, given=False)
        known = self._known_secret(bot_id, secret)
        if known is None:
            return asyncio.ensure_future(self._answer_after_lookup(bot_id, secret, body))
        if not known:
            return self._unauthorized(bot_id, given=True)
        return self._accept(bot_id, body)

    async def _answer_after_lookup(self, bot_id: int, secret: bytes, body: bytes) -> Reply:
        if not await self._authentic(bot_id, secret):
            return self._unauthorized(bot_id, given=True)
        answer = self._accept(bot_id, body)
        return answer if isinstance(answer, Reply) else await answer

    def _accept(self, bot_id: int, body: bytes) -> Reply | asyncio.Future[Reply]:
        try:
            update = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.refused(400, "body: not JSON")
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return self.refused(400, "body: an Update object with an update_id")
        shard = bot_id % self._shards_total
        length, at = self.backlog.get(shard, (0, 0.0))
        if length >= self._backlog_max:
            if time.monotonic() - at >= BACKLOG_RECHECK_S:
                return asyncio.ensure_future(self._accept_if_room(shard, bot_id, body))
            return self._busy()
        return self._append(shard, bot_id, body)

    async def _accept_if_room(self, shard: int, bot_id: int, body: bytes) -> Reply:
        if await self._full(shard):
            return self._busy()
        return await self._append(shard, bot_id, body)

    def _unauthorized(self, bot_id: int, *, given: bool) -> Reply:
        # the value given is never logged: it may be a near miss of the real one
        log.debug("webhook.unauthorized", bot_id=bot_id, header=given)
        return self.refused(401, f"missing or wrong {SECRET_HEADER}")

    def _busy(self) -> Reply:
        return self.refused(429, "this bot's shard is busy; retry later")

    def refused(self, status: int, message: str) -> Reply:
        """A counted refusal, JSON like the Bot API's errors; 429/503 with Retry-After."""
        result = _RESULT_OF.get(status, "bad_request")
        self._count(result)
        reply = self._refusals.get((status, message))
        if reply is None:
            headers = (("Retry-After", self._retry_after),) if status in (429, 503) else ()
            body = orjson.dumps({"error": {"code": result, "message": message}})
            reply = self._refusals[(status, message)] = Reply(status, body, headers)
        return reply

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        if self._on_result is not None:
            self._on_result(result)

    async def _full(self, shard: int) -> bool:
        length, at = self.backlog.get(shard, (0, 0.0))
        if length < self._backlog_max:
            return False
        now = time.monotonic()
        if now - at >= BACKLOG_RECHECK_S:
            # no append reads it while the shard is full: read it here, once per interval
            self.backlog[shard] = (length, now)
            try:
                async with asyncio.timeout(self.timeout_s):
                    length = int(await self._redis.xlen(self._keys[shard]))
            except REDIS_ERRORS:
                return True
            self.backlog[shard] = (length, time.monotonic())
        return length >= self._backlog_max

    # -- secrets --------------------------------------------------------------------------

    def _known_secret(self, bot_id: int, given: bytes) -> bool | None:
        """From the cache: True (it matches), False (refused) or None (look it up)."""
        cached = self._cache.get(bot_id)
        if cached is None:
            return None
        secret, at = cached
        age = time.monotonic() - at
        if age < CACHE_S and secret is not None and hmac.compare_digest(given, secret):
            return True
        return False if age < RELOOKUP_S else None

    async def _authentic(self, bot_id: int, given: bytes) -> bool:
        known = self._known_secret(bot_id, given)
        if known is not None:
            return known
        try:
            found = await self._lookup(bot_id)
        except (OSError, TimeoutError) as exc:
            log.warning("webhook.secret_lookup_failed", error=type(exc).__name__)
            return False
        except Exception as exc:  # noqa: BLE001 - a database error answers 401: Telegram retries
            log.warning("webhook.secret_lookup_failed", error=type(exc).__name__)
            return False
        secret = None if found is None else found.encode()
        self._cache[bot_id] = (secret, time.monotonic())
        return secret is not None and hmac.compare_digest(given, secret)

    def _lookup(self, bot_id: int) -> asyncio.Future[str | None]:
        """Coalesced: every bot looked up in one loop turn shares one query."""
        fut = self._lookups.get(bot_id)
        if fut is None:
            fut = self._lookups[bot_id] = asyncio.get_running_loop().create_future()
            if self._lookup_task is None or self._lookup_task.done():
                self._lookup_task = asyncio.create_task(self._look_up_all(), name="webhook:lookup")
        return fut

    async def _look_up_all(self) -> None:
        await asyncio.sleep(0)
        while self._lookups:  # those asked while a query ran go in the next one
            asked, self._lookups = self._lookups, {}
            try:
                async with asyncio.timeout(self.timeout_s):
                    found = await self._secrets.webhook_secrets(list(asked))
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                for fut in asked.values():
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for bot_id, fut in asked.items():
                if not fut.done():
                    fut.set_result(found.get(bot_id))

    def forget(self, bot_id: int) -> None:
        """Drop a cached secret (tests; a mode change seen by the master)."""
        self._cache.pop(bot_id, None)

    # -- appends --------------------------------------------------------------------------

    def _append(self, shard: int, bot_id: int, body: bytes) -> asyncio.Future[Reply]:
        """Answered by the appender: 200 once in the stream, else 503."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(shard, bot_id, body, fut))
        self._wake.set()
        return fut

    async def run(self) -> None:
        """The appender: everything queued meanwhile goes in one script call."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        # one EVAL: a pipeline of XADDs cost a reply each to parse (redis-py's parser is
        # pure Python), and the lengths come back with it, fresh at every append
        index: dict[int, int] = {}
        args: list[Any] = [b"%.6f" % time.time()]
        for p in batch:
            at = index.get(p.shard)
            if at is None:
                at = index[p.shard] = len(index) + 1
            args += (at, p.bot_id, p.body)
        streams = [self._keys[shard] for shard in index]
        try:
            async with asyncio.timeout(self.timeout_s):
                lengths: list[Any] = await self._append_script(keys=streams, args=args)
        except Exception as exc:  # noqa: BLE001 - any failure answers 503: Telegram retries
            self.round_trips += 1
            if not isinstance(exc, REDIS_ERRORS):
                log.error("webhook.append_error", error=type(exc).__name__, detail=str(exc)[:200])
            if not self._down_logged:
                log.warning("webhook.queue_unavailable", error=type(exc).__name__)
                self._down_logged = True
            for p in batch:
                if not p.future.done():
                    p.future.set_result(self.refused(503, "queue unavailable; retry later"))
            return
        self.round_trips += 1
        if self._down_logged:
            log.info("webhook.queue_available")
            self._down_logged = False
        now = time.monotonic()
        for shard, length in zip(index, lengths, strict=True):
            self.backlog[shard] = (int(length), now)
        for p in batch:
            if not p.future.done():
                self._count("accepted")
                p.future.set_result(OK)
