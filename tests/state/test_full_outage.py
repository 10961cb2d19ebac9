"""A full outage: the one Redis server of 3 replicas is killed for 10 s under 50 requests/s.

With `state.outage: local` no request fails and, once it is back, the shared spend equals the
usage records' costs; with `refuse` the keys with limits get 503 with Retry-After until each
replica has found the store again, and none after. The server writes every change to its
append-only file before it answers, so the restarted one has every count made before the kill."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.state import servers
from tests.state.fleet import ADMIN, COST, Load, burst, fleet, key, prefix, recovered, spend_of_records

OUTAGE = 10.0
LIMIT = 60


@pytest.fixture
def server(tmp_path):
    servers.binaries_or_skip("redis-server")
    found = servers.standalone(tmp_path / "redis")
    yield found
    found.stop()


def _shared_spend(server, store_prefix: str, key_id: str) -> float:
    return float(server.client().get(f"{store_prefix}key:{{{key_id}}}:spend") or 0.0)


async def _outage(server, replicas, name: str):
    """Load for 1 s, kill the server, load for OUTAGE s, restart it, wait for every replica to be
    back; (the load's log, when the kill happened, when every replica was back)."""
    load = Load(replicas, name, 50).start()
    await asyncio.sleep(1.0)
    server.kill()
    killed = time.monotonic()
    await asyncio.sleep(OUTAGE)
    await asyncio.to_thread(server.start)
    lag = await recovered(replicas)
    back = time.monotonic()
    await asyncio.sleep(1.0)
    return await load.stop(), killed, back, lag


async def test_local_fallback_serves_every_request_and_reconciles_spend_to_the_cent(server, gateway, tmp_path):
    store_prefix = prefix()
    replicas = await fleet(gateway, tmp_path, f"redis://127.0.0.1:{server.port}/0?prefix={store_prefix}",
                           [key("load", budgetUsd=1e6), key("lim", rpm=LIMIT)])
    before = (await burst(replicas, "lim", LIMIT // 2)).count(200)
    shares = [max(0, LIMIT // 3 - r.gw.state.fallback.seen["lim"].requests // 3) for r in replicas]
    load = Load(replicas, "load", 50).start()
    await asyncio.sleep(1.0)
    server.kill()
    await asyncio.sleep(0.2)
    during = (await burst(replicas, "lim", LIMIT * 2)).count(200)
    await asyncio.sleep(OUTAGE - 0.2)
    await asyncio.to_thread(server.start)
    lag = await recovered(replicas)
    await asyncio.sleep(1.0)
    log = await load.stop()
    failed = [status for _, status, _ in log if status != 200]
    after = (await burst(replicas, "lim", 10)).count(200)
    records = await spend_of_records(replicas, "load")
    shared = _shared_spend(server, store_prefix, "load")
    over = before + during - LIMIT
    print(f"\nfull outage of {OUTAGE:.0f} s, local: {len(log)} requests, {len(failed)} failed; replicas back "
          f"{lag:.2f} s after the restart; spend shared ${shared:.6f} vs records ${records:.6f}; rpm {LIMIT}: "
          f"{before} before + {during} during = {before + during}, over-admission {over} ({over / LIMIT:.1%})")
    assert not failed and len(log) >= 50 * (OUTAGE + 1) * 0.8
    assert records == pytest.approx(len(log) * COST) and abs(shared - records) < 1e-6  # to the cent, and then some
    assert during == sum(shares)  # each replica: its share of the limit less its share of what it saw
    assert after == max(0, LIMIT - before - during)  # what was admitted on fallback counts once back
    assert all(r.gw.state.fallback.switches == {"fallback": 1, "shared": 1} for r in replicas)


async def test_refuse_answers_503_with_retry_after_during_the_outage_and_none_after(server, gateway, tmp_path):
    replicas = await fleet(gateway, tmp_path, f"redis://127.0.0.1:{server.port}/0?prefix={prefix()}",
                           [key("load", budgetUsd=1e6)], outage="refuse")
    log, killed, back, lag = await _outage(server, replicas, "load")
    during = [(status, retry) for sent, status, retry in log if killed + 0.5 < sent < killed + OUTAGE]
    after = [status for sent, status, _ in log if sent > back]
    print(f"\nfull outage of {OUTAGE:.0f} s, refuse: {len(during)} requests well inside it, "
          f"{sum(1 for s, _ in during if s == 503)} answered 503; replicas back {lag:.2f} s after the "
          f"restart; {len(after)} requests after, {sum(1 for s in after if s != 200)} not 200")
    assert during and all(status == 503 and retry and retry.isdigit() for status, retry in during)
    assert len(after) >= 40 and all(status == 200 for status in after)


async def test_registrations_are_refused_while_away_and_the_last_known_ones_keep_serving(server, gateway, tmp_path):
    replicas = await fleet(gateway, tmp_path, f"redis://127.0.0.1:{server.port}/0?prefix={prefix()}",
                           [key("plain")], n=2)
    server.kill()
    await asyncio.sleep(0.1)
    statuses = (await burst(replicas, "plain", 4))  # the registry serves what it had
    item = {"name": "late", "supportedProvider": "MOCK", "models": ["late-model"], "isHosted": True}
    deadline = time.monotonic() + 3
    while not replicas[0].gw.state.fallback.down:  # the heartbeat notices without traffic too
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with replicas[0].post("/v1/llm/providers", json={"providers": [item]},
                                headers=ADMIN) as r:
        status, retry = r.status, r.headers.get("Retry-After")
    async with replicas[0].get("/readyz") as r:
        ready = r.status
    metrics = await (await replicas[0].get("/metrics")).text()
    assert statuses == [200] * 4 and status == 503 and retry == "1" and ready == 200
    assert 'aigw_state_fallback_switches_total{to="fallback"} 1.0' in metrics
    assert "aigw_state_on_fallback 1.0" in metrics

