"""1,000 sequential non-stream requests, through the gateway and straight to the fake upstream.

    python -m bench.sequential [--count 1000]

The fake OpenAI upstream (tests/fakes/openai.py) and the gateway (`python -m proxy serve`) run
as their own processes on loopback; this process is the client. Prints p50/p99 of both and the
difference, from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-sequential-bench-key"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
FAKE = ("import sys; from aiohttp import web; from tests.fakes.openai import FakeOpenAI; "
        "web.run_app(FakeOpenAI().app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url) as r:
                if r.status < 500:
                    return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _run(session: aiohttp.ClientSession, url: str, count: int, headers: dict) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.post(url, json=BODY, headers=headers) as r:
            await r.read()
            assert r.status == 200, r.status
        took.append(time.perf_counter() - started)
    return sorted(took)


def _pct(values: list[float], q: float) -> float:
    return values[min(int(len(values) * q), len(values) - 1)] * 1000


async def main(count: int) -> dict:
    fake_port, gw_port = _port(), _port()
    data = tempfile.mkdtemp(prefix="aep-seq-")
    config = pathlib.Path(data) / "config.json"
    config.write_text(json.dumps({
        "listen": {"port": gw_port}, "dataDir": data,
        "auth": {"keys": [{"id": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]},
        "providers": [{"name": "fake", "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True,
                       "url": f"http://127.0.0.1:{fake_port}/v1", "apiKey": "sk-upstream", "models": ["gpt-4o-mini"]}]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fake = subprocess.Popen([sys.executable, "-c", FAKE, str(fake_port)], cwd=ROOT, env=env)
    gateway = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await _ready(session, f"http://127.0.0.1:{gw_port}/readyz")
            await _ready(session, f"http://127.0.0.1:{fake_port}/v1/chat/completions")
            auth = {"Authorization": f"Bearer {KEY}", "X-Tags": "bench:sequential"}
            await _run(session, f"http://127.0.0.1:{gw_port}/v1/chat/completions", 50, auth)  # warm up
            gw = await _run(session, f"http://127.0.0.1:{gw_port}/v1/chat/completions", count, auth)
            direct = await _run(session, f"http://127.0.0.1:{fake_port}/v1/chat/completions", count, {})
    finally:
        for proc in (gateway, fake):
            proc.terminate()
            proc.wait(timeout=30)
    return {"count": count,
            "gateway": {"p50_ms": _pct(gw, 0.5), "p99_ms": _pct(gw, 0.99)},
            "direct": {"p50_ms": _pct(direct, 0.5), "p99_ms": _pct(direct, 0.99)},
            "added": {"p50_ms": _pct(gw, 0.5) - _pct(direct, 0.5), "p99_ms": _pct(gw, 0.99) - _pct(direct, 0.99)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    result = asyncio.run(main(parser.parse_args().count))
    for name in ("direct", "gateway", "added"):
        print(f"{name:8} p50 {result[name]['p50_ms']:7.3f} ms   p99 {result[name]['p99_ms']:7.3f} ms")
