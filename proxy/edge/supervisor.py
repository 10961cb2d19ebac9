"""`serve --workers N`: N worker processes sharing the port (SO_REUSEPORT), kept running.

    a worker exits      its place is refilled after a pause: 0.1 s, doubled for every exit in
                        a row up to 10 s, back to 0.1 s once a worker stayed up 30 s
    every worker fails  when every place has been failing (exits with no 30 s run between
                        them) for 60 s, the supervisor stops and exits 1, so that Kubernetes
                        restarts the pod instead of keeping a gateway that cannot serve
    SIGTERM / SIGINT    forwarded to every worker, each drains (proxy.edge.drain); nothing is
                        restarted from then on; the exit code is the highest of the workers'
    /readyz             503 while fewer workers than configured serve: each worker marks its
                        place in shared memory once it listens, the supervisor clears the mark
                        the moment the worker is gone (`short`)

The pauses and the window come from the environment, in seconds: WORKER_RESTART_SECONDS,
WORKER_RESTART_MAX_SECONDS, WORKER_STABLE_SECONDS, WORKER_CRASH_LOOP_SECONDS.

Workers are forked from the supervisor once it has imported the heavy third-party libraries
(`_PRELOAD`): a restarted worker skips about two thirds of its start-up imports and serves
again well within 2 s on a busy host. No module of the gateway itself is imported here before
a fork (some draw per-process ids when imported), and no thread is started here.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import structlog

from proxy.config import ConfigError

log = structlog.get_logger("proxy")

_PRELOAD = ("aiohttp.web", "uvloop", "httptools")  # pure libraries: no per-process state at import

_board = None  # in a worker: the places' serving marks, shared with the supervisor and its peers
_place = -1  # in a worker: its own place on the board


class Policy(NamedTuple):
    first: float = 0.1  # seconds before the first restart
    cap: float = 10.0  # the longest pause between restarts
    stable: float = 30.0  # a worker up this long was not crash-looping: the pause starts over
    window: float = 60.0  # every place failing this long: give up, exit non-zero

    @classmethod
    def from_env(cls, env=os.environ) -> Policy:
        names = {"first": "WORKER_RESTART_SECONDS", "cap": "WORKER_RESTART_MAX_SECONDS",
                 "stable": "WORKER_STABLE_SECONDS", "window": "WORKER_CRASH_LOOP_SECONDS"}
        found = {}
        for field, name in names.items():
            if env.get(name):
                try:
                    found[field] = float(env[name])
                except ValueError:
                    raise ConfigError(f"{name}: a number of seconds, not {env[name]!r}") from None
                if not 0 <= found[field] <= 86400:
                    raise ConfigError(f"{name}: between 0 and 86400 seconds")
        return cls(**found)


class Place:
    """One worker's place: its process, and when and how soon to refill it after an exit."""

    def __init__(self, index: int, policy: Policy) -> None:
        self.index = index
        self.policy = policy
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.started = 0.0
        self.due = 0.0  # when an empty place is refilled
        self.pause = policy.first  # the pause after the next exit
        self.failing_since: float | None = None  # the first exit of the current run of failures
        self.exitcode: int | None = None

    def exited(self, now: float, exitcode: int | None) -> float:
        """Record an exit; the pause before the restart."""
        self.proc, self.exitcode = None, exitcode
        self.settle(now, self.started)
        if self.failing_since is None:
            self.failing_since = now
        pause, self.pause = self.pause, min(self.pause * 2, self.policy.cap)
        self.due = now + pause
        return pause

    def settle(self, now: float, started: float) -> None:
        """A worker that has been up `stable` seconds ends a run of failures."""
        if now - started >= self.policy.stable:
            self.pause, self.failing_since = self.policy.first, None

    def crash_looping(self, now: float) -> bool:
        return self.failing_since is not None and now - self.failing_since >= self.policy.window


class Supervisor:
    def __init__(self, target: Callable, args: tuple, workers: int, policy: Policy | None = None) -> None:
        self.target, self.args = target, args
        self.policy = policy or Policy.from_env()
        self.ctx = multiprocessing.get_context("fork")
        self.pid = os.getpid()
        self.board = self.ctx.RawArray(ctypes.c_ubyte, workers)
        self.places = [Place(i, self.policy) for i in range(workers)]
        self.stopping = False
        self.gave_up = False

    def run(self) -> int:
        for name in _PRELOAD:
            importlib.import_module(name)
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for place in self.places:
            self._start(place)
        while not (self.stopping and not self._running()):
            self._wait()
            self._tend(time.monotonic())
        if self.gave_up:
            return 1
        return max([place.exitcode or 0 for place in self.places] + [0])

    def _running(self) -> list:
        return [place.proc for place in self.places if place.proc is not None]

    def _start(self, place: Place) -> None:
        self.board[place.index] = 0
        proc = self.ctx.Process(target=_worker_main, name=f"worker-{place.index}",
                                args=(self.board, place.index, os.getpid(), self.target, self.args))
        proc.start()
        place.proc, place.started = proc, time.monotonic()
        if self.stopping:  # a signal came while it started
            proc.terminate()

    def _wait(self) -> None:
        """Until a worker exits, a restart is due, or a second passes."""
        now = time.monotonic()
        dues = [place.due for place in self.places if place.proc is None and not self.stopping]
        timeout = max(min(dues + [now + 1.0]) - now, 0.0)
        sentinels = [proc.sentinel for proc in self._running()]
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout)
        else:
            time.sleep(timeout)

    def _tend(self, now: float) -> None:
        for place in self.places:
            proc = place.proc
            if proc is not None and not proc.is_alive():
                self.board[place.index] = 0  # /readyz: one short, from now
                self._exited(place, proc, now)
            elif proc is not None:
                place.settle(now, place.started)
            elif not self.stopping and now >= place.due:
                self._start(place)
        if not self.stopping and all(place.crash_looping(now) for place in self.places):
            log.error("workers_crash_looping", workers=len(self.places), seconds=self.policy.window,
                      detail="every worker keeps exiting: stopping so that the pod is restarted")
            self.gave_up = True
            self._forward(signal.SIGTERM)

    def _exited(self, place: Place, proc, now: float) -> None:
        code, pid = proc.exitcode, proc.pid
        place.proc = None  # before it is closed: the signal handler may run between any two lines
        proc.close()
        if self.stopping:
            place.exitcode = code
            return
        pause = place.exited(now, code)
        log.warning("worker_exited", worker=place.index, pid=pid, exit_code=code, restart_in=round(pause, 3))

    def _signal(self, signum, _frame) -> None:
        if os.getpid() == self.pid:  # (a worker runs this handler too, until it sets its own)
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        """Stop restarting; pass the signal on (a second one hurries the workers' drain along)."""
        self.stopping = True
        for proc in self._running():
            try:
                if proc.is_alive():
                    os.kill(proc.pid, signum)
            except (ValueError, ProcessLookupError):  # closed or gone meanwhile: nothing to tell
                pass


def _worker_main(board, place: int, parent: int, target: Callable, args: tuple) -> None:
    """A worker's first steps: its place on the board, and an end with its supervisor."""
    global _board, _place
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the supervisor's handlers came with the fork;
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker's loop sets its own
    _board, _place = board, place
    _die_with(parent)
    target(*args)


def _die_with(parent: int) -> None:
    """Drain and stop if the supervisor is killed (SIGKILL gives it no chance to pass a signal
    on): a worker left behind would hold the port with nothing to restart it."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the supervisor died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serving() -> None:
    """Called by a worker once it listens and its gateway is ready."""
    if _board is not None:
        _board[_place] = 1


def short() -> tuple[int, int] | None:
    """(workers serving, workers configured) while fewer serve than configured; else None."""
    if _board is None:
        return None
    up = sum(_board)
    return None if up == len(_board) else (up, len(_board))
