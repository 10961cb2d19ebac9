"""The SSRF guard (RELIABILITY R31, R32): registration and connect-time checks."""

from __future__ import annotations

import socket

import pytest

from proxy import netguard
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
    "http://169.254.169.254.nip.io.#/v1", "http://127.1/v1", "http://017700000001/v1",
]
PRIVATE = [
    "http://127.0.0.1:11434/v1", "http://localhost:8000/v1", "http://api.localhost/v1", "http://10.0.0.5/v1",
    "http://172.16.0.1/v1", "http://172.31.255.255/v1", "http://192.168.1.10/v1", "http://100.64.0.1/v1",
    "http://169.254.1.1/v1", "http://[::1]:8000/v1", "http://[fc00::1]/v1", "http://[fe80::1]/v1",
    "http://[::ffff:10.0.0.1]/v1", "http://198.18.0.1/v1",
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
