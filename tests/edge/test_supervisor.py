"""The `--workers` supervisor: restarts, backoff, giving up on a crash loop, readiness while a
worker is down; through real `python -m proxy serve --workers 2` processes where it matters."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal

import aiohttp
import pytest

from proxy.config import ConfigError
from proxy.edge.supervisor import Place, Policy, Supervisor
from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour
from tests.workers import both_serving, fresh, start_workers, stop_workers, worker_of, workers_of

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_restart_pauses_double_up_to_the_cap_and_start_over_after_a_stable_run():
    place = Place(0, Policy(first=0.1, cap=1.0, stable=30, window=60))
    pauses = [place.exited(now, 1) for now in (1, 2, 3, 4, 5, 6)]
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert place.failing_since == 1 and not place.crash_looping(60.9) and place.crash_looping(61)
    place.started = 10
    place.settle(39.9, place.started)
    assert place.crash_looping(61)  # 29.9 s up is not a stable run
    place.settle(40, place.started)
    assert place.failing_since is None and not place.crash_looping(1000)
    assert place.exited(41, 1) == pytest.approx(0.1) and place.failing_since == 41


def test_the_supervisor_gives_up_only_when_every_worker_has_been_failing_for_the_window():
    supervisor = Supervisor(print, (), 2, Policy(window=10))
    for place in supervisor.places:
        place.due = math.inf  # (no restart in this test)
    first, second = supervisor.places
    first.failing_since = 0.0
    supervisor._tend(100.0)
    assert not supervisor.gave_up  # the second one serves
    second.failing_since = 95.0
    supervisor._tend(104.9)
    assert not supervisor.gave_up
    supervisor._tend(105.0)
    assert supervisor.gave_up and supervisor.stopping


def test_the_pauses_come_from_the_environment():
    env = {"WORKER_RESTART_SECONDS": "0.5", "WORKER_RESTART_MAX_SECONDS": "4", "WORKER_STABLE_SECONDS": "2",
           "WORKER_CRASH_LOOP_SECONDS": "3"}
    assert Policy.from_env(env) == Policy(0.5, 4.0, 2.0, 3.0)
    assert Policy.from_env({}) == Policy(0.1, 10.0, 30.0, 60.0)
    with pytest.raises(ConfigError, match="WORKER_CRASH_LOOP_SECONDS"):
        Policy.from_env({"WORKER_CRASH_LOOP_SECONDS": "soon"})


async def readyz(gw) -> tuple[int, dict]:
    status, body, _ = await fresh(gw.url + "/readyz", method="GET")
    return status, body


async def wait_for(check, timeout: float, every: float = 0.02):
    """Seconds until `check()` (a coroutine function) is true; fails after `timeout`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        assert loop.time() - started < timeout, "not in time"
        await asyncio.sleep(every)
    return loop.time() - started


class Stream:
    """Requests one after another on one keep-alive connection, which SO_REUSEPORT gave to one
    worker: the worker is learned from every answer (`X-Request-Id`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        self.worker: str | None = None  # the worker of the last answer: the connection's
        self.answers: list[str] = []  # the worker of each answer
        self.failures: list[tuple[str | None, str]] = []  # (the connection's worker then, what failed)

    async def once(self) -> None:
        try:
            async with self.session.post(self.url, json={"model": "slow", **CHAT}) as r:
                await r.read()
                if r.status != 200:
                    self.failures.append((self.worker, f"HTTP {r.status}"))
                    return
                self.worker = worker_of(r)
                self.answers.append(self.worker)
        except aiohttp.ClientError as exc:
            self.failures.append((self.worker, type(exc).__name__))
            self.worker = None  # the next request opens a new connection: a worker unknown yet

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.once()


async def test_a_killed_worker_serves_again_within_2s_and_no_request_on_the_other_worker_fails(tmp_path,
                                                                                            fake_openai):
    fake_openai.on("slow", Behaviour(delay_headers=0.2))  # so that requests are in flight at the kill
    gw = await start_workers(tmp_path / "gw", providers=[openai_provider(fake_openai, name="s", models=("slow",))])
    streams: list[Stream] = []
    try:
        await wait_for(lambda: _ready(gw), 20)
        before = set(workers_of(gw))
        assert len(before) == 2
        while len({s.worker for s in streams}) < 2 or len(streams) < 6:  # connections on both workers
            assert len(streams) < 40
            streams.append(Stream(gw.url + "/v1/chat/completions"))
            await streams[-1].once()
        stop = asyncio.Event()
        running = [asyncio.ensure_future(s.run(stop)) for s in streams]
        await asyncio.sleep(0.5)
        victim = sorted(before)[0]
        answered = [len(s.answers) for s in streams]
        os.kill(victim, signal.SIGKILL)
        back = await wait_for(lambda: _ready(gw, without=victim), 5)
        fresh_workers = set()  # the new worker answers new connections
        for _ in range(40):
            status, _, worker = await fresh(gw.url + "/v1/chat/completions", json={"model": "mock-gpt", **CHAT})
            assert status == 200
            fresh_workers.add(worker)
            if len(fresh_workers) == 2:
                break
        stop.set()
        await asyncio.gather(*running)
    finally:
        for s in streams:
            await s.session.close()
        code = await stop_workers(gw)
    assert back <= 2.0, f"serving again after {back:.2f} s"
    first = {w for s in streams for w in s.answers[:1]}
    assert len(first) == 2 and len(fresh_workers) == 2 and len(fresh_workers - first) == 1  # a new one serves
    after = [set(s.answers[n:]) for s, n in zip(streams, answered, strict=True)]
    survivors = first & set().union(*after)
    assert len(survivors) == 1 and survivors <= fresh_workers  # all the first workers but the killed one
    (survivor,) = survivors
    # A request on a connection the killed worker held may fail (it dies with the process);
    # one on the other worker's connections never does.
    failed_on = [worker for s in streams for worker, _ in s.failures]
    assert survivor not in failed_on, [f for s in streams for f in s.failures]
    assert failed_on  # the killed worker had requests in flight: the test did exercise that
    assert code == 0


async def _ready(gw, without: int | None = None) -> bool:
    """/readyz says every worker serves (and, after a kill, `without` is no longer one of them).
    The processes are counted first: a readiness answered before the supervisor saw the kill
    would otherwise pass for one after the restart."""
    pids = workers_of(gw)
    if len(pids) != 2 or without in pids:
        return False
    try:
        status, _ = await readyz(gw)
    except aiohttp.ClientError:
        return False
    return status == 200


async def test_readyz_is_503_while_a_worker_is_down_and_200_once_it_is_back(tmp_path):
    gw = await start_workers(tmp_path / "gw", env={"WORKER_RESTART_SECONDS": "3"})  # a slow restart
    try:
        await wait_for(lambda: _ready(gw), 20)
        await both_serving(gw)
        victim = workers_of(gw)[0]
        loop = asyncio.get_running_loop()
        killed = loop.time()
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.3)
        answers = [await readyz(gw) for _ in range(10)]  # on fresh connections: the survivor answers
        assert answers == [(503, {"status": "degraded", "workersServing": 1, "workers": 2})] * 10
        status, _, _ = await fresh(gw.url + "/v1/chat/completions", json={"model": "mock-gpt", **CHAT})
        assert status == 200  # serving, on the worker left
        await wait_for(lambda: _ready(gw, without=victim), 20)
        assert loop.time() - killed >= 3.0  # back only after the pause asked for
        assert [await readyz(gw) for _ in range(10)] == [(200, {"status": "ready"})] * 10
    finally:
        code = await stop_workers(gw)
    assert code == 0
    assert b'"worker_exited"' in gw.logs() and b'"exit_code":-9' in gw.logs()


async def test_when_every_worker_keeps_failing_the_supervisor_exits_non_zero(tmp_path):
    window = 3.0
    gw = await start_workers(tmp_path / "gw", env={"WORKER_RESTART_MAX_SECONDS": "0.4",
                                                   "WORKER_CRASH_LOOP_SECONDS": str(window)})
    try:
        await wait_for(lambda: _ready(gw), 20)
        # A real cause: the data directory is replaced by a file (a volume gone wrong). Running
        # workers keep their open files; every worker started from now on fails at once.
        data = tmp_path / "gw" / "data"
        shutil.move(data, tmp_path / "gw" / "data.moved")
        data.write_text("not a directory")
        loop = asyncio.get_running_loop()
        killed = loop.time()
        for pid in workers_of(gw):
            os.kill(pid, signal.SIGKILL)
        code = await gw.wait(window + 20)
        took = loop.time() - killed
    finally:
        await stop_workers(gw)
    assert code == 1
    assert window <= took < window + 15
    logs = gw.logs()
    assert logs.count(b'"worker_exited"') >= 4 and b'"workers_crash_looping"' in logs


async def test_workers_drain_and_stop_when_the_supervisor_is_killed(tmp_path):
    gw = await start_workers(tmp_path / "gw")
    try:
        await wait_for(lambda: _ready(gw), 20)
        workers = workers_of(gw)
        gw.kill9()  # SIGKILL: no chance to pass a signal on

        async def gone() -> bool:
            return not any(os.path.exists(f"/proc/{pid}") and b"Z" not in _state(pid) for pid in workers)

        await wait_for(gone, 10)  # not left holding the port with nothing to restart them
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return b"Z"
