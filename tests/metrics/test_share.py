"""`serve --workers 2` in real processes: every scrape reports the whole group, and a worker
killed with -9 takes none of the group's counts with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import aiohttp
import pytest

from tests.conftest import openai_provider
from tests.procs import GatewayProcess

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads worker pids from /proc (Linux)")

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
REQUESTS = 1000
OK = 'aigw_requests_total{endpoint="chat",model="gpt-4o-mini",provider="fake",status="200"}'


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def _fresh(method: str, url: str, **kw) -> tuple[int, object, str]:
    """One request on a connection of its own: SO_REUSEPORT may hand it to either worker."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.request(method, url, **kw) as resp:
            return resp.status, resp.headers.copy(), await resp.text()


async def _scrape(gw: GatewayProcess) -> dict[str, float]:
    """A scrape on a connection of its own."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        return await gw.metrics(session)


async def _traffic(gw: GatewayProcess, count: int, concurrency: int = 8) -> set[str]:
    """`count` chat requests; the process prefixes of their request ids (one per worker)."""
    served: set[str] = set()
    queue = iter(range(count))

    async def run():
        for _ in queue:
            status, headers, _ = await _fresh("POST", gw.url + "/v1/chat/completions", json=BODY)
            assert status == 200
            served.add(headers["X-Request-Id"][:16])

    await asyncio.gather(*(run() for _ in range(concurrency)))
    return served


async def _both_workers_up(gw: GatewayProcess) -> None:
    for _ in range(200):
        if (await _scrape(gw)).get("aigw_workers") == 2:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the second worker never reported")


@contextlib.asynccontextmanager
async def _group(tmp_path, fake_openai):
    gw = GatewayProcess(tmp_path / "gw", {"providers": [openai_provider(fake_openai)]})
    gw.config["listen"]["workers"] = 2
    await gw.start()
    try:
        await _both_workers_up(gw)
        yield gw
    finally:
        workers = _children(gw.pid) if gw.proc.poll() is None else []
        gw.terminate()
        try:
            await gw.wait(20)
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def test_every_scrape_reports_the_whole_group(tmp_path, fake_openai):
    async with _group(tmp_path, fake_openai) as gw:
        served = await _traffic(gw, REQUESTS)
        assert len(served) == 2, "both workers must have served, or the test proves nothing"
        seen = [(await _scrape(gw)).get(OK) for _ in range(20)]
        assert seen == [REQUESTS] * 20
        last = await _scrape(gw)
        workers = {f'process_resident_memory_bytes{{worker="{w}"}}' for w in ("0", "1", "supervisor")}
        assert workers <= last.keys()
        assert last['process_resident_memory_bytes{worker="all"}'] == sum(last[w] for w in workers)
        assert last['process_open_fds{worker="all"}'] > 0 and last['process_cpu_seconds_total{worker="all"}'] > 0


async def test_a_killed_workers_counts_stay_in_the_group(tmp_path, fake_openai):
    async with _group(tmp_path, fake_openai) as gw:
        await _traffic(gw, 200)
        before = await _scrape(gw)
        assert before[OK] == 200
        os.kill(_children(gw.pid)[0], signal.SIGKILL)
        await asyncio.sleep(0.3)
        await _traffic(gw, 50)  # a restarted worker (or the one left) adds to the same series
        for _ in range(5):
            after = await _scrape(gw)
            assert after[OK] == 250
            assert after['process_cpu_seconds_total{worker="all"}'] >= before['process_cpu_seconds_total{worker="all"}']
