"""A fake Cast AI API in a process of its own that persists every batch it acknowledges, for the
crash tests (the gateway's process is `tests.procs.GatewayProcess`)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.procs import ROOT, clean_env

CASTAI_KEY = "castai-key-for-tests-0001"


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


@pytest.fixture
def castai_process(tmp_path):
    fake = CastAIProcess(tmp_path)
    yield fake
    fake.stop()
