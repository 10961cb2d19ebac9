"""Writes held to the end of the loop's turn: on a real socket pair, what the peer gets and when."""

from __future__ import annotations

import asyncio
import contextvars
import socket

import pytest

from proxy.net.turn import EndOfTurn, HeldTransport, end_of_turn


class _Quiet(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.fixture
async def pair():
    """(held transport, its protocol, the peer's raw non-blocking socket)"""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, protocol = await loop.create_connection(_Quiet, sock=ours)
    yield HeldTransport(transport, EndOfTurn(loop)), protocol, peer
    transport.abort()
    peer.close()


def _waiting(peer: socket.socket) -> bytes | None:
    """What the peer could read now without waiting; None when nothing has arrived."""
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return None


async def _read_all(peer: socket.socket) -> bytes:
    """Everything until the sender closes (or resets)."""
    loop, got = asyncio.get_running_loop(), b""
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(peer, 65536), 2)
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data


async def _turn_ends() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_the_writes_of_a_turn_reach_the_peer_after_it_in_order(pair):
    held, _, peer = pair
    held.write(b"one ")
    held.writelines([b"two ", b"", b"three"])
    assert _waiting(peer) is None  # nothing has left during the turn
    assert held.get_write_buffer_size() == len(b"one two three")  # held bytes count as not yet sent
    await _turn_ends()
    await asyncio.sleep(0.01)
    assert _waiting(peer) == b"one two three"
    assert held.get_write_buffer_size() == 0


async def test_the_calls_held_in_a_turn_are_made_together_after_what_was_due_before_them():
    loop = asyncio.get_running_loop()
    turn, order = EndOfTurn(loop), []
    loop.call_soon(order.append, "due before")
    turn(lambda: order.append("first write"))
    loop.call_soon(order.append, "due after the first")  # does not split the held calls
    turn(lambda: order.append("second write"))
    await _turn_ends()
    assert order == ["due before", "first write", "second write", "due after the first"]


async def test_work_after_the_writes_waits_for_writes_held_later_in_the_turn():
    # a handler's bookkeeping is asked for before aiohttp writes its answer: it must not hold the
    # answer back by its own work
    turn, order = EndOfTurn(asyncio.get_running_loop()), []
    turn.after(order.append, "the record")
    turn(lambda: order.append("the answer"))
    await _turn_ends()
    assert order == ["the answer", "the record"]


_REQUEST = contextvars.ContextVar("request")


async def test_work_after_the_writes_runs_in_the_context_it_was_asked_from():
    # the record of a request finds its journal slot in a context variable: run in the context of
    # whichever request's write opened the turn, it closed that request's slot instead
    turn, seen = EndOfTurn(asyncio.get_running_loop()), []

    async def request(name: str) -> None:
        _REQUEST.set(name)
        turn(lambda: seen.append(("write", _REQUEST.get(None))))  # a write held for this request
        turn.after(lambda: seen.append(("after", _REQUEST.get())))

    await asyncio.gather(request("a"), request("b"))
    await _turn_ends()
    # the writes belong to no request; each request's work finds its own
    assert seen == [("write", None), ("write", None), ("after", "a"), ("after", "b")]


async def test_a_loop_has_one_end_of_turn():
    loop = asyncio.get_running_loop()
    assert end_of_turn() is end_of_turn(loop)
    other = asyncio.new_event_loop()
    try:
        assert end_of_turn(other) is not end_of_turn(loop)
    finally:
        other.close()


async def test_a_failing_held_call_does_not_hold_back_the_others():
    loop = asyncio.get_running_loop()
    reported, done = [], []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    try:
        turn = EndOfTurn(loop)

        def broken() -> None:
            raise RuntimeError("the handle is closed")

        turn(broken)
        turn(lambda: done.append(True))
        await _turn_ends()
    finally:
        loop.set_exception_handler(None)
    assert done == [True]
    assert [str(exc) for exc in reported] == ["the handle is closed"]


async def test_close_sends_what_is_held_before_the_end(pair):
    held, protocol, peer = pair
    held.write(b"the answer")
    held.close()
    assert await _read_all(peer) == b"the answer"
    await asyncio.wait_for(protocol.lost, 2)


async def test_a_half_close_sends_what_is_held_first(pair):
    held, _, peer = pair
    assert held.can_write_eof()  # the transport's own, passed through
    held.write(b"last bytes")
    held.write_eof()
    assert await _read_all(peer) == b"last bytes"


async def test_abort_drops_what_is_held(pair):
    held, _, peer = pair
    held.write(b"never sent")
    held.abort()
    await _turn_ends()
    assert await _read_all(peer) == b""


async def test_a_buffer_changed_after_its_write_goes_out_as_it_was_written(pair):
    held, _, peer = pair
    buffer = bytearray(b"as written")
    held.write(buffer)
    buffer[:] = b"overwritten"
    held.close()
    assert await _read_all(peer) == b"as written"


async def test_bytes_held_for_a_peer_that_reset_are_dropped_quietly(pair):
    held, protocol, peer = pair
    held.write(b"too late")
    held._transport.abort()  # the peer's reset, seen before the turn's end
    await _turn_ends()  # nothing raised, nothing reported
    assert held.is_closing()
    await asyncio.wait_for(protocol.lost, 2)


async def test_what_a_held_call_holds_while_the_turn_ends_is_made_at_the_next_turns_end():
    turn, order = EndOfTurn(asyncio.get_running_loop()), []

    def write() -> None:
        order.append("a write")
        turn(lambda: order.append("the write it caused"))
        turn.after(order.append, "work it caused")

    turn(write)
    turn.after(order.append, "the record")
    await _turn_ends()
    await _turn_ends()
    assert order == ["a write", "the record", "the write it caused", "work it caused"]
