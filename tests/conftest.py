"""Shared fixtures: a fake OpenAI upstream and gateways served over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import os

import aiohttp
import msgspec
import pytest

from proxy.app import build
from proxy.config import Config
from proxy.gateway import GATEWAY
from tests.fakes.openai import FakeOpenAI
from tests.sweep import canary

ADMIN_KEY = "admin-key-for-tests-0001"
# The provider key planted in every `openai_provider`: random per run, in a shape random ids,
# hashes and base64 cannot produce, so that the session-wide sweep (tests/sweep.py, RELIABILITY
# R30) can look for pieces of it anywhere and never meet one by chance.
PROVIDER_KEY = canary()



@pytest.fixture
async def fake_openai(aiohttp_server) -> FakeOpenAI:
    return await FakeOpenAI().start(aiohttp_server)


@pytest.fixture
async def fake_anthropic(aiohttp_server):
    from tests.fakes.anthropic import FakeAnthropic

    return await FakeAnthropic().start(aiohttp_server)


class Running:
    """A gateway being served: its URL, its parts, and a client session to call it."""

    def __init__(self, server, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.app = server.app
        self.gw = server.app[GATEWAY]
        self.url = f"http://127.0.0.1:{server.port}"
        self.port = server.port
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


def count_writes_to_clients(monkeypatch, port: int) -> list[int]:
    """The size of each write the gateway's server (on `port`) makes to a client socket: not the
    fake provider's, not the client's."""
    from aiohttp import http_writer

    writes: list[int] = []
    for name in ("_write", "_writelines"):
        real = getattr(http_writer.StreamWriter, name)

        def counted(self, data, _real=real, _name=name):
            transport = self._protocol.transport
            if transport is not None and transport.get_extra_info("sockname")[1] == port:
                writes.append(len(data) if _name == "_write" else sum(len(part) for part in data))
            return _real(self, data)

        monkeypatch.setattr(http_writer.StreamWriter, name, counted)
    return writes


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
    return {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "url": fake.url, "apiKey": PROVIDER_KEY + "-" + name,
            "models": list(models), "isHosted": True, **extra}


@pytest.fixture
async def served(tmp_path):
    """Like `gateway`, but served the way `ai-enabler-proxy serve` serves it: through
    `proxy.edge.server.Runner` (header limits, keep-alive, connection cap, header and body deadlines)."""
    from aiohttp import web

    from proxy.edge.server import Runner

    runners, sessions = [], []

    class _Site:
        def __init__(self, app, port: int) -> None:
            self.app, self.port = app, port

    async def make(config: dict | None = None) -> Running:
        raw = {"dataDir": str(tmp_path / "data"), "telemetry": {"flushMs": 50},
               "security": {"allowPrivateUpstreams": True}, **(config or {})}
        cfg = msgspec.convert(raw, type=Config)
        app = build(cfg)
        runner = Runner(app, cfg.limits, handler_cancellation=True, access_log=None, shutdown_timeout=1)
        app[GATEWAY].metrics.registry.register(runner.guard.collector())  # as `serve` does
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)  # as `serve` listens
        await site.start()
        session = aiohttp.ClientSession()
        sessions.append(session)
        running = Running(_Site(app, runner.addresses[0][1]), session)
        running.runner = runner
        # `serve` freezes start-up objects out of the collector's way (proxy.cli._tune_gc); here the
        # test run's own heap is large, and a full collection of it would stall the served loop.
        gc.collect()
        gc.freeze()
        return running

    yield make
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()
    gc.unfreeze()


@pytest.fixture
def gateway_process(tmp_path):
    """`await gateway_process({...config...})`: `python -m proxy serve` in its own process, for
    figures that must not include the test's own memory, descriptors or tasks."""
    from tests.procs import GatewayProcess

    started: list[GatewayProcess] = []

    async def make(config: dict | None = None, **kw) -> GatewayProcess:
        proc = GatewayProcess(tmp_path / f"gw{len(started)}", config or {}, **kw)
        started.append(proc)
        await proc.start()
        # The test is the gateway's client, and its timings are the client's: a full collection
        # of the test run's large heap stalls this loop (R18 once saw 2 of 32 rejections at 0.87 s
        # late in a full run, the other 30 at 10 ms), as in `gateway` above.
        gc.collect()
        gc.freeze()
        return proc

    yield make
    for proc in started:
        proc.stop()
    if started:
        gc.unfreeze()


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def redis_reachable(url: str = REDIS_URL) -> str | None:
    """None when Redis answers at `url`, else why not."""
    from redis import asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=1)
    try:
        await client.ping()
        return None
    except Exception as exc:  # any failure means: no Redis for this run
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


@pytest.fixture
async def redis_url():
    """A Redis URL (DB 15) with a key prefix of its own; its keys are deleted afterwards.

    Skips, saying so, when no Redis server answers (`.ci/run` starts one when it can).
    """
    from redis import asyncio as aioredis

    why = await redis_reachable()
    if why is not None:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({why}): start redis-server to run this test")
    prefix = f"t{os.urandom(5).hex()}:"
    yield f"{REDIS_URL}?prefix={prefix}"
    client = aioredis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        await client.delete(key)
    await client.aclose()


from tests.sweep import pytest_runtest_logreport, pytest_sessionfinish  # noqa: E402,F401  (R30, run-wide)
