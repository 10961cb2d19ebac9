"""Slow readers and endless answers (RELIABILITY R09, R10): memory stays bounded, stalled clients
are cut, endless streams end at the cap with an error event, oversized bodies are 502s."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest
from aiohttp import web

from tests.conftest import openai_provider
from tests.fakes.openai import FakeOpenAI
from tests.procs import RssSampler

CHUNK = b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "delta": {"content": "x" * 16000},
                                                "finish_reason": None}]}) + b"\n\n"
REQUEST = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True})


class Firehose:
    """An upstream that streams ~1 MiB/s per request for ever, noting its last write and its close."""

    def __init__(self) -> None:
        self.last_write: dict[int, float] = {}
        self.closed: dict[int, float] = {}
        self.count = 0

    async def stream(self, request: web.Request, body: dict, b) -> web.StreamResponse:
        n = self.count
        self.count += 1
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        try:
            for _ in range(100_000):
                await out.write(CHUNK)
                self.last_write[n] = time.monotonic()
                await asyncio.sleep(0.016)
        finally:
            self.closed[n] = time.monotonic()
        return out


async def _firehose_gateway(gateway, aiohttp_server, idle: float, **timeouts):
    fake = await FakeOpenAI().start(aiohttp_server)
    hose = Firehose()
    fake._stream = hose.stream
    gw = await gateway({"providers": [openai_provider(fake, models=("m",))],
                        "timeouts": {"idle": idle, **timeouts}})
    return gw, fake, hose


def _raw_client(port: int, rcvbuf: int = 4096) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # a small window: stalls show fast
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(REQUEST) + REQUEST)
    sock.setblocking(False)
    return sock


def _drain_until_closed(sock: socket.socket, timeout: float) -> bool:
    sock.setblocking(True)
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


async def test_r09_stalled_readers_are_cut_and_the_upstream_with_them(gateway, aiohttp_server):
    idle, clients = 1.0, 20
    gw, fake, hose = await _firehose_gateway(gateway, aiohttp_server, idle)
    socks = [_raw_client(gw.port) for _ in range(clients)]
    for _ in range(200):  # every stream stalled and given up (bounded: 10 s)
        if len(hose.closed) == clients:
            break
        await asyncio.sleep(0.05)
    assert len(hose.closed) == clients, "the gateway kept reading for a client that stopped"
    # Closed within Tidle (+ the 1/4 sampling step) of the last byte the gateway could pass on.
    lags = [hose.closed[n] - hose.last_write[n] for n in range(clients)]
    assert max(lags) <= idle + 1.0, lags
    assert all([_drain_until_closed(s, 5.0) for s in socks]), "a stalled client was left connected"
    records = await gw.records()
    assert len(records) == clients
    assert {(r.status, r.error_type) for r in records} == {("client_aborted", "client_stalled")}


async def test_r09_a_reader_that_keeps_reading_is_not_cut(gateway, aiohttp_server):
    idle = 0.5
    gw, fake, hose = await _firehose_gateway(gateway, aiohttp_server, idle)
    received = 0
    async with gw.post("/v1/chat/completions", data=REQUEST,
                       headers={"Content-Type": "application/json"}) as resp:
        started = time.monotonic()
        while time.monotonic() - started < 6 * idle:  # slower than the upstream: always behind
            received += len(await resp.content.read(64 * 1024))
            await asyncio.sleep(0.1)
        assert b"upstream_timeout" not in await asyncio.wait_for(resp.content.read(1 << 16), 1)
    assert received > 0.5 * 1024 * 1024
    assert hose.closed == {}  or len(hose.closed) == 1  # closed only when this client left


async def _slow_readers(gateway_process, aiohttp_server, streams: int, seconds: float) -> int:
    """Half the clients read nothing, half read 1 KiB/s; the gateway's RSS growth over the run."""
    fake = await FakeOpenAI().start(aiohttp_server)
    hose = Firehose()
    fake._stream = hose.stream
    gw = await gateway_process({"providers": [openai_provider(fake, models=("m",))], "timeouts": {"idle": 2.0}})
    port = gw.port
    warm = _raw_client(port)  # first use of every code path, before the baseline
    await asyncio.sleep(0.5)
    _drain_until_closed(warm, 0.2)
    await asyncio.sleep(0.5)
    with RssSampler(gw.pid, every=0.05) as rss:
        socks = [_raw_client(port) for _ in range(streams)]
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for sock in socks[::2]:
                try:
                    sock.recv(1024)
                except (BlockingIOError, ConnectionError):
                    pass
            await asyncio.sleep(1.0)
    for sock in socks:
        sock.close()
    return rss.growth


async def test_r09_gateway_memory_stays_bounded_under_slow_readers(gateway_process, aiohttp_server):
    streams = 30
    growth = await _slow_readers(gateway_process, aiohttp_server, streams, seconds=4)
    print(f"R09 {streams} slow readers for 4 s: RSS growth {growth / 2**20:.1f} MiB")
    assert growth <= streams * 0.6 * 1024 * 1024, growth


@pytest.mark.slow
async def test_r09_slow_100_streams_for_60_seconds(gateway_process, aiohttp_server):
    growth = await _slow_readers(gateway_process, aiohttp_server, 100, seconds=60)
    print(f"R09 100 slow readers for 60 s: RSS growth {growth / 2**20:.1f} MiB")
    assert growth <= 64 * 1024 * 1024, growth


async def test_r10_endless_stream_is_cut_at_the_maximum_duration(gateway, aiohttp_server):
    cap = 1.0
    gw, fake, hose = await _firehose_gateway(gateway, aiohttp_server, idle=5.0, maxStream=cap)

    async def one() -> float:
        started = time.monotonic()
        async with gw.post("/v1/chat/completions", data=REQUEST,
                           headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            last = b""
            async for line in resp.content:
                if line.startswith(b"data: "):
                    last = line
        took = time.monotonic() - started
        error = orjson.loads(last[6:])["error"]
        assert error["code"] == "upstream_timeout" and "maximum stream duration" in error["message"]
        return took

    took = await asyncio.gather(*(one() for _ in range(20)))
    assert cap <= min(took) and max(took) <= cap + 1.0, took
    records = await gw.records()
    assert len(records) == 20 and {r.status for r in records} == {"upstream_timeout"}
    assert len(hose.closed) == 20  # and the provider's stream was closed


class EndlessBody:
    """A non-streaming answer that never ends (the same 64 KiB written again and again)."""

    PART = b"x" * 65536

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        out = web.StreamResponse(headers={"Content-Type": "application/json"})
        await out.prepare(request)
        for _ in range(16384):  # 1 GiB at most
            await out.write(self.PART)
        return out


async def test_r10_oversized_body_is_a_502_with_bounded_memory(gateway_process, aiohttp_server):
    cap = 8 * 1024 * 1024
    app = web.Application()
    app.router.add_post("/v1/chat/completions", EndlessBody().chat)
    upstream = await aiohttp_server(app)
    provider = {"name": "big", "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "models": ["m"],
                "url": f"http://127.0.0.1:{upstream.port}/v1"}
    gw = await gateway_process({"providers": [provider], "limits": {"maxResponseBytes": cap}})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/v1/chat/completions", json=body) as resp:  # warm up
            assert resp.status == 502
        with RssSampler(gw.pid, every=0.005) as rss:
            for _ in range(3):
                started = time.monotonic()
                async with session.post(gw.url + "/v1/chat/completions", json=body) as resp:
                    assert resp.status == 502
                    assert (await resp.json())["error"]["code"] == "upstream_response_too_large"
                assert time.monotonic() - started < 5
    assert rss.growth <= 2 * cap, rss.growth
    records = await gw.records()
    assert len(records) == 4 and {r.status for r in records} == {"upstream_error"}
