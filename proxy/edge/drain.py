"""Graceful drain on SIGTERM, inside Kubernetes' 30 s grace period (docs/reliability.md, the five policies).

    signal            readiness (/readyz) fails at once, so the endpoints controller stops routing
    … acceptSeconds   the listener still accepts: requests already routed here keep arriving
    then              the listener closes; responses from now on carry `Connection: close`
    … deadline        in-flight requests run to completion
    at deadline       streams still open get a terminal SSE error event, then every handler left
                      is cancelled, which writes its usage record (as aborted by the client)
    after             the app stops: telemetry flushes for `drain.flushSeconds`, the rest stays
                      in the spool for the next start; the process exits 0

SIGINT (Ctrl-C) skips the accept window; a second signal cuts any window short.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from proxy.config import Drain as DrainConfig
from proxy.errors import Unavailable

log = structlog.get_logger("proxy")

_CUT = Unavailable("the gateway is shutting down: this stream was ended at the drain deadline",
                   code="gateway_draining", retry_after=1)
CUT_EVENT = b"data: " + _CUT.to_json() + b"\n\n"


def streaming(http_request: web.Request, response: web.StreamResponse) -> None:
    """Call before a stream's headers go: the drain ends it with an error event at its deadline,
    and its connection closes after it when it starts while draining."""
    drain = http_request.app.get(DRAIN)
    if drain is not None:
        drain._streaming(response)


class Drain:
    """Tracks the handlers in flight (and which of them stream) and runs the drain on a signal."""

    def __init__(self, gw, cfg: DrainConfig) -> None:
        self.gw = gw
        self.cfg = cfg
        self.requested = asyncio.Event()
        self.tasks: dict[asyncio.Task, web.StreamResponse | None] = {}  # handlers running → their SSE response
        self._idle = asyncio.Event()
        self._hurry = asyncio.Event()
        self._skip_accept = False
        self._started = 0.0

    def install(self, app: web.Application) -> None:
        """Make the drain the app's (`DRAIN`): the app's middleware tracks each handler with `enter`
        and `leave`, and a stream registers itself with `streaming` before its headers go."""
        app[DRAIN] = self

    def enter(self, task: asyncio.Task) -> None:
        self.tasks[task] = None
        self._idle.clear()

    def leave(self, task: asyncio.Task) -> None:
        self.tasks.pop(task, None)
        if not self.tasks:
            self._idle.set()

    def answering(self, response: web.StreamResponse) -> None:
        """A handler's answer, before aiohttp sends it: while draining, its connection closes after it."""
        if self.gw.draining and not response.prepared:
            response.force_close()

    def _streaming(self, response: web.StreamResponse) -> None:
        if self.gw.draining:
            response.force_close()
        task = asyncio.current_task()
        if task in self.tasks:
            self.tasks[task] = response  # written a terminal error event at the deadline

    def begin(self, signum: int = signal.SIGTERM) -> None:
        """The signal handler: readiness fails now; a second signal hurries the drain along."""
        if self.requested.is_set():
            self._hurry.set()
            return
        self.gw.draining = True
        self._skip_accept = signum == signal.SIGINT
        self._started = asyncio.get_running_loop().time()
        self.requested.set()
        log.info("draining", signal=signal.Signals(signum).name, in_flight=len(self.tasks))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), max(seconds, 0.0))

    async def run(self, sites) -> None:
        """After `begin`: the accept window, close the listeners, wait for or cut what is in flight."""
        if not self._skip_accept:
            await self._pause(self.cfg.accept_seconds)
        for site in sites:
            await site.stop()
        left = self._started + self.cfg.deadline_seconds - asyncio.get_running_loop().time()
        if self.tasks and left > 0 and not self._hurry.is_set():
            waiter = asyncio.ensure_future(self._idle.wait())
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([waiter, hurry], timeout=left, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            hurry.cancel()
        await self._cut()

    async def _cut(self) -> None:
        """The deadline: end open streams with an error event, cancel every handler left."""
        running = [task for task in self.tasks if not task.done()]
        if not running:
            return
        for task in running:
            response = self.tasks.get(task)
            if response is not None:
                with contextlib.suppress(Exception):  # the client may be gone, the stream ended
                    await asyncio.wait_for(response.write(CUT_EVENT), 1.0)
            task.cancel()
        await asyncio.wait(running, timeout=2.0)
        log.warning("drain_deadline", cut=len(running), detail="requests still running at the drain deadline "
                    "were ended; their usage records are written")


DRAIN = web.AppKey("proxy.edge.drain", Drain)
