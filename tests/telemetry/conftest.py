"""Real processes for the crash and drain tests: the gateway (`python -m proxy serve`) and a fake
Cast AI API in a separate process that persists every batch it acknowledges."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASTAI_KEY = "castai-key-for-tests-0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    drop = ("API_KEY", "API_URL", "CLUSTER_ID", "ADMIN_API_KEY", "PORT", "DATA_DIR", "API_KEY_FALLBACK")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONPATH": str(ROOT), **extra}


class CastAIProcess:
    """`python -m tests.fakes.castai` with its control port; `records()` reads what it acknowledged."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.out = directory / "castai-acked.jsonl"
        ports = directory / "castai-ports"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.castai", "--out", str(self.out), "--ports-file", str(ports),
             "--api-key", CASTAI_KEY], cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not ports.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "the fake Cast AI did not start"
            time.sleep(0.02)
        port, control = ports.read_text().split()
        self.url = f"http://127.0.0.1:{port}"
        self.control = f"http://127.0.0.1:{control}"

    async def set(self, mode: str, **spec) -> None:
        async with aiohttp.ClientSession() as session, session.post(
                self.control + "/control", json={"mode": mode, **spec}) as r:
            assert r.status == 200

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_bytes().splitlines() if line.endswith(b"}")]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class GatewayProcess:
    """The gateway as a user runs it, on a fixed loopback port, killed and restarted at will."""

    def __init__(self, config: dict, directory: pathlib.Path) -> None:
        self.port = config["listen"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "gateway.json"
        self.config.write_text(json.dumps(config))
        self.log = directory / "gateway.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(self.config)],
                                         cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    async with session.get(self.url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("the gateway did not become ready:\n" + self.log.read_text()[-3000:])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the gateway did not exit in time"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def castai_process(tmp_path):
    fake = CastAIProcess(tmp_path)
    yield fake
    fake.stop()


@pytest.fixture
def gateway_process(tmp_path):
    made = []

    def make(config: dict) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()
