"""The HTTP server's own defences (proxy.edge.server): the guarded handler, the connection cap, the
framing checks. RELIABILITY R21-R24 run them at scale in tests/reliability/test_r21_r24_*."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.edge import limits, server
from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def _post(extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


async def _open(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


def test_it_still_hooks_into_aiohttp_the_way_it_expects():
    """The handler internals `GuardedHandler` reads; a new aiohttp that renames them fails here."""
    from aiohttp.base_protocol import BaseProtocol

    assert {"_waiter", "_messages", "_force_close"} <= set(web.RequestHandler.__slots__)
    assert "_loop" in BaseProtocol.__slots__
    assert callable(web.AppRunner._make_server)
    assert hasattr(web.StreamResponse, "_req") and "_lingering_time" in web.RequestHandler.__slots__


async def test_runner_serves_guarded_handlers_with_the_configured_limits(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"keepAlive": 7, "maxHeaderLine": 4096, "maxHeaders": 50}})
    reader, writer = await _open(gw.port)
    writer.write(_post())
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    (handler,) = gw.runner.server.connections
    assert isinstance(gw.runner.server, server.GuardedServer) and isinstance(handler, server.GuardedHandler)
    assert handler.keepalive_timeout == 7 and handler.max_line_size == 4096 and handler.max_headers == 50
    writer.close()


async def test_a_request_trickling_its_headers_gets_a_408_at_the_header_deadline(served):
    gw = await served({"limits": {"headerTimeout": 0.3}})
    reader, writer = await _open(gw.port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = await asyncio.wait_for(reader.read(), 2)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert gw.runner.guard.refused == {"header_timeout": 1}


async def test_a_silent_connection_is_left_to_the_keep_alive_timeout(served):
    gw = await served({"limits": {"headerTimeout": 0.2, "keepAlive": 0.8}})
    reader, writer = await _open(gw.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 3) == b""  # no bytes at all: closed, not answered
    assert time.monotonic() - started >= 0.7
    assert gw.runner.guard.refused == {}


async def test_requests_arriving_whole_arm_no_timer(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))]})
    reader, writer = await _open(gw.port)
    writer.write(_post())
    await reader.readuntil(b"\r\n")
    (handler,) = gw.runner.server.connections
    assert handler._timer is None
    writer.close()


@pytest.mark.parametrize("pieces", [1, 8], ids=["one-read", "many-reads"])
async def test_the_whole_header_section_is_capped(served, fake_openai, pieces):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"maxHeaderBytes": 4096}})
    raw = _post(b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 500) for i in range(10)))
    reader, writer = await _open(gw.port)
    step = len(raw) // pieces + 1
    for i in range(0, len(raw), step):
        writer.write(raw[i:i + step])
        await writer.drain()
        await asyncio.sleep(0.01)
    answer = await asyncio.wait_for(reader.read(), 2)
    assert answer.split(b" ")[1] == b"431"
    assert fake_openai.requests == []


async def test_a_body_below_the_minimum_rate_closes_the_connection(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"minBodyRate": 1000, "bodyRateWindow": 0.2}})
    reader, writer = await _open(gw.port)
    raw = _post()
    writer.write(raw[:-10])  # the headers and most of the body, then nothing
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert time.monotonic() - started < 0.6
    assert gw.runner.guard.refused == {"slow_body": 1} and fake_openai.requests == []


async def test_over_the_connection_cap_the_oldest_idle_connection_goes(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"maxConnections": 3}})
    idle = [await _open(gw.port) for _ in range(3)]
    await asyncio.sleep(0.05)
    reader, writer = await _open(gw.port)  # a fourth, with a real request
    writer.write(_post())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)).startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(idle[0][0].read(), 2) == b""  # the oldest idle one was closed
    assert gw.runner.guard.refused == {"connection_cap_evicted": 1}
    for _, w in idle + [(reader, writer)]:
        w.close()


async def test_over_the_cap_with_every_connection_busy_the_new_one_is_closed(served, fake_openai):
    fake_openai.on("slow", Behaviour(delay_headers=1.0))
    gw = await served({"providers": [openai_provider(fake_openai, models=("slow",))],
                       "limits": {"maxConnections": 2}})
    busy = [await _open(gw.port) for _ in range(2)]
    for _, writer in busy:
        writer.write(_post(body=BODY.replace(b'"m"', b'"slow"')))
    await asyncio.sleep(0.2)
    reader, writer = await _open(gw.port)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert gw.runner.guard.refused == {"connection_cap": 1}
    for r, _ in busy:  # the busy ones finish normally
        assert (await asyncio.wait_for(r.readuntil(b"\r\n"), 3)).startswith(b"HTTP/1.1 200")


def _record_reads(monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = server.Reader.buffer_updated

    def buffer_updated(self, nbytes: int) -> None:
        sizes.append(nbytes)
        original(self, nbytes)

    monkeypatch.setattr(server.Reader, "buffer_updated", buffer_updated)
    return sizes


async def test_reads_stay_small_until_the_handler_reads_the_body(served, fake_openai, monkeypatch):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))]})
    sizes = _record_reads(monkeypatch)
    content = "".join(chr(0x41 + i % 26) for i in range(600_000))
    reader, writer = await _open(gw.port)
    writer.write(_post(body=orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}]})))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(b"HTTP/1.1 200")
    assert fake_openai.requests[-1].body["messages"][0]["content"] == content  # every piece, in order
    assert sizes[0] <= server.SMALL_READ  # the headers' read: no handler yet
    assert max(sizes) > server.SMALL_READ and max(sizes) <= server.LARGE_READ  # widened once it reads
    writer.close()


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(served, fake_openai, monkeypatch):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"maxBodyBytes": 1024 * 1024}})
    sizes = _record_reads(monkeypatch)
    for path in ("/v1/chat/completions", "/v1/llm/providers"):  # a data-plane route and an admin one
        sizes.clear()
        reader, writer = await _open(gw.port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {20 * 1024 * 1024}\r\n\r\n".encode() + b"x" * 1000)  # and no more
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
        assert sum(sizes) <= server.SMALL_READ  # answered without waiting for the body
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert orjson.loads(await reader.readexactly(length))["error"]["code"] == "request_too_large"
        writer.close()
    assert gw.runner.guard.refused == {"body_too_large": 2} and fake_openai.requests == []
    async with gw.session.get(gw.url + "/metrics") as resp:
        assert 'aigw_connections_refused_total{reason="body_too_large"} 2.0' in await resp.text()
    (record,) = await gw.records()  # the data-plane refusal keeps its usage record
    assert record.status == "rejected" and record.error_type == "request_too_large"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_client_sending_its_whole_oversized_body_first_gets_the_413_and_the_end(served, fake_openai,
                                                                                       monkeypatch, chunked):
    """The way httpx and requests send: the whole body, then read. The rest of the refused body is
    read and dropped unparsed (a request pipelined behind it is never run), the 413 is followed
    by the end of the gateway's half of the stream, and nothing resets the connection."""
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"maxBodyBytes": 64 * 1024}})
    parsed: list[int] = []
    original = server.GuardedHandler.data_received

    def data_received(self, data: bytes) -> None:
        parsed.append(len(data))
        original(self, data)

    monkeypatch.setattr(server.GuardedHandler, "data_received", data_received)
    big = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * (1024 * 1024) + b'"}]}'
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 8192]), big[i:i + 8192])
                          for i in range(0, len(big), 8192))
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + framed + b"0\r\n\r\n")
    else:
        request = _post(body=big)
    reader, writer = await _open(gw.port)
    started = time.monotonic()
    writer.write(request + _post())  # and a request pipelined behind it
    await asyncio.wait_for(writer.drain(), 5)  # every byte was taken
    answer = await asyncio.wait_for(reader.read(), 2)  # up to the end of the stream, not a reset
    assert time.monotonic() - started < 2.0
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert answer.count(b"HTTP/1.1 ") == 1 and orjson.loads(body)["error"]["code"] == "request_too_large"
    assert fake_openai.requests == []
    assert sum(parsed) <= 64 * 1024 + server.LARGE_READ + server.SMALL_READ  # the rest went unparsed
    writer.close()
    for _ in range(100):  # the client hung up: the gateway lets go of the connection at once
        if not gw.runner.server.connections:
            break
        await asyncio.sleep(0.01)
    assert gw.runner.server.connections == []


async def test_past_the_body_buffer_a_request_waits_then_gets_a_503(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"maxBodyBytes": 4096, "maxBodyBuffer": 4096, "bodyBufferWait": 0.3}})
    holder_r, holder_w = await _open(gw.port)  # a chunked body, of unknown length: it reserves 4096
    holder_w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n%s\r\n" % (len(BODY) - 5, BODY[:-5]))
    await asyncio.sleep(0.1)
    reader, writer = await _open(gw.port)
    started = time.monotonic()
    writer.write(_post())
    answer = await asyncio.wait_for(reader.read(), 2)  # and closed
    assert 0.3 <= time.monotonic() - started < 1.0
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head
    assert orjson.loads(body)["error"]["code"] == "overloaded"
    holder_w.write(b"5\r\n%s\r\n0\r\n\r\n" % BODY[-5:])  # the holder finishes: served, budget back
    assert (await asyncio.wait_for(holder_r.readuntil(b"\r\n"), 2)).startswith(b"HTTP/1.1 200")
    reader, writer = await _open(gw.port)
    writer.write(_post())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)).startswith(b"HTTP/1.1 200")
    bodies = gw.app[limits.ADMISSION].bodies
    assert bodies.used == 0 and bodies.rejected == 1
    for w in (holder_w, writer):
        w.close()


async def test_parser_errors_leave_in_openai_shape_and_close(served):
    gw = await served()
    reader, writer = await _open(gw.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 2)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"  # and read() returned: the connection was closed
    assert orjson.loads(body)["error"] == {"message": "the request is not valid HTTP/1.1", "type": "invalid_request_error",
                                           "param": None, "code": "bad_http_request"}


@pytest.mark.parametrize(("method", "path", "version", "headers", "status"), [
    ("POST", "/v1/chat/completions", (2, 0), {}, 505),
    ("POST", "/v1/chat/completions", (0, 9), {}, 505),
    ("POST", "http://elsewhere/v1/chat/completions", (1, 1), {}, 400),
    ("CONNECT", "/x", (1, 1), {}, 400),
    ("POST", "/v1/chat/completions", (1, 0), {"Transfer-Encoding": "chunked"}, 400),
    ("POST", "/v1/chat/completions", (1, 1), {"Transfer-Encoding": "gzip, chunked"}, 501),
    ("POST", "/v1/chat/completions", (1, 1), {"Transfer-Encoding": "Chunked"}, None),
    ("POST", "/v1/chat/completions", (1, 0), {}, None),
    ("GET", "/healthz", (1, 1), {}, None),
])
def test_framing_checks(method, path, version, headers, status):
    from unittest import mock

    from aiohttp import HttpVersion

    protocol = mock.Mock(refusal=None)  # nothing found while parsing
    request = make_mocked_request(method, path, headers=headers, version=HttpVersion(*version), protocol=protocol)
    error = server.framing_error(request)
    assert (error.status if error else None) == status
