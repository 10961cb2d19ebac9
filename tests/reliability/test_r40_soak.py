"""Soak (RELIABILITY R40): a steady mixed load on a gateway process; no growth in memory,
descriptors or tasks, and everything back to its baseline once the load stops.

Mix: 70 % streaming, 10 % clients that abort mid-stream, 5 % upstream 5xx, 5 % upstream 429,
10 % non-streaming, all through a telemetry outage: the Cast AI sink points at a port where
nothing listens for the whole soak, so every record goes to the disk spool and its retries
never stop. The normal run soaks 15 s at 100 rps; the `slow` one 10 minutes at 200 rps.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import aiohttp
import pytest

from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour, FakeOpenAI
from tests.procs import free_port

MIB = 1024 * 1024
MIX = [("stream", 70), ("abort", 10), ("err", 5), ("limited", 5), ("plain", 10)]


def _pick(rng: random.Random) -> str:
    return rng.choices([kind for kind, _ in MIX], weights=[w for _, w in MIX])[0]


async def _one(session: aiohttp.ClientSession, url: str, kind: str, counts: dict) -> None:
    model = {"stream": "chat", "abort": "chat", "plain": "chat", "err": "err", "limited": "limited"}[kind]
    body = {"model": model, "messages": [{"role": "user", "content": "soak"}], "stream": kind != "plain"}
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            if kind == "abort":
                await resp.content.readline()
                resp.close()
            else:
                await resp.read()
            counts[resp.status] = counts.get(resp.status, 0) + 1
    except aiohttp.ClientError:
        counts["error"] = counts.get("error", 0) + 1


async def _task_count(gw, session: aiohttp.ClientSession) -> float:
    return (await gw.metrics(session))["aigw_asyncio_tasks"]


async def _load(gw, session, rps: float, seconds: float, sampler: list) -> dict:
    rng = random.Random(40)
    counts: dict = {}
    pending: set[asyncio.Task] = set()
    began = time.monotonic()
    n = 0
    while (now := time.monotonic()) - began < seconds:
        if now >= began + n / rps:
            task = asyncio.ensure_future(_one(session, gw.url, _pick(rng), counts))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        if not sampler or now - began - sampler[-1][0] >= 0.25:
            sampler.append((now - began, gw.rss()))
        await asyncio.sleep(min(0.005, max(began + n / rps - time.monotonic(), 0)))
    await asyncio.gather(*pending)
    return counts


def _slope_mib_per_min(samples: list[tuple[float, int]]) -> float:
    xs, ys = [t for t, _ in samples], [r / MIB for _, r in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs) * 60


async def _soak(gateway_process, aiohttp_server, rps: float, seconds: float, warm: float):
    fake = await FakeOpenAI().start(aiohttp_server)
    fake.on("chat", Behaviour(content=["tok"] * 20, delay_chunk=0.005))
    fake.on("err", Behaviour(status=500))
    fake.on("limited", Behaviour(status=429, headers={"Retry-After": "1"}))
    down = f"http://127.0.0.1:{free_port()}"  # the Cast AI API, unreachable throughout
    gw = await gateway_process({"providers": [openai_provider(fake, models=("chat", "err", "limited"))],
                                "castai": {"apiKey": "castai-soak-key-0001", "apiUrl": down, "clusterId": "soak"}})
    async def settled() -> tuple[int, float, int]:
        """Once the clients have gone: the gateway's descriptors (less its pooled connections to
        the provider, which stay open for reuse), its tasks, and that pool."""
        await asyncio.sleep(2.0)
        pooled = len(fake.server.runner.server.connections)
        async with aiohttp.ClientSession() as probe:
            tasks = await _task_count(gw, probe)
        return gw.fds() - pooled, tasks, pooled

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        await _load(gw, session, rps, warm, [])  # warm-up: pools, caches, first use of every path
    fds0, tasks0, _ = await settled()
    samples: list[tuple[float, int]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        counts = await _load(gw, session, rps, seconds, samples)
    fds1, tasks1, pooled = await settled()  # the load has stopped
    steady = [s for s in samples if s[0] >= seconds / 3]
    growth = (steady[-1][1] - steady[0][1]) / steady[0][1]
    print(f"R40 {rps} rps for {seconds} s: {sum(counts.values())} requests {counts}; RSS over the steady part "
          f"{steady[0][1] / MIB:.1f} → {steady[-1][1] / MIB:.1f} MiB ({growth * 100:+.2f} %), "
          f"slope {_slope_mib_per_min(steady):+.2f} MiB/min; FDs {fds0} → {fds1}; tasks {tasks0} → {tasks1}; "
          f"upstream connections open {pooled}")
    return counts, growth, _slope_mib_per_min(steady), (fds0, fds1), (tasks0, tasks1), pooled


async def test_r40_soak_15_seconds_at_100_rps(gateway_process, aiohttp_server):
    counts, growth, slope, fds, tasks, upstream_open = await _soak(gateway_process, aiohttp_server, 100, 15, warm=3)
    assert counts.get(500, 0) == 0 and counts.get("error", 0) == 0
    # < 5 % growth. The 1 MiB/min slope is the slow soak's: over 15 s bounded caches (the usage
    # store's SQLite pages) are still filling, ~5 MiB/min until they plateau at about 4,500 records
    # (+3.5 MiB); 10 MiB/min here still catches a leak of ~2 KiB a request.
    assert growth < 0.05 and slope < 10.0
    assert fds[1] <= fds[0] + 5 and tasks[1] <= tasks[0] + 5
    assert upstream_open <= 200


@pytest.mark.slow
async def test_r40_slow_soak_10_minutes_at_200_rps(gateway_process, aiohttp_server):
    counts, growth, slope, fds, tasks, upstream_open = await _soak(gateway_process, aiohttp_server, 200, 600, warm=60)
    assert counts.get(500, 0) == 0
    assert growth < 0.05 and slope < 1.0
    assert fds[1] <= fds[0] + 5 and tasks[1] <= tasks[0] + 5
    assert upstream_open <= 200
