"""Owners' API keys and encryption key rotation: the CLI as a user runs it (subprocesses),
PostgreSQL as it is stored, and readers (Registry.desired, a running worker) that keep
decrypting while rows move to the new key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bots.telegram.token import BotToken
from config import Settings, load_settings
from emulators.telegram.server import RunningEmulator, open_emulator
from supervisor.registry.bot_records import BotMode
from supervisor.registry.bots import Registry
from supervisor.registry.keyrotation import KeyRotation, _reencrypt
from supervisor.registry.owners import authenticate
from supervisor.registry.tokenbox import TokenBox, TokenDecryptError, key_id_of, open_tokenbox
from supervisor.services import open_registry
from tests.daemon import daemon_env, free_port, start_daemon
from tests.leakcheck import LEAKS

pytestmark = pytest.mark.timeout(180)

ADMIN_KEY = "admin-key-for-rotation-tests-" + "0" * 8


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator() as emu:
        yield emu


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "supervisor.cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    LEAKS.scan(err.decode(errors="replace"), "cli stderr")  # its log lines; stdout is output
    return proc.returncode, out.decode(), err.decode()


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _raw(key: str) -> bytes:
    return base64.b64decode(key)


async def _rows(settings: Settings) -> list[asyncpg.Record]:
    assert settings.database.url is not None
    conn = await asyncpg.connect(settings.database.url.get_secret_value(), timeout=10)
    try:
        return await conn.fetch(
            "SELECT id, key_id, webhook_key_id FROM bots ORDER BY id", timeout=10
        )
    finally:
        await conn.close(timeout=10)


def _tokens(n: int, base: int = 5_100_000_000) -> list[BotToken]:
    return [BotToken(f"{base + i}:{'A' * 20}{i:015d}") for i in range(n)]


async def test_owners_add_prints_the_key_once_and_the_database_holds_only_its_hash(
    fresh_settings: Callable[..., Settings],
) -> None:
    settings = fresh_settings()
    env = daemon_env(settings, "http://127.0.0.1:9", free_port())
    code, out, err = await cli(env, "owners", "add", "alice")
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("bvo_") and out.count(key) == 1 and key not in err

    code, out2, err2 = await cli(env, "owners", "list")
    assert code == 0 and "alice" in out2 and key not in out2 + err2
    code, _, err3 = await cli(env, "owners", "add", "alice")
    assert code != 0 and "already exists" in err3

    assert settings.database.url is not None
    conn = await asyncpg.connect(settings.database.url.get_secret_value(), timeout=10)
    try:
        row = await conn.fetchrow("SELECT * FROM owners WHERE name = 'alice'", timeout=10)
    finally:
        await conn.close(timeout=10)
    assert row is not None
    secret = key.split("_", 2)[2]  # bvo_<owner id>_<secret>
    assert bytes(row["api_key_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert all(secret not in str(v) for v in row.values())
    async with open_registry(settings) as registry:
        caller = await authenticate(registry, settings, key)
        assert caller is not None and caller.owner_id == row["id"] and not caller.admin
        assert await authenticate(registry, settings, key[:-1] + "x") is None


async def test_keys_rotate_generate_moves_every_row_and_an_open_registry_still_decrypts(
    fresh_settings: Callable[..., Settings],
) -> None:
    settings = fresh_settings()  # no configured key: the state dir's key file
    tokens = _tokens(23)
    async with open_registry(settings) as worker_view:  # opened before the rotation
        old_id = worker_view._box.key_id
        assert await worker_view.add_many([(t, "") for t in tokens]) == 23
        hooked = [t.bot_id for t in tokens[3:5]]
        for bot_id in hooked:
            await worker_view.update(bot_id, mode=BotMode.WEBHOOK)
        secrets = await worker_view.webhook_secrets(hooked)
        env = daemon_env(settings, "http://127.0.0.1:9", free_port())

        code, out, err = await cli(env, "keys", "rotate", "--generate", "--batch", "5")
        assert code == 0, err
        keyring = (Path(settings.state.dir) / "encryption.key").read_text().split()
        new_id = key_id_of(_raw(keyring[0]))
        assert len(keyring) == 2 and key_id_of(_raw(keyring[1])) == old_id
        assert f"key {new_id}: re-encrypted 23 bot token(s), 0 already under it" in out
        assert "2 webhook secret(s) re-encrypted" in out
        rows = await _rows(settings)
        assert {r["key_id"] for r in rows} == {new_id}
        assert {r["webhook_key_id"] for r in rows if r["id"] in hooked} == {new_id}
        # the ingress's lookup still opens them, to the same values
        assert await worker_view.webhook_secrets(hooked) == secrets and len(secrets) == 2

        desired = await worker_view.desired(range(64), 64)
        assert worker_view.undecryptable == []
        assert sorted(s.token.reveal() for s in desired.values()) == sorted(
            t.reveal() for t in tokens
        )
        assert worker_view._box.key_id == new_id  # it followed the file

    code, out, err = await cli(env, "keys", "rotate")
    assert code == 0 and "re-encrypted 0 bot token(s), 23 already under it" in out


async def test_configured_keys_rotate_and_both_keyrings_read_the_rows_meanwhile(
    fresh_settings: Callable[..., Settings],
) -> None:
    old, new = _key(), _key()
    before = fresh_settings(security={"encryption_key": old})
    during = fresh_settings(security={"encryption_key": new, "previous_keys": [old]})
    only_new = fresh_settings(security={"encryption_key": new})
    tokens = _tokens(10)
    ids = [t.bot_id for t in tokens]
    async with open_registry(before) as registry:
        await registry.add_many([(t, "") for t in tokens[:6]])
        for i in (0, 1):  # token and secret under the old key
            await registry.update(ids[i], mode=BotMode.WEBHOOK)
        registry.use_tokenbox(open_tokenbox(during))  # what a reload does
        await registry.add_many([(t, "") for t in tokens[6:]])  # under the new key
        await registry.update(ids[7], mode=BotMode.WEBHOOK)  # both under the new key
        registry.use_tokenbox(open_tokenbox(before))
        await registry.update(ids[6], mode=BotMode.WEBHOOK)  # new-key token, old-key secret
        registry.use_tokenbox(open_tokenbox(during))
        assert len(await registry.desired(range(64), 64)) == 10
        secrets = await registry.webhook_secrets(ids)
        assert sorted(secrets) == [ids[0], ids[1], ids[6], ids[7]]

        env = daemon_env(during, "http://127.0.0.1:9", free_port())
        env["BOTVISOR_SECURITY__PREVIOUS_KEYS"] = old  # comma-separated form
        code, out, err = await cli(env, "keys", "rotate", "--batch", "4")
        assert code == 0, err
        assert f"key {key_id_of(_raw(new))}: re-encrypted 6 bot token(s), 4 already" in out
        assert "3 webhook secret(s) re-encrypted" in out  # 0, 1 and 6
        registry.use_tokenbox(open_tokenbox(only_new))
        assert len(await registry.desired(range(64), 64)) == 10
        # with the old key gone, every webhook bot's secret still verifies, unchanged
        assert await registry.webhook_secrets(ids) == secrets
        registry.use_tokenbox(open_tokenbox(before))
        assert await registry.desired(range(64), 64) == {}
        assert sorted(registry.undecryptable) == [t.bot_id for t in tokens]
        assert await registry.webhook_secrets(ids) == {}

    code, _, err = await cli(env, "keys", "rotate", "--generate")
    assert code != 0 and "security.encryption_key is set" in err


async def test_a_row_changed_between_read_and_write_is_left_alone(
    fresh_settings: Callable[..., Settings],
) -> None:
    old, new = _key(), _key()
    settings = fresh_settings(security={"encryption_key": old})
    tokens = _tokens(3)
    async with open_registry(settings) as registry:
        await registry.add_many([(t, "") for t in tokens])
        await registry.update(tokens[2].bot_id, mode=BotMode.WEBHOOK)
        pool = registry._pool
        rows = await pool.fetch(
            "SELECT id, key_id, token_encrypted, webhook_key_id, webhook_secret FROM bots"
            " ORDER BY id"
        )
        await registry.remove(tokens[1].bot_id)  # someone re-registers it meanwhile
        await registry.add(tokens[1])
        await registry.update(tokens[2].bot_id, mode=BotMode.WEBHOOK)  # a new secret meanwhile
        fresh = await registry.webhook_secrets([tokens[2].bot_id])
        box = TokenBox(_raw(new), [_raw(old)])
        report = KeyRotation(box.key_id)
        await _reencrypt(pool, box, 10.0, rows, report)
        assert await registry.webhook_secrets([tokens[2].bot_id]) == fresh  # not overwritten
    assert (report.reencrypted, report.secrets_reencrypted, report.changed) == (1, 0, 2)
    ids = {r["id"]: r["key_id"] for r in await _rows(settings)}
    assert ids[tokens[1].bot_id] == ids[tokens[2].bot_id] == key_id_of(_raw(old))
    assert ids[tokens[0].bot_id] == key_id_of(_raw(new))


def test_a_token_under_a_key_not_in_the_keyring_says_which_key_to_add() -> None:
    token = _tokens(1)[0]
    old = TokenBox(_raw(_key()))
    key_id, blob = old.seal(token)
    with pytest.raises(TokenDecryptError, match=f"under key {key_id}.*previous_keys"):
        TokenBox(_raw(_key())).decrypt(token.bot_id, blob, key_id)
    assert TokenBox(_raw(_key()), [_raw(_key())]).key_ids != ()


@pytest.mark.parametrize("form", ["{a},{b}", '["{a}", "{b}"]'])
def test_previous_keys_come_from_the_environment_as_a_list(form: str, tmp_path: Path) -> None:
    a, b = _key(), _key()
    config = tmp_path / "empty.toml"
    config.write_text("")
    settings = load_settings(
        config, environ={"BOTVISOR_SECURITY__PREVIOUS_KEYS": form.format(a=a, b=b)}
    )
    assert [k.get_secret_value() for k in settings.security.previous_keys] == [a, b]
    assert settings.to_json_dict()["security"]["previous_keys"] == [a, b]
    assert a not in repr(settings)


async def test_a_running_daemon_keeps_its_bots_through_keys_rotate_generate(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator, tmp_path: Path
) -> None:
    settings = fresh_settings(security={"admin_key": ADMIN_KEY}, workers={"count": 2})
    env = daemon_env(settings, emulator.base_url, free_port())
    bots = emulator.state.create_bots(6)
    async with open_registry(settings) as registry:
        await registry.add_many([(BotToken(b.token), b.username) for b in bots])
    async with start_daemon(settings, emulator.base_url, tmp_path) as daemon:
        await daemon.wait_status(lambda s: sum(w["bots_running"] for w in s["workers"]) == 6)
        code, out, err = await cli(env, "keys", "rotate", "--generate")
        assert code == 0 and "re-encrypted 6 bot token(s)" in out, err
        # A bot registered now is encrypted by the master under the new key; its polling
        # proves a worker reconciled after the rotation and decrypts new-key rows.
        late = emulator.state.create_bots(1)[0]
        async with daemon.session.post(
            daemon.http + "/v1/bots",
            json={"token": late.token},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            assert resp.status == 201
        async with asyncio.timeout(5):
            await emulator.state.wait_polling(late.id)
        status = await daemon.wait_status(
            lambda s: (
                sum(w["bots_desired"] for w in s["workers"]) == 7
                and sum(w["bots_running"] for w in s["workers"]) == 7
            )
        )
        assert status["ready"], status
        for b in bots:
            assert emulator.state.bots[b.id].polling_now
    assert len({r["key_id"] for r in await _rows(settings)}) == 1
    assert "token_undecryptable" not in daemon.log_text()


async def test_registry_helpers_keep_their_old_signatures(
    fresh_settings: Callable[..., Settings],
) -> None:
    settings = fresh_settings()
    async with open_registry(settings) as registry:
        assert isinstance(registry, Registry)
        token = _tokens(1)[0]
        record = await registry.add(token)
        assert await registry.get(record.id) == record
        assert await registry.get(record.id, owner_id=12345) is None
        assert not await registry.remove(record.id, owner_id=12345)
        assert await registry.remove(record.id)


async def test_cli_bots_add_owner_and_update_go_through_the_shared_service(
    fresh_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    settings = fresh_settings()
    env = daemon_env(settings, emulator.base_url, free_port())
    bot = emulator.state.create_bots(1)[0]
    assert (await cli(env, "owners", "add", "carol"))[0] == 0
    code, _, err = await cli(env, "bots", "add", "--token", bot.token, "--owner", "nobody")
    assert code != 0 and "no owner named 'nobody'" in err
    code, out, err = await cli(
        env,
        "bots",
        "add",
        "--token",
        bot.token,
        "--owner",
        "carol",
        "--set",
        'ratelimit={"per_bot": {"limit": 3}}',
    )
    assert code == 0, err
    code, out, err = await cli(
        env,
        "bots",
        "update",
        str(bot.id),
        *("--set", 'ratelimit={"per_bot": {"limit": 7}}', "--handler", "echo"),
    )
    assert code == 0 and "revision 2" in out, err
    async with open_registry(settings) as registry:
        record = await registry.get(bot.id)
        owners = await registry.owners()
    assert (
        record is not None
        and record.settings == {"ratelimit": {"per_bot": {"limit": 7}}}
        and record.revision == 2
    )
    assert [(o.name, o.bots) for o in owners] == [("carol", 1)]
    assert record.owner_id == owners[0].id
    code, _, err = await cli(env, "bots", "update", "42")
    assert code != 0 and "nothing to change" in err
    code, _, err = await cli(env, "bots", "update", "42", "--handler", "echo")
    assert code != 0 and "bot 42 is not registered" in err
