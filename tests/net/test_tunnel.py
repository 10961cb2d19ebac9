"""The upstream client through a real forward proxy (tests/fakes/forward_proxy.py) and real TLS
origins with a CA made in the test (tests/fakes/tls.py), all on loopback.

The origins are named `*.origin.test`: only the proxy knows them (it sends them to 127.0.0.1),
so a request that reaches one went through the proxy, unless the test gives the client its own
fake DNS (`Hosts`) to go direct.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from proxy.config import Egress as EgressSettings
from proxy.config import ProviderTLS
from proxy.net import httpclient, netguard, tunnel
from proxy.net.egress import Egress, Override, Proxy
from tests.fakes.forward_proxy import ForwardProxy, Hosts
from tests.fakes.tls import TestCA, TLSServer

API = "api.origin.test"


def origin_app(gate: asyncio.Event | None = None) -> web.Application:
    """`/x` answers `{"ok": true}`; `/stream` sends `one`, waits for `gate`, then sends `two`."""
    app = web.Application()
    app.seen = []

    async def x(request: web.Request) -> web.Response:
        app.seen.append((request.method, request.path_qs, await request.read()))
        return web.json_response({"ok": True})

    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"data: one\n\n")
        await asyncio.wait_for(gate.wait(), 5)
        await out.write(b"data: two\n\n")
        await out.write_eof()
        return out

    app.router.add_route("*", "/x", x)
    app.router.add_post("/stream", stream)
    return app


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
async def servers():
    started = []

    async def start(thing):
        started.append(await thing.start())
        return started[-1]

    yield start
    for thing in reversed(started):
        await thing.stop()


@pytest.fixture
async def clients():
    made = []

    def make(env=None, settings=None, resolver=None) -> httpclient.Client:
        made.append(httpclient.Client(resolver or Hosts(), user_agent="t", egress=Egress(settings, env or {})))
        return made[-1]

    yield make
    for client in made:
        await client.close()


async def _call(client, url, body=b"{}", **kwargs) -> tuple[int, bytes]:
    response = await client.request("POST", url, {"Content-Type": "application/json"}, body, connect_timeout=5,
                                    **kwargs)
    parts = []
    while chunk := await response.chunk():
        parts.append(chunk)
    return response.status, b"".join(parts)


async def test_https_goes_through_one_connect_tunnel_reused_across_requests(ca, servers, clients):
    proxy = await servers(ForwardProxy(hosts=(API,)))
    origin = await servers(TLSServer(origin_app(), ca.server_context((API,))))
    resolver = Hosts()  # knows no name: the gateway must not resolve the origin itself
    client = clients({"HTTPS_PROXY": proxy.url()}, EgressSettings(ca_file=ca.file), resolver)
    for _ in range(3):
        assert await _call(client, f"https://{API}:{origin.port}/x") == (200, b'{"ok": true}')
    assert proxy.connects == [f"CONNECT {API}:{origin.port} HTTP/1.1"]  # one tunnel, pooled and reused
    assert proxy.connections == 1 and len(origin.app.seen) == 3 and resolver.asked == []


async def test_a_stream_through_the_tunnel_arrives_as_it_is_sent(ca, servers, clients):
    gate = asyncio.Event()
    proxy = await servers(ForwardProxy(hosts=(API,)))
    origin = await servers(TLSServer(origin_app(gate), ca.server_context((API,))))
    client = clients({"https_proxy": proxy.url()}, EgressSettings(ca_file=ca.file))
    response = await client.request("POST", f"https://{API}:{origin.port}/stream", {}, b"{}", connect_timeout=5)
    first = await asyncio.wait_for(response.chunk(), 5)  # before the origin may send the rest
    assert b"data: one" in first and b"two" not in first
    gate.set()
    rest = b""
    while chunk := await response.chunk():
        rest += chunk
    assert b"data: two" in rest


async def test_http_goes_in_absolute_form_with_percent_decoded_basic_auth(servers, clients):
    plain = "plain.origin.test"
    proxy = await servers(ForwardProxy(user="us er", password="p@ss:w", hosts=(plain,)))

    class Plain:  # a plain HTTP origin
        async def start(self):
            self.runner = web.AppRunner(origin_app())
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            return self

        async def stop(self):
            await self.runner.cleanup()

    origin = await servers(Plain())
    client = clients({"HTTP_PROXY": proxy.url("us%20er", "p%40ss%3Aw")})
    assert await _call(client, f"http://{plain}:{origin.port}/x?a=1", b'{"q": 1}') == (200, b'{"ok": true}')
    assert proxy.lines == [f"POST http://{plain}:{origin.port}/x?a=1 HTTP/1.1"]
    assert proxy.auth == [proxy.expected] and origin.runner.app.seen == [("POST", "/x?a=1", b'{"q": 1}')]


async def test_a_wrong_proxy_password_is_one_egress_failure_naming_the_proxy_masked(ca, servers, clients):
    proxy = await servers(ForwardProxy(user="alice", password="right", hosts=(API,)))
    client = clients({"HTTPS_PROXY": proxy.url("alice", "wrong-secret")})
    with pytest.raises(httpclient.EgressFailed) as failed:
        await _call(client, f"https://{API}:8443/x")
    message = str(failed.value)
    assert f"http://alice:****@127.0.0.1:{proxy.port}" in message and "407" in message
    assert "wrong-secret" not in message and "wrong-secret" not in repr(failed.value.__cause__)
    assert proxy.connections == 1  # one attempt at the proxy, no retry


async def test_http_through_a_proxy_answering_407_is_an_egress_failure_too(servers, clients):
    proxy = await servers(ForwardProxy(user="alice", password="right", hosts=("plain.origin.test",)))
    client = clients({"HTTP_PROXY": proxy.url("alice", "wrong-secret")})
    with pytest.raises(httpclient.EgressFailed, match="407") as failed:
        await _call(client, "http://plain.origin.test:8080/x")
    assert "wrong-secret" not in str(failed.value) and proxy.connections == 1


@pytest.mark.parametrize(("env", "override"), [
    ({"NO_PROXY": "origin.test"}, None),  # a domain suffix
    ({"no_proxy": ".origin.test", "NO_PROXY": ""}, None),  # lowercase wins, leading dot
    ({"NO_PROXY": "*"}, None),
    ({}, Override("", None, None)),  # the provider's `proxy: ""`: direct
    ({}, Override(None, (API,), None)),  # the provider's own noProxy
])
async def test_no_proxy_and_an_empty_provider_proxy_go_direct(ca, servers, clients, env, override):
    proxy = await servers(ForwardProxy(hosts=(API,)))
    origin = await servers(TLSServer(origin_app(), ca.server_context((API,))))
    client = clients({"HTTPS_PROXY": proxy.url(), **env}, EgressSettings(ca_file=ca.file), Hosts(API))
    assert await _call(client, f"https://{API}:{origin.port}/x", egress=override) == (200, b'{"ok": true}')
    assert proxy.connections == 0


async def test_a_provider_proxy_wins_over_the_config_and_the_environment(ca, servers, clients):
    mine, theirs = await servers(ForwardProxy(hosts=(API,))), await servers(ForwardProxy(hosts=(API,)))
    origin = await servers(TLSServer(origin_app(), ca.server_context((API,))))
    client = clients({"HTTPS_PROXY": "http://127.0.0.1:9"}, EgressSettings(proxy=theirs.url(), ca_file=ca.file))
    url = f"https://{API}:{origin.port}/x"
    await _call(client, url)
    await _call(client, url, egress=Override(mine.url(), None, None))
    assert len(theirs.connects) == 1 and len(mine.connects) == 1  # each its own pool


async def test_the_guard_judges_the_origin_before_any_connect(servers, clients):
    proxy = await servers(ForwardProxy())
    client = clients({"HTTPS_PROXY": proxy.url()}, resolver=netguard.GuardedResolver(lambda host: False))
    for host in ("metadata.google.internal", "169.254.169.254", "localhost.", "10.0.0.8"):
        with pytest.raises(httpclient.ConnectFailed):
            await _call(client, f"https://{host}/x")
    assert proxy.connections == 0


async def test_a_proxy_on_a_metadata_address_is_never_connected_to():
    loop = asyncio.get_running_loop()
    with pytest.raises(tunnel.ProxyFailed, match="metadata"):
        await tunnel.open_tunnel(loop, Proxy("http://169.254.169.254:3128"), API, 443)


async def test_the_private_ca_is_trusted_only_with_ca_file(ca, servers, clients):
    proxy = await servers(ForwardProxy(hosts=(API,)))
    origin = await servers(TLSServer(origin_app(), ca.server_context((API,))))
    url = f"https://{API}:{origin.port}/x"
    with pytest.raises(httpclient.EgressFailed, match="certificate not trusted") as failed:
        await _call(clients({"HTTPS_PROXY": proxy.url()}), url)
    assert API in str(failed.value)
    assert await _call(clients({"HTTPS_PROXY": proxy.url()}, EgressSettings(ca_file=ca.file)), url) == \
        (200, b'{"ok": true}')
    direct = clients({}, resolver=Hosts(API))  # direct, too, as before: an unknown issuer is refused
    with pytest.raises(httpclient.EgressFailed, match="certificate not trusted"):
        await _call(direct, url)


async def test_mutual_tls_with_and_without_the_client_certificate(ca, servers, clients, tmp_path):
    cert, key = ca.issue("gateway-client", client=True)
    origin = await servers(TLSServer(origin_app(), ca.server_context((API,), client_ca=ca.file)))
    url = f"https://{API}:{origin.port}/x"
    with_cert = clients({}, EgressSettings(ca_file=ca.file, cert_file=cert, key_file=key), Hosts(API))
    assert await _call(with_cert, url) == (200, b'{"ok": true}')
    assert origin.subjects == ["gateway-client"]
    without = clients({}, EgressSettings(ca_file=ca.file), Hosts(API))
    # TLS 1.3: the origin checks the client's certificate after the client's handshake is done,
    # so its refusal is a close before any answer (the event loop does not pass on the alert).
    with pytest.raises((httpclient.EgressFailed, httpclient.Disconnected)):
        await _call(without, url)
    assert len(origin.app.seen) == 1  # the origin served only the request with the certificate


async def test_a_provider_tls_server_name_is_what_is_verified(ca, servers, clients):
    origin = await servers(TLSServer(origin_app(), ca.server_context(("internal.origin.test",))))
    url = f"https://{API}:{origin.port}/x"
    client = clients({}, EgressSettings(ca_file=ca.file), Hosts(API))
    with pytest.raises(httpclient.EgressFailed, match="certificate not trusted: Hostname mismatch"):
        await _call(client, url)
    override = Override(None, None, ProviderTLS(ca_file=ca.file, server_name="internal.origin.test"))
    assert await _call(client, url, egress=override) == (200, b'{"ok": true}')


async def test_a_provider_tls_file_gone_since_registration_is_an_egress_failure_not_a_crash(ca, clients, tmp_path):
    # Registration checked the file; a restart loads the stored item without it (a volume not mounted).
    gone = str(tmp_path / "rotated-away.pem")
    client = clients({}, None, Hosts(API))
    with pytest.raises(httpclient.EgressFailed, match=f"{API}:8443 cannot be used: No such file"):
        await _call(client, f"https://{API}:8443/x", egress=Override(None, None, ProviderTLS(ca_file=gone)))
