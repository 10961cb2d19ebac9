"""Writes held to the end of the loop's turn, so that the sockets they wake are woken once.

A loaded gateway runs many requests' callbacks in one turn of the event loop, tens of µs of
Python each. A write made in the middle of that work reaches a peer on this host (the caller
next door, a local model server, the bench's load) that has gone back to sleep since the
previous one, and waking a sleeping CPU is paid by the writer's core: an inter-processor
interrupt, and in a virtual machine an exit to the hypervisor. Held until the turn's callbacks
are done, the turn's writes go out back to back and one wake-up serves them all. Measured on a
2-CPU guest at 32 connections (gateway against gateway under the same load): the requests to
the provider held, ×1.12 requests per CPU-second; the answers to the callers too, ×1.08 more
(bench/RESULTS.md). The wait is the rest of the turn, which the loop spends on other requests
anyway: at one connection it is one more pass of an idle loop (~0.02 ms).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable


class EndOfTurn:
    """Writes held until the callbacks due in this turn of the loop have run, then made in order;
    then the work that was waiting for them (`after`)."""

    __slots__ = ("_loop", "_due", "_after", "_context")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[Callable[[], None]] = []
        self._after: list[tuple] = []
        # The writes run in a context of their own, not in that of the request whose write
        # happened to open the turn (nor do the callbacks their transports schedule).
        self._context = contextvars.Context()

    def __call__(self, write: Callable[[], None]) -> None:
        if not self._due and not self._after:
            self._schedule()
        self._due.append(write)

    def _schedule(self) -> None:
        # after everything already scheduled: the rest of the turn
        self._loop.call_soon(self._run, context=self._context)

    def after(self, fn: Callable, *args) -> None:
        """Call `fn(*args)` once this turn's writes are out, those held later in the turn too: the
        bookkeeping of a request whose answer aiohttp writes once the handler has returned. In
        the caller's context, as `call_soon` would (a record finds its request's journal slot there)."""
        if not self._due and not self._after:
            self._schedule()
        self._after.append((contextvars.copy_context(), fn, args))

    def _run(self) -> None:
        # Both taken at once: a write or an `after` asked for while these run finds both lists
        # empty and schedules the next run, rather than joining a list already being emptied.
        due, self._due = self._due, []
        after, self._after = self._after, []
        for write in due:
            try:
                write()
            except Exception as exc:  # one broken write must not hold back the others' bytes
                self._loop.call_exception_handler({"message": "a held write failed", "exception": exc})
        for context, fn, args in after:
            try:
                context.run(fn, *args)
            except Exception as exc:
                self._loop.call_exception_handler({"message": "work after the writes failed", "exception": exc})


_turns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_last: EndOfTurn | None = None  # asked for once a request: a worker serves from one loop


def end_of_turn(loop: asyncio.AbstractEventLoop | None = None) -> EndOfTurn:
    """The loop's one `EndOfTurn`, shared by the client's requests, the server's answers and what
    waits for them: one call a turn for all of them."""
    global _last
    loop = loop or asyncio.get_running_loop()
    turn = _last
    if turn is None or turn._loop is not loop:  # the weak mapping's look-up cost 0.47 µs a request
        turn = _turns.get(loop)
        if turn is None:
            turn = _turns[loop] = EndOfTurn(loop)
        _last = turn
    return turn


class HeldTransport:
    """A server connection's transport whose writes go out at the end of the turn, in order.

    Whatever must not overtake them (closing, a half-close) sends them first; an abort drops them,
    as it drops the transport's own buffer. The rest is the transport's own."""

    __slots__ = ("_transport", "_turn", "_held")

    def __init__(self, transport: asyncio.Transport, turn: EndOfTurn) -> None:
        self._transport = transport
        self._turn = turn
        self._held: list = []

    def write(self, data) -> None:
        if not data:
            return
        if not self._held:
            self._turn(self.flush)
        # a buffer the writer may reuse once `write` returns is copied, as the transport would
        self._held.append(data if type(data) is bytes else bytes(data))

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():  # reset by the peer meanwhile: nowhere to go
            self._transport.writelines(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        """Bytes not yet on the socket: the transport's buffer and what this turn holds."""
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def get_extra_info(self, name: str, default=None):
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str):  # the rest (pause_reading, can_write_eof, …) as they are
        return getattr(self._transport, name)
