"""The servers a run measures: the mock (`direct`), the bare passthrough, the gateway, others.

The gateway is started from a config file written here: one OPENAI_COMPATIBLE provider on the
mock, auth on with one caller key, a temporary data directory; records, metrics and logs on.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

from bench.procs import LOAD_CPU, SERVER_CPU, Server, cpu_seconds, free_port, python, rss_mb

KEY = "sk-bench-caller-0123456789abcdef"
PROVIDER_KEY = "sk-bench-upstream-0123456789abcdef"
# Env the gateway overlays on its config: cleared so a developer's shell cannot point the
# gateway under test at a real Cast AI API or move its port or data directory.
_GATEWAY_ENV = ("API_KEY", "API_URL", "CLUSTER_ID", "API_KEY_FALLBACK", "PORT", "HEALTH_PORT", "ADMIN_API_KEY",
                "DATA_DIR", "STORE_URL", "CACHE_URL", "PROXY_SECRET_KEY")


class Target:
    """Where load goes: an OpenAI base URL, and the server process when this run owns or knows it."""

    def __init__(self, name: str, base: str, server: Server | None = None, pid: int | None = None,
                 key: str = KEY, cpu_index: int | None = None) -> None:
        self.name = name
        self.cpu_index = cpu_index  # the CPU the server is pinned to, when it is
        self.base = base.rstrip("/")
        self.server = server
        self.pid = server.pid if server else pid
        self.key = key
        self.rss_start_mb: float | None = None
        self.rss_idle_mb: float | None = None
        self.rss_end_mb: float | None = None

    @property
    def url(self) -> str:
        return self.base + "/chat/completions"

    def cpu(self) -> float | None:
        try:
            return cpu_seconds(self.pid) if self.pid else None
        except OSError:
            return None

    def rss(self) -> float | None:
        try:
            return rss_mb(self.pid) if self.pid else None
        except OSError:
            return None


def start_mock(workdir: pathlib.Path, port: int = 0) -> Server:
    mock = Server("mock", python("bench.mock_upstream", "--port", str(port)), LOAD_CPU, str(workdir / "mock.log"),
                  announces=True)
    mock.announced_port()
    mock.url = f"http://127.0.0.1:{mock.port}/v1"
    return mock


def start_passthrough(workdir: pathlib.Path, mock: Server) -> Server:
    server = Server("passthrough", python("bench.passthrough", "--port", "0", "--upstream",
                                          f"http://127.0.0.1:{mock.port}"),
                    SERVER_CPU, str(workdir / "passthrough.log"), announces=True)
    server.announced_port()
    server.url = f"http://127.0.0.1:{server.port}/v1"
    return server


def _limits(connections: int) -> dict:
    """Raise the gateway's open-connection cap for the idle streams, when this version has one."""
    try:
        import msgspec

        from proxy.config import Limits
    except ImportError:
        return {}
    names = {f.encode_name for f in msgspec.structs.fields(Limits)}
    return {"limits": {"maxConnections": connections}} if "maxConnections" in names else {}


def gateway_config(workdir: pathlib.Path, mock: Server, port: int, models: list[str],
                   connections: int = 4096) -> pathlib.Path:
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "dataDir": str(workdir / "gateway-data"),
        "auth": {"keys": [{"id": "bench", "name": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]},
        "providers": [{"name": "bench", "supportedProvider": "OPENAI_COMPATIBLE",
                       "url": f"http://127.0.0.1:{mock.port}/v1", "models": models, "isHosted": True,
                       "apiKey": PROVIDER_KEY}],
        **_limits(connections),
    }
    path = workdir / "gateway.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_gateway(workdir: pathlib.Path, mock: Server, models: list[str], connections: int = 4096) -> Server:
    port = free_port()
    config = gateway_config(workdir, mock, port, models, connections)
    env = {k: v for k, v in os.environ.items() if k not in _GATEWAY_ENV}
    server = Server("gateway", python("proxy", "serve", "--config", str(config)), SERVER_CPU,
                    str(workdir / "gateway.log"), env=env)
    server.port = port
    server.wait_http(f"http://127.0.0.1:{port}/readyz")
    server.url = f"http://127.0.0.1:{port}/openai/v1"
    return server
