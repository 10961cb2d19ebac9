"""A gateway in its own process, and the probes the reliability figures read from it."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import orjson

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_of(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def fds_of(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class RssSampler:
    """The highest resident size seen while it runs (every `every` seconds)."""

    def __init__(self, pid: int | str = "self", every: float = 0.01) -> None:
        self.pid, self.every = pid, every
        self.baseline = rss_of(pid)
        self.peak = self.baseline
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            rss = rss_of(self.pid)
            self.samples.append((time.monotonic(), rss))
            self.peak = max(self.peak, rss)
            await asyncio.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def clean_env(**extra) -> dict:
    """This environment without what the gateway would overlay on its config (a developer's shell
    must not point a gateway under test at a real Cast AI API, or move its port or data)."""
    drop = ("API_KEY", "API_URL", "CLUSTER_ID", "ADMIN_API_KEY", "API_KEY_FALLBACK", "PORT", "HEALTH_PORT",
            "DATA_DIR")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONPATH": str(ROOT), **extra}


class GatewayProcess:
    """`python -m proxy serve` as a user runs it, on a loopback port of its own that it keeps
    across restarts: started, killed (-9) or terminated, and started again at will."""

    def __init__(self, home: pathlib.Path, config: dict, log_level: str = "info", env: dict | None = None) -> None:
        self.home = home
        self.env = env or {}
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {"dataDir": str(home / "data"), "telemetry": {"flushMs": 50},
                       "security": {"allowPrivateUpstreams": True}, "logLevel": log_level,
                       **config, "listen": {"host": "127.0.0.1", "port": self.port}}
        self.stdout = home / "stdout.log"
        self.stderr = home / "stderr.log"
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float = 15.0) -> None:
        path = self.home / "config.json"
        path.write_bytes(orjson.dumps(self.config))
        env = clean_env(**self.env)
        with open(self.stdout, "ab") as out, open(self.stderr, "ab") as err:  # (a restart appends)
            self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(path)],
                                         stdout=out, stderr=err, env=env, cwd=str(self.home))
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited: {self.stderr.read_text()[-2000:]}")
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("gateway did not start in time")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_of(self.pid)

    def fds(self) -> int:
        return fds_of(self.pid)

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """The samples of /metrics by their full name with labels."""
        async with session.get(self.url + "/metrics") as resp:
            text = await resp.text()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def records(self, settle: float = 0.3, timeout: float = 10.0) -> list:
        """The usage records in the gateway's local store, once their count stopped changing."""
        from proxy.telemetry.store import UsageStore

        store = UsageStore(str(self.home / "data" / "usage.db"))
        try:
            found, stable_since = None, time.monotonic()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                now = await store.records()
                if found is None or len(now) != len(found):
                    found, stable_since = now, time.monotonic()
                elif time.monotonic() - stable_since >= settle:
                    break
                await asyncio.sleep(0.05)
            return found
        finally:
            store.close()

    def logs(self) -> bytes:
        return self.stdout.read_bytes() + self.stderr.read_bytes()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        """Its exit code, once it exited."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the gateway did not exit in time"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.kill9()
