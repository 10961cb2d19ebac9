"""The egress policy: NO_PROXY rules, where each setting comes from, proxy URLs and TLS files
(tables); then whole gateways whose every outbound call goes through a real forward proxy."""

from __future__ import annotations

import re
import ssl

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from proxy.config import ConfigError, ProviderTLS, decode, load
from proxy.config import Egress as Settings
from proxy.net import egress, netguard
from proxy.net.egress import Egress, NoProxy, Override, Proxy
from proxy.pipeline.auth import digest
from proxy.pipeline.verify import PATH as VERIFY_PATH
from tests.conftest import ADMIN_KEY, PROVIDER_KEY
from tests.fakes.castai import FakeCastAI
from tests.fakes.forward_proxy import ForwardProxy, Hosts
from tests.fakes.openai import FakeOpenAI
from tests.fakes.tls import TestCA, TLSServer
from tests.telemetry.helpers import until

# -- NO_PROXY, as curl and Go read it ---------------------------------------------------------
NO_PROXY_MATRIX = [
    # entries, host, port, direct?
    (["*"], "api.openai.com", 443, True),
    (["example.com"], "example.com", 443, True),
    (["example.com"], "api.example.com", 443, True),
    (["example.com"], "notexample.com", 443, False),  # a label boundary, not a string suffix
    ([".example.com"], "example.com", 443, True),  # a leading dot: the same rule (curl)
    ([".example.com"], "a.b.example.com", 443, True),
    (["*.example.com"], "a.example.com", 443, True),
    (["Example.COM."], "API.example.com.", 443, True),  # case and the root dot do not matter
    (["example.com:8443"], "api.example.com", 8443, True),
    (["example.com:8443"], "api.example.com", 443, False),
    (["10.1.2.3"], "10.1.2.3", 443, True),
    (["10.1.2.3"], "10.1.2.4", 443, False),
    (["10.0.0.0/8"], "10.200.3.4", 443, True),
    (["10.0.0.0/8"], "11.0.0.1", 443, False),
    (["10.0.0.0/8"], "ten.example", 443, False),  # names are not resolved to decide
    (["10.1.2.3:80"], "10.1.2.3", 443, False),
    (["[2001:db8::1]"], "2001:db8::1", 443, True),
    (["[2001:db8::1]:8443"], "[2001:db8::1]", 8443, True),
    (["2001:db8::/32"], "2001:db8:5::9", 443, True),
    (["", " ", "other.org"], "example.com", 443, False),
    ([], "example.com", 443, False),
]


@pytest.mark.parametrize(("entries", "host", "port", "direct"), NO_PROXY_MATRIX)
def test_no_proxy_matrix(entries, host, port, direct):
    assert NoProxy(entries).matches(host, port) is direct


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "a.localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]"])
def test_loopback_is_never_proxied(host):
    policy = Egress(None, {"HTTPS_PROXY": "http://proxy.corp:3128"}).default
    assert policy.proxy_for("https", host, 443) is None
    assert policy.proxy_for("https", "api.example.com", 443) is not None


# -- where each setting comes from --------------------------------------------------------------
P_ENV, P_LOWER, P_CFG, P_ITEM = ("http://env:1", "http://lower:1", "http://cfg:1", "http://item:1")
SOURCES = [
    # env, config proxy, item proxy, scheme, the proxy used (None: direct)
    ({"HTTPS_PROXY": P_ENV}, None, None, "https", P_ENV),
    ({"HTTPS_PROXY": P_ENV}, None, None, "http", None),  # HTTPS_PROXY is for https URLs only
    ({"HTTP_PROXY": P_ENV}, None, None, "http", P_ENV),
    ({"HTTPS_PROXY": P_ENV, "https_proxy": P_LOWER}, None, None, "https", P_LOWER),  # lowercase wins
    ({"HTTPS_PROXY": P_ENV, "https_proxy": ""}, None, None, "https", None),  # even when empty
    ({"HTTPS_PROXY": P_ENV}, P_CFG, None, "https", P_CFG),  # the config over the environment
    ({"HTTPS_PROXY": P_ENV}, P_CFG, None, "http", P_CFG),  # for both schemes
    ({"HTTPS_PROXY": P_ENV}, "", None, "https", None),  # the config's "" is direct
    ({"HTTPS_PROXY": P_ENV}, P_CFG, P_ITEM, "https", P_ITEM),  # the provider over both
    ({"HTTPS_PROXY": P_ENV}, P_CFG, "", "https", None),  # the provider's "" is direct
    ({}, None, None, "https", None),
]


@pytest.mark.parametrize(("env", "configured", "item", "scheme", "used"), SOURCES)
def test_provider_over_config_over_environment(env, configured, item, scheme, used):
    policy = Egress(Settings(proxy=configured), env).policy(Override(item, None, None))
    proxy = policy.proxy_for(scheme, "api.example.com", 443)
    assert (proxy.url if proxy else None) == used


def test_no_proxy_comes_from_the_first_source_that_sets_it():
    env = {"HTTPS_PROXY": P_ENV, "no_proxy": "a.example", "NO_PROXY": "b.example"}
    default = Egress(None, env).default
    assert default.proxy_for("https", "a.example", 443) is None  # lowercase no_proxy wins
    assert default.proxy_for("https", "b.example", 443) is not None
    configured = Egress(Settings(no_proxy=("c.example",)), env)
    assert configured.default.proxy_for("https", "a.example", 443) is not None
    assert configured.default.proxy_for("https", "c.example", 443) is None
    item = configured.policy(Override(None, ("d.example",), None))
    assert item.proxy_for("https", "c.example", 443) is not None and item.proxy_for("https", "d.example", 443) is None


# -- proxy URLs ---------------------------------------------------------------------------------
def test_a_proxy_url_is_parsed_its_credentials_decoded_and_masked():
    proxy = Proxy("http://us%20er:p%40ss%3Aword@proxy.corp:3128")
    assert (proxy.host, proxy.port, proxy.user, proxy.password) == ("proxy.corp", 3128, "us er", "p@ss:word")
    assert proxy.auth_line == "Proxy-Authorization: Basic dXMgZXI6cEBzczp3b3Jk\r\n"  # base64 of "us er:p@ss:word"
    assert proxy.shown == "http://us%20er:****@proxy.corp:3128" and "p%40ss" not in repr(proxy)
    assert proxy.connect_head("2001:db8::1", 443) == (b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"
                                                      b"Host: [2001:db8::1]:443\r\n" + proxy.auth_line.encode() + b"\r\n")
    assert Proxy("proxy.corp:3128").url == "http://proxy.corp:3128"  # no scheme: http, as curl
    assert Proxy("http://proxy.corp").port == 80
    assert egress.mask("http://u:secret@h:1") == "http://u:****@h:1" and egress.mask("::bad::") == "****"


@pytest.mark.parametrize("url", ["https://proxy.corp:443", "socks5://proxy.corp:1080", "http://proxy.corp/path",
                                 "http://:3128", "http://proxy.corp:99999"])
def test_proxy_urls_that_cannot_be_used_are_refused(url):
    with pytest.raises(ValueError):
        Proxy(url)


def test_bad_egress_settings_are_config_errors(tmp_path):
    for doc, said in [(b"egress: {proxy: 'ftp://x'}", "$.egress: must be an http:// proxy URL"),
                      (b"egress: {keyFile: /k.pem}", "$.egress: keyFile is given without certFile")]:
        with pytest.raises(ConfigError, match=re.escape(said)):
            decode(doc)
    file = tmp_path / "config.yaml"
    file.write_bytes(b"egress: {caFile: /no/such.pem}")
    decode(file.read_bytes())  # a config made elsewhere may name a file that exists only where it runs…
    with pytest.raises(ConfigError, match=re.escape("$.egress: the TLS files cannot be loaded")):
        load(str(file), env={})  # …where it runs, it must


def test_a_proxy_variable_the_gateway_cannot_use_is_a_config_error_naming_it(tmp_path):
    # It was read only when the upstream client started: a ValueError with a traceback, naming no variable.
    file = tmp_path / "config.yaml"
    file.write_bytes(b"{}")
    for env, said in [({"HTTPS_PROXY": "socks5://u:pw@proxy.corp:1080"}, "env HTTPS_PROXY: must be an http://"),
                      ({"http_proxy": "https://proxy.corp:443"}, "env http_proxy: must be an http://")]:
        with pytest.raises(ConfigError, match=re.escape(said)) as caught:
            load(str(file), env=env)
        assert "pw" not in str(caught.value)
    file.write_bytes(b"egress: {proxy: 'http://proxy.corp:3128'}")  # the config's proxy wins: the env is not used
    assert load(str(file), env={"HTTPS_PROXY": "socks5://proxy.corp:1080"}).egress.proxy == "http://proxy.corp:3128"


def test_calls_without_a_provider_get_aiohttp_options_from_the_same_rules():
    proxy = "http://ops:pw@proxy.corp:3128"
    assert egress.options(Settings(proxy=proxy), "http://castai.example/x") == {"proxy": proxy, "ssl": None}
    assert egress.options(Settings(proxy=proxy, no_proxy=("castai.example",)), "http://castai.example/x")["proxy"] \
        is None
    assert egress.options(Settings(proxy=proxy), "http://127.0.0.1:9/x")["proxy"] is None


# -- TLS files ----------------------------------------------------------------------------------
def test_a_ca_file_is_added_to_the_system_trust_not_put_in_its_place(tmp_path):
    ca = TestCA(tmp_path)
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert egress.tls_context(ca.file, None, None).cert_store_stats()["x509_ca"] == system + 1
    assert Egress(Settings(ca_file=ca.file), {}).default.ssl is egress.tls_context(ca.file, None, None)  # shared
    assert Egress(None, {}).default.ssl is None  # nothing configured: the client's default context


def test_provider_tls_files_override_the_config_ones(tmp_path):
    ca, other = TestCA(tmp_path, "A"), TestCA(tmp_path, "B")
    cert, key = ca.issue("client", client=True)
    settings = Settings(ca_file=ca.file, cert_file=cert, key_file=key)
    policy = Egress(settings, {}).policy(Override(None, None, ProviderTLS(ca_file=other.file, server_name="x.y")))
    assert policy.ssl is egress.tls_context(other.file, cert, key) and policy.server_name == "x.y"


# -- whole gateways through a real proxy ----------------------------------------------------------
API, CASTAI, OTEL = "api.origin.test", "castai.origin.test", "otel.origin.test"
CASTAI_KEY, CALLER = "castai-key-egress-0001", "caller-key-egress-0001"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def world(tmp_path):
    """A proxy that knows the origins' names, an OpenAI origin over TLS with a private CA, and a
    Cast AI API (ingest, heartbeat, key verification) over plain HTTP."""
    ca = TestCA(tmp_path)
    proxy = await ForwardProxy(hosts=(API, CASTAI, OTEL)).start()
    openai = FakeOpenAI()
    origin = await TLSServer(openai.app, ca.server_context((API,))).start()
    castai = FakeCastAI(api_key=CASTAI_KEY)
    verified = []

    async def verify(request: web.Request) -> web.Response:
        verified.append(request.headers.get("X-API-Key"))
        return web.json_response({"organizationId": "org-egress"})

    castai.app.router.add_post(VERIFY_PATH, verify)
    await castai.start()
    world = type("World", (), {"ca": ca, "proxy": proxy, "openai": openai, "origin": origin, "castai": castai,
                               "verified": verified})
    yield world
    await castai.close()
    await origin.stop()
    await proxy.stop()


def _config(world, **extra) -> dict:
    provider = {"name": "corp", "supportedProvider": "OPENAI_COMPATIBLE", "apiKey": PROVIDER_KEY,
                "url": f"https://{API}:{world.origin.port}/v1", "models": ["gpt-4o-mini"]}
    return {"providers": [{**provider, **extra.pop("provider", {})}], "egress": {"caFile": world.ca.file},
            "castai": {"apiKey": CASTAI_KEY, "apiUrl": f"http://{CASTAI}:{world.castai.port}", "clusterId": "c1"},
            "auth": {"castaiVerification": True, "adminKey": ADMIN_KEY},
            "telemetry": {"flushMs": 20, "otlpHeaders": {"X-API-Key": CASTAI_KEY},
                          "otlpUrl": f"http://{OTEL}:{world.castai.port}/ai-optimizer/v1beta/logs:ingest"},
            **extra}


def _through(monkeypatch, proxy: str) -> None:
    """HTTPS_PROXY for the provider, HTTP_PROXY for the Cast AI API (plain HTTP here)."""
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy)


async def _chat(gw, stream=False) -> tuple[int, bytes]:
    async with gw.post("/v1/chat/completions", headers={"Authorization": f"Bearer {CALLER}"},
                       json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}) as r:
        return r.status, await r.read()


async def test_https_proxy_alone_sends_every_outbound_call_through_the_proxy(gateway, world, monkeypatch):
    _through(monkeypatch, world.proxy.url())
    gw = await gateway(_config(world))
    for _ in range(3):
        assert (await _chat(gw))[0] == 200
    status, streamed = await _chat(gw, stream=True)
    assert status == 200 and streamed.rstrip().endswith(b"data: [DONE]")
    await until(lambda: len(world.castai.records) >= 8 and world.castai.heartbeats)  # 4 records, to 2 sinks
    lines = world.proxy.lines
    assert lines.count(f"CONNECT {API}:{world.origin.port} HTTP/1.1") == 1  # one tunnel for chat and stream
    port = world.castai.port
    for expected in (f"POST http://{CASTAI}:{port}{VERIFY_PATH} HTTP/1.1",
                     f"POST http://{CASTAI}:{port}/ai-optimizer/v1beta/logs:ingest HTTP/1.1",
                     f"POST http://{CASTAI}:{port}/ai-optimizer/v1beta/components:heartbeat HTTP/1.1",
                     f"POST http://{OTEL}:{port}/ai-optimizer/v1beta/logs:ingest HTTP/1.1"):
        assert expected in lines, (expected, lines)
    assert world.verified == [CALLER] and len(world.openai.requests) == 4


async def test_no_proxy_exempts_exactly_the_listed_targets(gateway, world, monkeypatch):
    _through(monkeypatch, world.proxy.url())
    monkeypatch.setenv("NO_PROXY", f"{API},unrelated.example")
    gw = await gateway(_config(world))
    upstream = gw.gw.upstream
    upstream.client.resolver = netguard.GuardedResolver(gw.gw.registry.private_ok, Hosts(API))
    assert (await _chat(gw))[0] == 200
    assert not world.proxy.connects  # the provider directly
    assert any(line.startswith(f"POST http://{CASTAI}:") for line in world.proxy.lines)  # Cast AI still proxied


async def test_a_provider_with_proxy_empty_goes_direct_and_its_own_proxy_is_masked_when_listed(
        gateway, world, monkeypatch):
    _through(monkeypatch, world.proxy.url())
    gw = await gateway(_config(world, provider={"proxy": ""}))
    gw.gw.upstream.client.resolver = netguard.GuardedResolver(gw.gw.registry.private_ok, Hosts(API))
    assert (await _chat(gw))[0] == 200 and not world.proxy.connects
    item = {"name": "other", "supportedProvider": "OPENAI_COMPATIBLE", "url": "https://other.example/v1",
            "models": ["m"], "proxy": "http://ops:hunter22@127.0.0.1:3128"}
    async with gw.post("/v1/llm/providers", json={"providers": [item]}, headers={"X-API-Key": ADMIN_KEY}) as r:
        assert r.status == 200, await r.text()
        assert "hunter22" not in await r.text()
    async with gw.get("/v1/llm/providers", headers={"X-API-Key": ADMIN_KEY}) as r:
        listed = {p["name"]: p for p in (await r.json())["providers"]}
    assert listed["other"]["proxy"] == "http://ops:****@127.0.0.1:3128"
    rows = gw.gw.registry.table.rows()  # stored sealed, read back whole
    assert b"hunter22" not in b"".join(raw for raw, _ in rows)
    assert gw.gw.registry._load(rows)["other"].item.proxy == item["proxy"]


async def test_a_wrong_proxy_password_is_a_502_naming_the_proxy_one_attempt_per_request(gateway, world, monkeypatch):
    proxy = await ForwardProxy(user="ops", password="right", hosts=(API,)).start()
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url("ops", "wrong-pass-77"))
        gw = await gateway(_config(world, auth={"keys": [{"id": "c", "sha256": digest(CALLER)}]}))
        with capture_logs() as logs:
            for attempt in (1, 2):
                status, body = await _chat(gw)
                text = body.decode()
                assert status == 502 and "407" in text and "wrong-pass-77" not in text
                assert f"http://ops:****@127.0.0.1:{proxy.port}" in text
                assert len(proxy.connects) == attempt  # one CONNECT per request: no retry storm
        assert "wrong-pass-77" not in repr(logs) and any(e["event"] == "upstream_egress_failed" for e in logs)
    finally:
        await proxy.stop()


async def test_without_the_ca_file_the_private_origin_is_refused_by_name(gateway, world, monkeypatch):
    _through(monkeypatch, world.proxy.url())
    config = _config(world)
    del config["egress"]
    gw = await gateway(config)
    status, body = await _chat(gw)
    assert status == 502 and f"{API}:{world.origin.port}" in body.decode()
    assert "certificate not trusted" in body.decode() and not world.openai.requests


