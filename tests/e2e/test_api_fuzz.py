"""Property-based fuzzing of every operation of `GET /v1/openapi.json` on a real daemon.

Schemathesis generates valid (positive) and invalid (negative) requests from the served
document; each is sent under an owner's key or the admin key, and each answer must be
no 5xx, a status, content type and body the document declares. Afterwards the workers
must not have restarted, and the daemon must have logged no unexpected error. 10,000
requests per run (each run draws new ones); BOTVISOR_FUZZ_EXAMPLES=N sends N × 10.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from config import Settings
from emulators.telegram.server import RunningEmulator
from supervisor.embedded.base import state_dir_mode
from supervisor.registry.owners import create_owner
from supervisor.services import open_registry
from tests.daemon import start_daemon
from tests.e2e.admin_rig import ADMIN_KEY

pytestmark = pytest.mark.timeout(600)

#: requests per Hypothesis example, sent by THREADS clients at once
BATCH: Final = 10
EXAMPLES: Final = int(os.environ.get("BOTVISOR_FUZZ_EXAMPLES", "1000"))
THREADS: Final = 6
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class Sender:
    """Sends cases from a few threads, one requests.Session each; counts what came back."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(THREADS)
        self.pending: deque[Future[None]] = deque()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send(self, case: Case, key: str) -> None:
        response = case.call(
            base_url=self.base_url,
            session=self._session(),
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        with self._lock:
            self.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:  # FailureGroup: several checks failed
            who = "admin" if key == ADMIN_KEY else "owner"
            failure = f"{case.method} {case.formatted_path} as {who}: {str(exc)[:600]}"
            with self._lock:
                self.failures.append(failure)

    def send_all(self, items: list[tuple[Case, str]]) -> None:
        """Queue a batch and return: Hypothesis draws the next batch while this one is
        sent (drawing costs about as much as the daemon's answer). At most a few batches
        wait, so a failure still shows up close to the request that caused it."""
        self.pending.extend(self.pool.submit(self.send, case, key) for case, key in items)
        while len(self.pending) > 4 * BATCH:
            self.pending.popleft().result(timeout=120)

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result(timeout=120)


def fuzz(doc_url: str, keys: list[str], bot_ids: list[int], sender: Sender) -> None:
    """Runs in a thread: the test's event loop keeps serving the Bot API emulator.

    Besides ids drawn from the document, every operation on one bot is also aimed at the
    registered bots, so generated settings and chats reach real rows."""
    schema = schemathesis.openapi.from_url(doc_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    strategies = [
        op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode
    ]
    strategies += [
        op.as_strategy(generation_mode=mode, path_parameters={"id": bot_id})
        for op in operations
        if "{id}" in op.path
        for mode in GenerationMode
        for bot_id in bot_ids
    ]
    cases = st.one_of(strategies)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # a failure names its request; shrinking would cost minutes
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.tuples(cases, st.sampled_from(keys)), min_size=BATCH, max_size=BATCH))
    def run(items: list[tuple[Case, str]]) -> None:
        sender.send_all(items)

    run()
    sender.drain()


async def test_every_operation_fuzzed_under_both_keys_gives_no_5xx_and_conforms(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(
        security={"admin_key": ADMIN_KEY, "login_free_failures": 1000},
        workers={"count": 1},
    )
    async with open_registry(settings) as registry:
        _, owner_key = await create_owner(registry, "fuzz")
    tokens = emulator.state.create_bots(3)
    # a state dir the daemon creates itself, private (the one above holds the key file)
    state_dir = tmp_path / "private-state"
    settings = settings.model_copy(
        update={"state": settings.state.model_copy(update={"dir": state_dir})}
    )
    # the malformed-header replay is answered 400 and logged once each (http.bad_request)
    async with start_daemon(
        settings, emulator.base_url, tmp_path, expect_warnings=("http.bad_request",)
    ) as daemon:
        assert stat.S_IMODE(state_dir.stat().st_mode) == state_dir_mode()
        assert state_dir.stat().st_mode & 0o066 == 0  # no one else reads or writes
        # a few real bots, so some generated ids and chats reach existing rows
        session = daemon.session
        for bot, key in zip(tokens, (owner_key, ADMIN_KEY, owner_key), strict=True):
            async with session.post(
                daemon.http + "/v1/bots",
                json={"token": bot.token},
                headers={"Authorization": f"Bearer {key}"},
            ) as r:
                assert r.status == 201, await r.text()
        sender = Sender(daemon.http)
        started = time.monotonic()
        try:
            await asyncio.to_thread(
                fuzz,
                daemon.http + "/v1/openapi.json",
                [owner_key, ADMIN_KEY],
                [bot.id for bot in tokens],
                sender,
            )
        finally:
            sender.pool.shutdown(wait=True)
        took = time.monotonic() - started
        sent = sum(sender.statuses.values())
        print(f"fuzz: {sent} requests in {took:.1f} s; statuses {dict(sender.statuses)}")

        assert not sender.failures, "\n".join(sender.failures[:20])
        assert sent >= EXAMPLES * BATCH
        assert not [s for s in sender.statuses if s >= 500]
        status = await daemon.status()
        assert status["worker_restarts"] == 0
        assert daemon.proc.returncode is None
        # issue 10's first reproduction: a malformed header holding a key
        port = int(daemon.http.rsplit(":", 1)[1])
        for key in (ADMIN_KEY, owner_key):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /v1/bots HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer "
                + key.encode()
                + b"\r\n\r\n"
            )
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            assert b" 400 " in answer.split(b"\r\n")[0] and key.encode() not in answer
    log = daemon.log_text()
    assert "api.unexpected" not in log and "Traceback" not in log
    assert "http.bad_request" in log
    assert ADMIN_KEY not in log and owner_key not in log
