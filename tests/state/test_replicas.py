"""Three gateway processes sharing one Redis (docs/deploy.md): exact limits, budgets and live
registrations across replicas, through `python -m proxy serve` on loopback ports."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import aiohttp
import orjson
import pytest

from proxy.pipeline.auth import digest
from tests.conftest import ADMIN_KEY, REDIS_URL

ROOT = pathlib.Path(__file__).resolve().parents[2]
REPLICA_DB = 14
MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "gpt-4o-mini"], "isHosted": True}
FLAKY = {"name": "flaky", "supportedProvider": "MOCK", "models": ["flaky-429"], "isHosted": True}
COST = (8 * 0.15 + 16 * 0.6) / 1e6  # one mock answer on gpt-4o-mini
BUDGET = 10.5 * COST
KEYS = [{"id": "rpm", "sha256": digest("key-rpm"), "rpm": 100},
        {"id": "budget", "sha256": digest("key-budget"), "budgetUsd": BUDGET},
        {"id": "plain", "sha256": digest("key-plain")}]
ADMIN = {"X-API-Key": ADMIN_KEY}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


def _redis_or_skip():
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL.rsplit('/', 1)[0]}/{REPLICA_DB}", socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"Redis is not reachable ({type(exc).__name__}): start redis-server to run the replica tests")
    return client


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """Three `ai-enabler-proxy serve` processes on one Redis DB, with a key prefix of their own."""
    client = _redis_or_skip()
    prefix = f"rep{os.urandom(4).hex()}:"
    store_url = f"{REDIS_URL.rsplit('/', 1)[0]}/{REPLICA_DB}?prefix={prefix}"
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ADMIN_API_KEY", "API_KEY_FALLBACK")}
    env.update(STORE_URL=store_url, PROXY_SECRET_KEY="replicas-share-this-secret", PYTHONPATH=str(ROOT))
    procs, urls = [], []
    for i in range(3):
        home = tmp_path_factory.mktemp(f"replica{i}")
        port = _free_port()
        config = {"listen": {"host": "127.0.0.1", "port": port}, "dataDir": str(home / "data"),
                  "providers": [MOCK, FLAKY], "auth": {"adminKey": ADMIN_KEY, "keys": KEYS},
                  "telemetry": {"flushMs": 50}, "logLevel": "warning"}
        (home / "config.json").write_bytes(orjson.dumps(config))
        procs.append(subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(home / "config.json")],
                                      env=env, cwd=str(home), stdout=subprocess.DEVNULL,
                                      stderr=open(home / "stderr.log", "wb")))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    try:
        while not all(_healthy(u) for u in urls):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a replica did not start")
            time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:  # the state is in Redis: no drain to wait for
            proc.kill()
        for proc in procs:
            proc.wait(10)
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


async def _chat(session, url: str, key: str, model: str = "gpt-4o-mini"):
    async with session.post(url + "/v1/chat/completions", headers={"X-API-Key": key},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]}) as r:
        return r.status, r.headers, await r.read()


async def test_a_limit_of_100_rpm_admits_exactly_100_across_three_replicas(replicas):
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(_chat(session, replicas[i % 3], "key-rpm") for i in range(150)))
    admitted = sum(1 for status, _, _ in results if status == 200)
    refused = [(h, b) for status, h, b in results if status == 429]
    print(f"\nRPM 100 across 3 replicas, 150 concurrent requests: {admitted} admitted, {len(refused)} refused")
    assert admitted == 100 and len(refused) == 50
    assert all(h["Retry-After"].isdigit() and b'"rate_limit_exceeded"' in b for h, b in refused)


async def test_a_budget_stops_spend_within_one_requests_cost(replicas):
    statuses = []
    async with aiohttp.ClientSession() as session:
        for i in range(20):
            statuses.append((await _chat(session, replicas[i % 3], "key-budget"))[0])
        async with session.get(replicas[1] + "/v1/llm/api-keys/budget/budget", headers=ADMIN) as r:
            budget = await r.json()
    overshoot = budget["totalSpendUsd"] - BUDGET
    print(f"\nbudget ${BUDGET:.3e} across 3 replicas: {statuses.count(200)} admitted, spent "
          f"${budget['totalSpendUsd']:.3e}, overshoot ${overshoot:.3e} = {overshoot / COST:.2f} requests")
    assert statuses == [200] * 11 + [429] * 9
    assert budget["exhausted"] is True and 0 <= overshoot < COST


async def test_a_registration_on_one_replica_serves_traffic_on_the_others_within_a_second(replicas):
    item = {"name": "late", "supportedProvider": "MOCK", "models": ["late-model"], "isHosted": True}
    async with aiohttp.ClientSession() as session:
        assert (await _chat(session, replicas[1], "key-plain", "late-model"))[0] == 404
        async with session.post(replicas[0] + "/v1/llm/providers", json={"providers": [item]}, headers=ADMIN) as r:
            assert r.status == 200
        registered = time.monotonic()
        seen = {}
        while len(seen) < 2 and time.monotonic() - registered < 2:
            for url in replicas[1:]:
                if url not in seen and (await _chat(session, url, "key-plain", "late-model"))[0] == 200:
                    seen[url] = time.monotonic() - registered
            await asyncio.sleep(0.002)
        async with session.delete(replicas[2] + "/v1/llm/providers/late", headers=ADMIN) as r:
            assert r.status == 200
        removed = time.monotonic()
        while (await _chat(session, replicas[0], "key-plain", "late-model"))[0] != 404:
            assert time.monotonic() - removed < 1
            await asyncio.sleep(0.002)
        gone = time.monotonic() - removed
    print(f"\nregistration live on the other replicas after {max(seen.values()) * 1000:.1f} ms; "
          f"removal after {gone * 1000:.1f} ms")
    assert len(seen) == 2 and max(seen.values()) < 1.0


async def test_a_circuit_opened_on_one_replica_is_open_on_the_others(replicas):
    async with aiohttp.ClientSession() as session:
        assert (await _chat(session, replicas[2], "key-plain", "flaky-429"))[0] == 429
        opened = time.monotonic()
        states = {}
        while len(states) < 2 and time.monotonic() - opened < 0.8:
            for url in replicas[:2]:
                async with session.get(url + "/v1/llm/providers", headers=ADMIN) as r:
                    listed = {p["name"]: p for p in (await r.json())["providers"]}
                if listed["flaky"]["circuitOpen"]:
                    states.setdefault(url, time.monotonic() - opened)
    assert len(states) == 2, states
