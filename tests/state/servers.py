"""Real Redis topologies for the tests, started on free loopback ports in temporary directories:
one server (persisted on every write, so that a killed one comes back with its counts), a
Sentinel set (1 primary, 1 replica, 3 sentinels) and a 3-primary cluster. Tests skip with the
reason when redis-server or redis-cli is missing."""

from __future__ import annotations

import pathlib
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest
import redis

from tests.procs import free_port

MASTER = "mymaster"


def binaries_or_skip(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: redis-server, redis-tools)")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port p with p + 10000 free too (the cluster bus), below 55536 as Redis requires."""
    while True:
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port


def _wait(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
            if found:
                return found
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    """One redis-server process; `kill()` is SIGKILL, `start()` brings it back on its port."""

    def __init__(self, home: pathlib.Path, *args: str, sentinel: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.sentinel = sentinel
        self.args = args
        self.proc: subprocess.Popen | None = None
        self._client: redis.Redis | None = None

    def _command(self) -> list[str]:
        common = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.home}", "save \"\"", "protected-mode no",
                  "loglevel warning", f"logfile {self.home / 'log.txt'}", *self.args]
        if self.sentinel:  # a sentinel rewrites its config file: it has to be one
            conf = self.home / "sentinel.conf"
            if not conf.exists():
                conf.write_text("\n".join(common) + "\n")
            return ["redis-server", str(conf), "--sentinel"]
        conf = self.home / "redis.conf"
        conf.write_text("\n".join(common) + "\n")
        return ["redis-server", str(conf)]

    def start(self) -> Server:
        self.proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: self.client().ping(), 10, f"redis-server on port {self.port}")
        except BaseException:
            self.kill()
            raise
        return self

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)
        return self._client

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        if self._client is not None:
            self._client.close()


def standalone(home: pathlib.Path) -> Server:
    """A server that writes every change to its append-only file before it answers."""
    return Server(home, "appendonly yes", "appendfsync always").start()


class SentinelSet:
    """A primary, its replica and three sentinels (quorum 2) that fail over within ~2 s."""

    def __init__(self, home: pathlib.Path) -> None:
        self.primary = Server(home / "a")
        self.replica = Server(home / "b", f"replicaof 127.0.0.1 {self.primary.port}")
        watch = [f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2",
                 f"sentinel down-after-milliseconds {MASTER} 800", f"sentinel failover-timeout {MASTER} 4000"]
        self.sentinels = [Server(home / f"s{i}", *watch, sentinel=True) for i in range(3)]
        try:  # a set that does not come up is not left running
            for server in (self.primary, self.replica, *self.sentinels):
                server.start()
            _wait(self._ready, 20, "the sentinels to know each other and the replica")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        for sentinel in self.sentinels:
            fields = sentinel.client().sentinel_master(MASTER)
            if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 1:
                return False
        return self.replica.client().info("replication")["master_link_status"] == "up"

    def url(self, prefix: str) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0?prefix={prefix}"

    def master_port(self) -> int:
        return int(self.sentinels[0].client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])

    def wait_promoted(self, seconds: float = 15) -> float:
        """Wait until every sentinel names the replica as the primary, and it accepts writes."""
        began = time.monotonic()

        def promoted() -> bool:
            named = {int(s.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])
                     for s in self.sentinels}
            return named == {self.replica.port} and self.replica.client().info("replication")["role"] == "master"

        _wait(promoted, seconds, "the sentinels to promote the replica")
        return time.monotonic() - began

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


class Cluster:
    """Three primaries sharing the 16384 slots (`redis-cli --cluster create`)."""

    def __init__(self, home: pathlib.Path) -> None:
        self.nodes = [Server(home / f"n{i}", "cluster-enabled yes", "cluster-config-file nodes.conf",
                             "cluster-node-timeout 2000", port=cluster_port()) for i in range(3)]
        try:  # a cluster that does not come up is not left running
            for node in self.nodes:
                node.start()
            subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                            "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
            _wait(lambda: all(b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO")
                              for n in self.nodes), 20, "the cluster's state to be ok")
        except BaseException:
            self.stop()
            raise

    def url(self, prefix: str) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port},127.0.0.1:{self.nodes[1].port}?prefix={prefix}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
