"""telegram.proxy end to end against a real proxy server (pproxy) and the Bot API emulator:
long polls (our client) and sends (the worker's send pool, and aiohttp's for one-off
clients) through SOCKS5 and HTTP
CONNECT with user:password, wrong credentials, per-bot overrides, and the rules for the
proxy URL in the config and in a bot's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bots.telegram.api import BotApi
from bots.telegram.errors import BotNetworkError
from bots.telegram.net import NetOptions
from bots.telegram.sessions import SessionPool, open_session_pool
from bots.telegram.token import BotToken
from config import Settings
from config.bot_settings import BadBotSettings, check_for, telegram_for
from config.errors import ConfigError
from config.loading import load_settings
from config.proxy import parse_proxy
from config.redact import redact
from emulators.telegram.server import RunningEmulator, open_emulator
from ratelimit import BotLimiter, Limits
from tests.proxies import open_proxy
from tests.tlscerts import make_ca

PASSWORD = "s3cret-proxy-pw"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    config = tmp_path / "botvisor.toml"
    config.write_text("")

    def make(**telegram: Any) -> Settings:
        return load_settings(config, environ={}, overrides={"telegram": telegram})

    return make


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(rate_limits=False) as emu:
        yield emu


def bot_api(
    pool: SessionPool, net: NetOptions, base: str, token: str, *, lean: bool = True
) -> BotApi:
    """`lean`: JSON calls through the send pool, as a worker's bots make them."""
    return BotApi(
        pool.for_net(net),
        base,
        BotToken(token),
        BotLimiter(Limits.telegram_defaults()),
        request_timeout=5,
        max_retries=0,
        net=net,
        sender=pool.sender(base, net) if lean else None,
    )


@pytest.mark.parametrize("lean", [True, False], ids=["send-pool", "aiohttp"])
@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_polls_and_sends_reach_the_emulator_through_the_proxy(
    scheme: str, lean: bool, emulator: RunningEmulator, make_settings: Callable[..., Settings]
) -> None:
    bot = emulator.state.create_bots(1)[0]
    emulator.state.inject([{"bot_id": bot.id, "chat_id": 42, "text": "hi"}])
    async with open_proxy(scheme, user="bv", password=PASSWORD) as proxy:
        settings = make_settings(api_base=emulator.base_url, proxy=proxy.url())
        async with open_session_pool(settings) as pool:
            assert pool.default_net.proxy is not None
            api = bot_api(pool, pool.default_net, emulator.base_url, bot.token, lean=lean)
            updates = await api.poll({"timeout": 0}, timeout=5)
            assert [u["message"]["text"] for u in updates] == ["hi"]
            sent = await api.send_message(42, "hello through the proxy")
            assert sent["text"] == "hello through the proxy"
            api.close_poll()
        # one tunnel for the poll's own connection, one for the pool's
        assert proxy.tunnels == 2
    sent_log = emulator.state.sent_log(bot.id)
    assert sent_log is not None
    assert [m["text"] for m in sent_log] == ["hello through the proxy"]


async def test_a_wrong_password_is_a_clear_error_naming_the_proxy_without_its_password(
    emulator: RunningEmulator,
) -> None:
    bot = emulator.state.create_bots(1)[0]
    async with open_proxy("socks5", user="bv", password=PASSWORD) as proxy:
        net = NetOptions(parse_proxy(proxy.url("wrong-password-123")), connect_timeout_s=5)
        async with open_session_pool(_plain_settings()) as pool:
            api = bot_api(pool, net, emulator.base_url, bot.token)
            with pytest.raises(BotNetworkError) as polled:
                await api.poll({"timeout": 0}, timeout=5)
            with pytest.raises(BotNetworkError) as sent:
                await api.call("getMe")
    shown = f"socks5://bv:***@127.0.0.1:{proxy.port}"
    for err in (polled.value, sent.value):
        assert shown in str(err)
        assert "wrong-password-123" not in str(err) and PASSWORD not in str(err)
    assert emulator.state.get_me_total == 0  # nothing got through


async def test_an_http_proxy_answering_407_says_so(emulator: RunningEmulator) -> None:
    bot = emulator.state.create_bots(1)[0]
    async with open_proxy("http", user="bv", password=PASSWORD) as proxy:
        net = NetOptions(parse_proxy(proxy.url("nope-nope-nope")))
        async with open_session_pool(_plain_settings()) as pool:
            api = bot_api(pool, net, emulator.base_url, bot.token)
            with pytest.raises(BotNetworkError, match="407") as err:
                await api.poll({"timeout": 0}, timeout=5)
    assert f"http://bv:***@127.0.0.1:{proxy.port}" in str(err.value)


async def test_tls_to_the_bot_api_inside_a_socks5_tunnel_is_verified(
    tmp_path: Path,
) -> None:
    import asyncio

    ca = make_ca(tmp_path)
    body = b'{"ok":true,"result":[]}'

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        await r.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await w.drain()
        w.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ca.server_context())
    port = srv.sockets[0].getsockname()[1]
    async with srv, open_proxy("socks5", user="bv", password=PASSWORD) as proxy:
        net = NetOptions(parse_proxy(proxy.url()), tls_ca_file=ca.ca_file)
        async with open_session_pool(_plain_settings()) as pool:
            api = bot_api(pool, net, f"https://localhost:{port}", "1:" + "A" * 35)
            assert await api.poll({}, timeout=5) == []
            assert await api.call("getMe") == []  # a send's own tunnel, verified too
            api.close_poll()
            untrusted = bot_api(
                pool, NetOptions(net.proxy), f"https://localhost:{port}", "1:" + "A" * 35
            )
            with pytest.raises(BotNetworkError):
                await untrusted.poll({}, timeout=5)
            with pytest.raises(BotNetworkError):
                await untrusted.call("getMe")


def _plain_settings() -> Settings:
    return Settings()


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h:1", "not one of http://, https://, socks5://"),
        ("socks5://h", "needs a port"),
        ("socks5://:pw@h:1", "needs a user name"),
        ("http://h:1/path", "only scheme, credentials, host and port"),
        ("socks5://u:pw@:1", "no proxy host"),
    ],
)
def test_bad_proxy_urls_fail_at_load_naming_the_key(
    url: str, message: str, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(proxy=url)
    assert "telegram.proxy" in str(err.value) and message in str(err.value)


def test_the_proxy_password_is_masked_in_logs_and_reprs(
    make_settings: Callable[..., Settings],
) -> None:
    url = f"socks5://bv:{PASSWORD}@127.0.0.1:1080"
    settings = make_settings(proxy=url)
    proxy = parse_proxy(url)
    assert PASSWORD not in repr(proxy) and PASSWORD not in proxy.shown
    assert PASSWORD not in repr(settings.telegram)
    assert PASSWORD not in redact(f"connecting via {url}")


def test_a_bot_may_name_its_own_proxy_and_api_base_or_none(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(proxy="http://10.0.0.1:3128")
    assert telegram_for(settings, {}).proxy == parse_proxy("http://10.0.0.1:3128")
    own = telegram_for(
        settings,
        {"telegram": {"proxy": "socks5://a:b@p:1080", "api_base": "http://127.0.0.1:8081/"}},
    )
    assert own.proxy == parse_proxy("socks5://a:b@p:1080")
    assert own.api_base == "http://127.0.0.1:8081"
    assert telegram_for(settings, {"telegram": {"proxy": None}}).proxy is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"telegram": "socks5://h:1"}, "settings.telegram: expected an object"),
        ({"telegram": {"proxy": "gopher://h:1"}}, "settings.telegram.proxy: scheme"),
        ({"telegram": {"proxy": 5}}, "settings.telegram.proxy: expected a URL"),
        ({"telegram": {"api_base": "api.telegram.org"}}, "settings.telegram.api_base"),
        ({"telegram": {"timeout": 1}}, "settings.telegram.timeout: unknown key"),
    ],
)
def test_bad_per_bot_telegram_settings_are_refused_before_storing(
    value: dict[str, Any], message: str, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(BadBotSettings, match=message.replace(".", r"\.")):
        check_for(make_settings(), value)


async def test_bots_sharing_a_proxy_share_one_pool(make_settings: Callable[..., Settings]) -> None:
    from supervisor.worker.fleet import Fleet

    async def never(_bot_id: int, _reason: str) -> None:
        raise AssertionError("no bot is disabled here")

    settings = make_settings()
    async with open_session_pool(settings) as pool:
        fleet = Fleet(settings, pool, never)
        direct = fleet._net_for(telegram_for(settings, {}))
        a = fleet._net_for(telegram_for(settings, {"telegram": {"proxy": "socks5://h:1"}}))
        b = fleet._net_for(telegram_for(settings, {"telegram": {"proxy": "socks5://h:1"}}))
        assert direct[1] is pool.default
        assert a[0] is b[0] and a[1] is b[1] and a[1] is not pool.default
        base = settings.telegram.api_base
        assert pool.sender(base, a[0]) is pool.sender(base + "/", b[0])
        assert pool.sender(base, a[0]) is not pool.sender(base, direct[0])
        assert pool.sender("http://127.0.0.1:8081", a[0]) is not pool.sender(base, a[0])


def test_a_bots_proxy_password_is_shown_masked_and_kept_on_write_back() -> None:
    from config.bot_settings import keep_hidden, shown

    stored = {"telegram": {"proxy": f"socks5://bv:{PASSWORD}@p:1080"}, "x": 1}
    seen = shown(stored)
    assert seen == {"telegram": {"proxy": "socks5://bv:***@p:1080"}, "x": 1}
    assert keep_hidden({**seen, "x": 2}, stored) == {**stored, "x": 2}
    changed = {"telegram": {"proxy": "socks5://bv:new-password@p:1080"}}
    assert keep_hidden(changed, stored) == changed


def test_a_change_of_a_bots_proxy_or_api_base_restarts_it_other_settings_retune() -> None:
    from bots.actor.spec import BotSpec
    from supervisor.worker.plan import plan_changes

    token = BotToken("7:" + "A" * 35)
    running = {7: BotSpec(7, token, "echo", {"ratelimit": None}, 1)}
    moved = {7: BotSpec(7, token, "echo", {"telegram": {"api_base": "http://h:1"}}, 2)}
    retuned = {7: BotSpec(7, token, "echo", {"ratelimit": {"per_bot": {"limit": 9}}}, 2)}
    assert [s.bot_id for s in plan_changes(moved, running).restart] == [7]
    assert [s.bot_id for s in plan_changes(retuned, running).retune] == [7]


async def test_an_https_proxy_is_reached_over_verified_tls(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path)
    bot = emulator.state.create_bots(1)[0]
    cert = (ca.cert_file, ca.key_file)
    async with open_proxy("https", user="bv", password=PASSWORD, cert=cert) as proxy:
        net = NetOptions(parse_proxy(proxy.url()), tls_ca_file=ca.ca_file)
        async with open_session_pool(_plain_settings()) as pool:
            api = bot_api(pool, net, emulator.base_url, bot.token)
            assert await api.poll({"timeout": 0}, timeout=5) == []
            assert (await api.call("getMe"))["id"] == bot.id
            api.close_poll()
            # the proxy's certificate is checked like the Bot API's
            untrusted = bot_api(pool, NetOptions(net.proxy), emulator.base_url, bot.token)
            with pytest.raises(BotNetworkError, match="CERTIFICATE_VERIFY_FAILED|SSL"):
                await untrusted.poll({"timeout": 0}, timeout=5)
        assert proxy.tunnels == 2
