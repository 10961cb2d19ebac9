"""The processes under test: started pinned to a CPU, read from /proc, always stopped.

CPU 0 serves (gateway, passthrough); CPU 1 loads (the drivers, wrk, the mock upstream), so a
server's CPU time is its own and the load generator never steals it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent  # so `python -m bench.…` resolves from anywhere
SERVER_CPU = "0"
LOAD_CPU = "1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinning() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(cmd: list[str], cpu: str) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if pinning() else cmd


def pin_self() -> None:
    """The bench process is the Python load generator: it belongs on the load CPU."""
    if pinning():
        os.sched_setaffinity(0, {int(LOAD_CPU)})


def raise_nofile() -> int:
    """Raise the soft fd limit to the hard one (inherited by the servers); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_busy(cpu: int) -> float:
    """Seconds CPU `cpu` spent busy (all processes, incl. steal) since boot, from /proc/stat."""
    prefix = f"cpu{cpu} ".encode()
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(prefix):
                v = [int(x) for x in line.split()[1:9]]
                return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _CLK_TCK  # user nice system irq softirq steal
    return 0.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A server subprocess; `url` is the OpenAI base URL requests go to."""

    def __init__(self, name: str, cmd: list[str], cpu: str, log_path: str, *, announces: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # Servers that announce their port print only that line; the rest (logs) go to the file.
        self.proc = subprocess.Popen(pinned(cmd, cpu), stdout=subprocess.PIPE if announces else self.log,
                                     stderr=self.log, env=env, cwd=ROOT, start_new_session=True)
        self.pid = self.proc.pid
        self.port = 0
        self.url = ""

    def announced_port(self, timeout: float = 15.0) -> int:
        """Wait for the `LISTENING <port>` line the bench's own servers print."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"LISTENING "):
                self.port = int(line.split()[1])
                return self.port
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        self.log.flush()
        try:
            with open(self.log.name, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready at {url} within {timeout} s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdout:
                self.proc.stdout.close()
        self.log.close()


# A fixed piece of pure-Python work: the CPU time it takes is the host's speed at that moment. On a
# shared host (a busy hypervisor) it moves by a quarter within seconds while steal time stays
# near zero, and every rate the bench measures moves with it.
_PROBE = ("import time\nbest = 1e9\nfor _ in range(3):\n    t = time.thread_time()\n    s = 0\n"
          "    for i in range(200_000):\n        s += i * i\n    best = min(best, time.thread_time() - t)\n"
          "print(best * 1000)")


def speed_probe() -> float | None:
    """Milliseconds of CPU the fixed work took on the server CPU (best of 3), between scenarios."""
    try:
        out = subprocess.run(pinned([sys.executable, "-c", _PROBE], SERVER_CPU), capture_output=True, text=True,
                             timeout=30)
        return round(float(out.stdout.strip()), 2)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
