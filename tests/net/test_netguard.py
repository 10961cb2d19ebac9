"""The SSRF guard (RELIABILITY R31, R32): registration and connect-time checks."""

from __future__ import annotations

import asyncio
import socket

import pytest

from proxy.net import httpclient, netguard
from tests.conftest import ADMIN_KEY

ADMIN = {"X-API-Key": ADMIN_KEY}

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data", "http://169.254.169.254:80/v1", "http://metadata.google.internal/v1",
    "http://metadata.goog/v1", "http://METADATA.GOOGLE.INTERNAL./v1", "http://100.100.100.200/v1",
    "http://[fd00:ec2::254]/v1", "http://[::ffff:169.254.169.254]/v1", "http://2852039166/v1",
    "http://0251.0376.0251.0376/v1", "http://0xa9fea9fe/v1", "http://0xA9.0xFE.0xA9.0xFE/v1", "http://169.254.170.2/v2",
    "http://0.0.0.0/v1", "http://[::]/v1", "http://0/v1", "http://api.openai.com@169.254.169.254/",
    "http://user:pw@api.openai.com/v1", "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/",
    "data:text/plain,hi", "javascript:alert(1)", "http://example.com/v1?next=http://169.254.169.254",
    "http://169.254.169.254.nip.io.#/v1", "http://127.1/v1", "http://017700000001/v1", "http://169.254.1.1/v1",
    "http://[fe80::1]/v1",
]
PRIVATE = [
    "http://127.0.0.1:11434/v1", "http://localhost:8000/v1", "http://api.localhost/v1", "http://10.0.0.5/v1",
    "http://172.16.0.1/v1", "http://172.31.255.255/v1", "http://192.168.1.10/v1", "http://100.64.0.1/v1",
    "http://[::1]:8000/v1", "http://[fc00::1]/v1",
    "http://[::ffff:10.0.0.1]/v1", "http://198.18.0.1/v1", "http://[64:ff9b::10.0.0.1]/v1", "http://[fd00::1]/v1",
]


def _item(url: str, hosted: bool) -> dict:
    return {"name": "x", "supportedProvider": "OPENAI_COMPATIBLE", "url": url, "models": ["m"], "isHosted": hosted}


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
async def test_r31_refused_at_registration_even_for_hosted_providers(gateway, url):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}, "security": {"allowPrivateUpstreams": True}})
    async with gw.post("/v1/llm/providers", json={"providers": [_item(url, True)]}, headers=ADMIN) as r:
        assert r.status == 400, url
        assert "providers[0].url" in (await r.json())["error"]["message"]


@pytest.mark.parametrize("url", PRIVATE)
async def test_r31_private_only_for_hosted_or_when_allowed(gateway, url):
    strict = await gateway({"auth": {"adminKey": ADMIN_KEY}, "security": {"allowPrivateUpstreams": False}})
    async with strict.post("/v1/llm/providers", json={"providers": [_item(url, False)]}, headers=ADMIN) as r:
        assert r.status == 400, url
    async with strict.post("/v1/llm/providers", json={"providers": [_item(url, True)]}, headers=ADMIN) as r:
        assert r.status == 200, url
    relaxed = await gateway({"auth": {"adminKey": ADMIN_KEY}, "security": {"allowPrivateUpstreams": True}})
    async with relaxed.post("/v1/llm/providers", json={"providers": [_item(url, False)]}, headers=ADMIN) as r:
        assert r.status == 200, url


def test_corpus_size():
    assert len(ALWAYS_REFUSED) + len(PRIVATE) >= 40


class RecordingResolver:
    """Stands in for DNS: answers with a chosen address and records what was asked."""

    answer = "169.254.169.254"
    asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        RecordingResolver.asked.append(host)
        return [{"hostname": host, "host": RecordingResolver.answer, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]

    async def close(self):
        pass


async def test_r32_dns_rebinding_is_refused_at_connect_time(gateway, monkeypatch):
    monkeypatch.setattr(netguard, "DefaultResolver", RecordingResolver)
    connects = []
    real_connect = socket.socket.connect

    def recording_connect(sock, address):
        connects.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    item = {"name": "public", "supportedProvider": "OPENAI_COMPATIBLE", "url": "http://rebind.example.com/v1",
            "models": ["m"], "apiKey": "sk-x"}
    gw = await gateway({"providers": [item], "security": {"allowPrivateUpstreams": False}})
    for answer in ("169.254.169.254", "10.0.0.7", "127.0.0.1"):
        RecordingResolver.answer = answer
        async with gw.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user"}]}) as r:
            assert r.status == 502
            assert (await r.json())["error"]["code"] == "upstream_error"
    assert "rebind.example.com" in RecordingResolver.asked
    assert not [c for c in connects if c[0] in ("169.254.169.254", "10.0.0.7")]


@pytest.mark.parametrize(("host", "expected"), [("2852039166", "169.254.169.254"), ("0xa9fea9fe", "169.254.169.254"),
                                                ("::ffff:127.0.0.1", "127.0.0.1"), ("example.com", None)])
def test_literal_address(host, expected):
    found = netguard.literal_address(host)
    assert (str(found) if found else None) == expected


# Link-local ranges are metadata ranges (policy 4): cloud metadata and credential services live
# across 169.254.0.0/16 and their IPv6 twins in fe80::/10 and fd00:ec2::/32. Refused always.

LINK_LOCAL = [
    "http://169.254.0.1/v1", "http://169.254.170.23/v1", "http://169.254.255.255:8080/v1", "http://[fe80::a9fe:a9fe]/v1",
    "http://[fe80::1]/v1", "http://[febf:ffff::1]/v1", "http://[fd00:ec2::1]/v1", "http://[::ffff:169.254.0.1]/v1",
    "http://[::ffff:a9fe:aa17]/v1", "http://[64:ff9b::a9fe:a9fe]/v1", "http://[64:ff9b::169.254.170.2]/v1",
    "http://2851995649/v1", "http://0xa9fe0001/v1", "http://0251.0376.0.1/v1", "http://169.254.1/v1",
]


@pytest.mark.parametrize("url", LINK_LOCAL)
async def test_link_local_is_refused_at_registration_for_hosted_providers_and_with_private_allowed(gateway, url):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}, "security": {"allowPrivateUpstreams": True}})
    for hosted in (True, False):
        async with gw.post("/v1/llm/providers", json={"providers": [_item(url, hosted)]}, headers=ADMIN) as r:
            assert r.status == 400, url
            error = (await r.json())["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "providers[0].url"
        assert "metadata or link-local" in error["message"], error["message"]
    async with gw.get("/v1/llm/providers", headers=ADMIN) as r:
        assert r.status == 200 and (await r.json())["providers"] == []  # nothing was registered


@pytest.mark.parametrize(("address", "kind"), [
    ("169.254.0.0", "metadata"), ("169.254.255.255", "metadata"), ("169.254.170.23", "metadata"),
    ("fe80::", "metadata"), ("febf:ffff:ffff:ffff::1", "metadata"), ("fe80::1%eth0", "metadata"),
    ("fd00:ec2::", "metadata"), ("fd00:ec2:ffff::1", "metadata"), ("::ffff:169.254.1.2", "metadata"),
    ("64:ff9b::169.254.0.9", "metadata"), ("100.100.100.200", "metadata"),
    ("169.253.255.255", "public"), ("169.255.0.0", "public"), ("fec0::1", "public"), ("fd00:ec3::1", "private"),
    ("64:ff9b::8.8.8.8", "public"), ("64:ff9b::10.1.2.3", "private"), ("64:ff9b::127.0.0.1", "private"),
    ("::ffff:8.8.8.8", "public"), ("::ffff:127.0.0.1", "private"), ("64:ff9b::", "unspecified"),
])
def test_classify(address, kind):
    assert netguard.classify(netguard.ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["169.254.0.1", "fe80::1", "fd00:ec2::2", "::ffff:169.254.170.2",
                                     "64:ff9b::a9fe:a9fe"])
def test_link_local_addresses_are_refused_even_where_private_ones_are_allowed(address):
    with pytest.raises(netguard.Refused, match="metadata or link-local"):
        netguard.check_address(netguard.ipaddress.ip_address(address), private_ok=True)


class _Zone:
    """Stands in for DNS: each name resolves to the address the test gives it, with its family."""

    names: dict[str, str] = {}

    async def resolve(self, host, port=0, family=socket.AF_INET):
        address = _Zone.names[host]
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": port, "family": fam, "proto": 0, "flags": 0}]

    async def close(self):
        pass


@pytest.fixture
async def connects(monkeypatch):
    """Every outgoing connection the loop is asked for, as (host, port): nothing reaches a socket
    unrecorded, so a refused address can be shown never to have been tried."""
    loop = asyncio.get_running_loop()
    tried: list[tuple[str, int]] = []
    real = loop.create_connection

    async def recording(factory, host=None, port=None, **kw):
        tried.append((host, port))
        return await real(factory, host, port, **kw)

    monkeypatch.setattr(loop, "create_connection", recording)
    return tried


@pytest.mark.parametrize("answer", ["169.254.0.1", "169.254.170.23", "fe80::1", "fd00:ec2::254",
                                    "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"])
async def test_a_name_resolving_to_link_local_is_refused_at_connect_time(gateway, fake_openai, monkeypatch,
                                                                          connects, answer):
    port = int(fake_openai.url.rsplit(":", 1)[1].split("/")[0])
    monkeypatch.setattr(netguard, "DefaultResolver", _Zone)
    monkeypatch.setattr(_Zone, "names", {"good.internal": "127.0.0.1", "bad.internal": answer})
    items = [{"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "url": f"http://{name}.internal:{port}/v1",
              "models": [name], "isHosted": True} for name in ("good", "bad")]
    gw = await gateway({"providers": items, "security": {"allowPrivateUpstreams": True}})
    # A name resolving to loopback is served: the path is open, and the recorder sees the connect.
    async with gw.post("/v1/chat/completions", json={"model": "good", "messages": [{"role": "user"}]}) as r:
        assert r.status == 200
    assert ("127.0.0.1", port) in connects
    # A name resolving to a link-local address: refused before any connect, even for a hosted provider
    # with private upstreams allowed.
    async with gw.post("/v1/chat/completions", json={"model": "bad", "messages": [{"role": "user"}]}) as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_error"
    assert not [c for c in connects if c[0] == answer]
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize("url", ["http://169.254.0.1:9/x", "http://[fe80::1]:9/x", "http://[fd00:ec2::23]:9/x",
                                 "http://[::ffff:169.254.169.254]:9/x", "http://[64:ff9b::a9fe:a9fe]:9/x"])
async def test_an_ip_literal_is_checked_at_connect_time_too(connects, url):
    # A registration stored before this rule existed is never re-validated: the connect-time
    # check is what keeps it from reaching the metadata range.
    client = httpclient.Client(netguard.GuardedResolver(lambda host: True), user_agent="t")
    try:
        with pytest.raises(httpclient.ConnectFailed) as caught:
            await client.request("POST", url, {"Content-Type": "application/json"}, b"{}", connect_timeout=0.5)
        assert "metadata or link-local" in str(caught.value.__cause__)
    finally:
        await client.close()
    assert connects == []
