"""Shared fixtures: a fake OpenAI upstream and gateways served over real loopback HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest

from proxy.app import build
from proxy.config import Config
from proxy.gateway import GATEWAY
from tests.fakes.openai import FakeOpenAI

ADMIN_KEY = "admin-key-for-tests-0001"


@pytest.fixture
async def fake_openai(aiohttp_server) -> FakeOpenAI:
    return await FakeOpenAI().start(aiohttp_server)


class Running:
    """A gateway being served: its URL, its parts, and a client session to call it."""

    def __init__(self, server, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.app = server.app
        self.gw = server.app[GATEWAY]
        self.url = f"http://127.0.0.1:{server.port}"
        self.session = session

    def post(self, path: str, **kwargs):
        return self.session.post(self.url + path, **kwargs)

    def get(self, path: str, **kwargs):
        return self.session.get(self.url + path, **kwargs)

    async def records(self):
        """Every record written so far: flush, then read until a batch in flight has landed."""
        previous = None
        for _ in range(100):
            await asyncio.sleep(0.01)
            await self.gw.batcher.flush()
            found = await self.gw.store.records()
            if previous is not None and len(found) == len(previous) and not len(self.gw.batcher):
                return found
            previous = found
        return found


@pytest.fixture
async def gateway(aiohttp_server, tmp_path):
    """`await gateway({...config...})` serves a gateway on loopback; config keys are camelCase."""
    sessions = []

    async def make(config: dict | None = None, **kw) -> Running:
        # Fakes listen on loopback, so tests allow private upstreams (RELIABILITY policy 4).
        raw = {"dataDir": str(tmp_path / "data"), "telemetry": {"flushMs": 50},
               "security": {"allowPrivateUpstreams": True}, **(config or {})}
        cfg = msgspec.convert(raw, type=Config)
        app = build(cfg)
        server = await aiohttp_server(app, **kw)  # aiohttp's TestServer cancels handlers on disconnect
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Running(server, session)

    yield make
    for session in sessions:
        await session.close()


def openai_provider(fake: FakeOpenAI, name: str = "fake", models=("gpt-4o-mini",), **extra) -> dict:
    return {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "url": fake.url, "apiKey": "sk-fake-provider-key-" + name,
            "models": list(models), "isHosted": True, **extra}
