"""`serve --workers 2` on the embedded store: a change made through one worker serves on both
within a second (the promise the Redis store keeps across replicas), through real processes."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import ADMIN_KEY, openai_provider
from tests.procs import GatewayProcess

ADMIN = {"X-API-Key": ADMIN_KEY}
MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}


async def start_workers(home, workers: int = 2, env: dict | None = None) -> GatewayProcess:
    config = {"providers": [MOCK], "auth": {"adminKey": ADMIN_KEY},
              "drain": {"acceptSeconds": 0, "deadlineSeconds": 5, "flushSeconds": 0.5}}
    gw = GatewayProcess(home, config, log_level="warning", env=env)
    gw.config["listen"]["workers"] = workers
    await gw.start()
    return gw


def workers_of(gw: GatewayProcess) -> list[int]:
    """The supervisor's worker processes, by pid."""
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(gw.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


async def stop_workers(gw: GatewayProcess) -> int | None:
    """SIGTERM, as Kubernetes stops a pod: the supervisor drains its workers and exits. Its exit
    code; workers still there after 30 s are killed, so that no test leaves a process behind."""
    import os
    import signal

    if gw.proc is None or gw.proc.poll() is not None:
        return gw.proc.returncode if gw.proc else None
    workers = workers_of(gw)
    gw.terminate()
    try:
        return await gw.wait(30)
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        gw.stop()


def worker_of(response: aiohttp.ClientResponse) -> str:
    """The serving process: a request id starts with a prefix drawn once per process."""
    return response.headers["X-Request-Id"][:16]


async def fresh(url: str, method: str = "POST", **kwargs) -> tuple[int, dict, str | None]:
    """One request on a connection of its own: SO_REUSEPORT picks a worker per connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.request(method, url, **kwargs) as r:
            worker = worker_of(r) if "X-Request-Id" in r.headers else None
            return r.status, await r.json(), worker


async def both_serving(gw: GatewayProcess, timeout: float = 20.0) -> set[str]:
    """Wait until requests on fresh connections have reached two different workers."""
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    seen: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(seen) < 2:
        assert loop.time() < deadline, f"only {len(seen)} worker answered"
        status, _, worker = await fresh(gw.url + "/v1/chat/completions", json=body)
        if status == 200:
            seen.add(worker)
    return seen


async def test_a_registration_a_deletion_and_a_budget_reach_every_worker_within_a_second(tmp_path, fake_openai):
    gw = await start_workers(tmp_path / "gw")
    try:
        await both_serving(gw)
        provider = openai_provider(fake_openai, name="reg", models=("reg-model",))
        status, _, _ = await fresh(gw.url + "/v1/llm/providers", json={"providers": [provider]}, headers=ADMIN)
        assert status == 200
        await asyncio.sleep(1.0)
        body = {"model": "reg-model", "messages": [{"role": "user", "content": "hi"}]}
        answers = [await fresh(gw.url + "/v1/chat/completions", json=body) for _ in range(20)]
        assert [status for status, _, _ in answers] == [200] * 20
        assert len({worker for _, _, worker in answers}) == 2  # both workers served it

        status, _, _ = await fresh(gw.url + "/v1/llm/providers/reg", method="DELETE", headers=ADMIN)
        assert status == 200
        await asyncio.sleep(1.0)
        answers = [await fresh(gw.url + "/v1/chat/completions", json=body) for _ in range(20)]
        assert [(status, out["error"]["code"]) for status, out, _ in answers] == [(404, "model_not_found")] * 20
        assert len({worker for _, _, worker in answers}) == 2

        budget = gw.url + "/v1/llm/api-keys/team-a/budget"
        status, _, _ = await fresh(budget, method="PUT", json={"budgetLimitUsd": 7.5}, headers=ADMIN)
        assert status == 200
        await asyncio.sleep(1.0)
        seen = [await fresh(budget, method="GET", headers=ADMIN) for _ in range(20)]
        assert [(out["budgetLimitUsd"], out["source"]) for _, out, _ in seen] == [(7.5, "api")] * 20
    finally:
        assert await stop_workers(gw) == 0
