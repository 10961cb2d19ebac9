"""`serve --workers N` in real processes: started, counted, asked on fresh connections, stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import aiohttp

from tests.conftest import ADMIN_KEY
from tests.procs import GatewayProcess

ADMIN = {"X-API-Key": ADMIN_KEY}
MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}


async def start_workers(home, workers: int = 2, env: dict | None = None, providers=()) -> GatewayProcess:
    config = {"providers": [MOCK, *providers], "auth": {"adminKey": ADMIN_KEY},
              "drain": {"acceptSeconds": 0, "deadlineSeconds": 5, "flushSeconds": 0.5}}
    gw = GatewayProcess(home, config, log_level="warning", env=env)
    gw.config["listen"]["workers"] = workers
    await gw.start(timeout=30.0)  # N processes to start: on a loaded 2-core host 15 s was missed once
    return gw


def workers_of(gw: GatewayProcess) -> list[int]:
    """The supervisor's worker processes, by pid: its children forked from it (same command line)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(gw.pid)], capture_output=True, text=True).stdout
    found = []
    for pid in map(int, out.split()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f, open(f"/proc/{gw.pid}/cmdline", "rb") as g:
                if f.read() == g.read():
                    found.append(pid)
        except FileNotFoundError:  # gone meanwhile
            pass
    return found


async def stop_workers(gw: GatewayProcess) -> int | None:
    """SIGTERM, as Kubernetes stops a pod: the supervisor drains its workers and exits. Its exit
    code; workers still there after 30 s are killed, so that no test leaves a process behind."""
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
