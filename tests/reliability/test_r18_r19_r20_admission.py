"""Admission under overload: the in-flight cap (R18), the memory watermark (R19), oversized
bodies (R20). Measured on a gateway in its own process, so the figures are the gateway's."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour, FakeOpenAI, completion
from tests.procs import RssSampler

MIB = 1024 * 1024


def _body(content: str = "hi", model: str = "m") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def _slow_upstream(aiohttp_server, delay: float) -> FakeOpenAI:
    fake = await FakeOpenAI().start(aiohttp_server)
    fake.default = Behaviour(delay_headers=delay)
    return fake


async def test_r18_concurrency_cap_fails_fast_without_a_queue(gateway_process, aiohttp_server):
    fake = await _slow_upstream(aiohttp_server, delay=1.0)
    gw = await gateway_process({"providers": [openai_provider(fake, models=("m",))],
                                "limits": {"maxInFlight": 32}})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.post(gw.url + "/v1/chat/completions", json=_body()) as resp:  # warm up
            assert resp.status == 200

        async def health() -> None:
            async with session.get(gw.url + "/healthz") as resp:
                await resp.read()

        await asyncio.gather(*(health() for _ in range(64)))  # 64 open connections: time the gateway
        results: list[tuple[int, float, str | None]] = []

        async def one() -> None:
            started = time.monotonic()
            async with session.post(gw.url + "/v1/chat/completions", json=_body()) as resp:
                await resp.read()
                results.append((resp.status, time.monotonic() - started, resp.headers.get("Retry-After")))

        with RssSampler(gw.pid, every=0.02) as rss:
            await asyncio.gather(*(one() for _ in range(64)))
    admitted = [r for r in results if r[0] == 200]
    rejected = sorted(r[1] for r in results if r[0] == 503)
    assert len(admitted) == 32 and len(rejected) == 32  # 100 % of the admitted complete normally
    assert all(r[2] is not None and r[2].isdigit() for r in results if r[0] == 503)
    assert rejected[int(len(rejected) * 0.99) - 1] <= 0.05, rejected  # p99 of rejections ≤ 50 ms
    assert rss.growth <= 20 * MIB, rss.growth
    print(f"R18 rejections p99 {rejected[int(len(rejected) * 0.99) - 1] * 1000:.1f} ms, "
          f"RSS growth {rss.growth / MIB:.1f} MiB")


async def _wave(session: aiohttp.ClientSession, url: str, n: int, body: dict) -> list[tuple[int, str | None]]:
    async def one():
        try:
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Retry-After")
        except aiohttp.ClientError:
            return 0, None

    return await asyncio.gather(*(one() for _ in range(n)))


async def _big_prompt_upstream(aiohttp_server, delay: float) -> dict:
    """A slow OpenAI-compatible upstream that takes large prompts."""
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay)
        return web.json_response(completion("m", Behaviour()))

    app = web.Application(client_max_size=64 * MIB)
    app.router.add_post("/v1/chat/completions", chat)
    server = await aiohttp_server(app)
    return {"name": "big", "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "models": ["m"],
            "url": f"http://127.0.0.1:{server.port}/v1"}


async def test_r19_memory_watermark_sheds_load_and_recovers(gateway_process, aiohttp_server):
    provider = await _big_prompt_upstream(aiohttp_server, delay=0.3)
    probe = await gateway_process({"providers": [provider]})
    base = probe.rss()
    probe.stop()
    mark = base + 48 * MIB  # the watermark; the "container limit" of the figure is 1.5 × the headroom
    limit = base + 72 * MIB
    gw = await gateway_process({"providers": [provider], "limits": {"maxRssMib": mark // MIB}})
    big = _body("x" * (2 * MIB))
    statuses: list[tuple[int, str | None]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        with RssSampler(gw.pid, every=0.01) as rss:
            started = time.monotonic()
            while time.monotonic() - started < 3.0:  # about 3 × what fits under the mark
                statuses += await _wave(session, gw.url, 30, big)
        assert any(s == 503 for s, _ in statuses), "the watermark never shed load"
        assert all(ra is not None and ra.isdigit() for s, ra in statuses if s == 503)
        assert all(s in (200, 503) for s, _ in statuses), sorted({s for s, _ in statuses})
        assert rss.peak <= limit, (rss.peak - base) / MIB
        print(f"R19 {sum(s == 503 for s, _ in statuses)}/{len(statuses)} shed, peak RSS mark "
              f"{(rss.peak - mark) / MIB:+.1f} MiB (limit +{(limit - mark) / MIB:.0f})")
        dropped = time.monotonic()
        while True:  # load has dropped: a small request is admitted again within 5 s
            (status, _), = await _wave(session, gw.url, 1, _body())
            if status == 200:
                break
            assert time.monotonic() - dropped < 5.0, "admission did not resume"
            await asyncio.sleep(0.1)
    assert gw.proc.poll() is None  # and the gateway is still up


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_r20_oversized_bodies_are_413_early_with_bounded_memory(gateway_process, aiohttp_server, chunked):
    limit = MIB
    fake = await FakeOpenAI().start(aiohttp_server)
    gw = await gateway_process({"providers": [openai_provider(fake, models=("m",))],
                                "limits": {"maxBodyBytes": limit, "maxBodyBuffer": limit}})
    payload = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * (2 * limit) + b'"}]}'

    async def chunks():
        for i in range(0, len(payload), 64 * 1024):
            yield payload[i:i + 64 * 1024]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        async def one() -> tuple[int, float]:
            started = time.monotonic()
            data = chunks() if chunked else payload
            try:
                async with session.post(gw.url + "/v1/chat/completions", data=data,
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    return resp.status, time.monotonic() - started
            except aiohttp.ClientError:  # the gateway may close while the rest is still being sent
                return 413, time.monotonic() - started

        await one()  # warm up, then a wave of 50 small requests: the gateway has held 50 connections
        # and requests at once before (about 1.4 MiB of heap it keeps), so what the wave below adds is
        # what the oversized bodies cost
        async def small() -> int:
            async with session.post(gw.url + "/v1/chat/completions", json=_body()) as resp:
                await resp.read()
                return resp.status

        assert set(await asyncio.gather(*(small() for _ in range(50)))) == {200}
        fake.requests.clear()
        with RssSampler(gw.pid, every=0.005) as rss:
            results = await asyncio.gather(*(one() for _ in range(50)))
        if not chunked:  # refused by the server from the headers, and counted on /metrics (+1: warm-up)
            refused = (await gw.metrics(session)).get('aigw_connections_refused_total{reason="body_too_large"}')
            assert refused == 51, refused
    assert all(status == 413 for status, _ in results), results
    assert max(took for _, took in results) <= 1.0
    assert fake.requests == []
    print(f"R20 {'chunked' if chunked else 'declared'}: 50/50 413 in ≤ {max(t for _, t in results):.2f} s, "
          f"RSS growth {rss.growth / MIB:.1f} MiB")
    # declared: refused from the length, reading stops with what came with the headers (8 KiB);
    # chunked: read one budget (maxBodyBuffer = the limit) at a time, the others wait unread
    assert rss.growth < 2 * limit, rss.growth / MIB
