"""Attempts, timeouts and failover (RELIABILITY R01a, R01c, R04, R05, R11; policy 2)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import aiohttp
import orjson
import pytest

from proxy.upstream.dispatch import Watchdog, redact
from tests.conftest import PROVIDER_KEY, openai_provider
from tests.fakes.openai import Behaviour, FakeOpenAI
from tests.fakes.replay import CASSETTES, Replay, body_bytes, load

MESSAGES = [{"role": "user", "content": "hi"}]


def _body(model: str, stream: bool = False) -> dict:
    return {"model": model, "messages": MESSAGES, "stream": stream}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stream", [True, False], ids=["a-waiting-first-byte", "c-non-stream"])
async def test_r01_disconnect_before_the_answer_cancels_upstream(gateway, fake_openai, stream):
    fake_openai.on("wait", Behaviour(delay_headers=30))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("wait",))]})
    lags = []
    for trial in range(100):
        task = asyncio.ensure_future(gw.session.post(gw.url + "/v1/chat/completions", json=_body("wait", stream)))
        while len(fake_openai.requests) <= trial:
            await asyncio.sleep(0.002)
        closed = len(fake_openai.closed_at)
        task.cancel()  # the client goes away while the gateway waits for the provider
        gone = time.monotonic()
        for _ in range(200):
            if len(fake_openai.closed_at) > closed:
                break
            await asyncio.sleep(0.005)
        assert len(fake_openai.closed_at) > closed
        lags.append(fake_openai.closed_at[-1] - gone)
    assert max(lags) <= 1.0
    await asyncio.sleep(0.05)
    assert gw.gw.metrics.upstream_in_flight == 0
    records = await gw.records()
    assert len(records) == 100 and {r.status for r in records} == {"client_aborted"}


async def test_r04_error_only_stream_fails_over_or_is_an_error(gateway, fake_openai, aiohttp_server):
    backup = await FakeOpenAI().start(aiohttp_server)
    fake_openai.on("m", Behaviour(end="error_first"))
    gw = await gateway({"providers": [openai_provider(fake_openai, name="a", models=("m",)),
                                      openai_provider(backup, name="b", models=("m",), isHosted=False)]})
    for _ in range(100):
        async with gw.post("/v1/chat/completions", json=_body("m", True)) as resp:
            assert resp.status == 200
            raw = await resp.read()
        assert raw.endswith(b"data: [DONE]\n\n") and b"error" not in raw
    assert len(backup.requests) == 100
    alone = await gateway({"providers": [openai_provider(fake_openai, name="a", models=("m",))]})
    async with alone.post("/v1/chat/completions", json=_body("m", True)) as resp:
        assert resp.status == 502
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"]["type"] == "upstream_error"


async def test_r05_silent_upstream_is_a_504_at_the_first_byte_timeout(gateway, fake_openai):
    t1 = 0.5
    fake_openai.on("silent", Behaviour(delay_headers=3600))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("silent",))],
                        "timeouts": {"firstByte": t1}})
    fds_before = len(os.listdir("/proc/self/fd"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    ended: dict[str, float] = {}

    async def one(n: int) -> float:
        started = time.monotonic()
        body = {**_body("silent", n % 2 == 0), "user": f"r{n}"}
        async with session.post(gw.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 504
            error = (await resp.json())["error"]
            assert error["code"] == "upstream_timeout"
            assert "'fake'" in error["message"]  # the provider that timed out is named
        ended[body["user"]] = time.monotonic()
        return ended[body["user"]] - started

    took = await asyncio.gather(*(one(n) for n in range(100)))
    await session.close()
    assert t1 <= min(took)
    # From the moment the provider had the request (the gateway's timer started just before):
    # a hundred connections opened at once by this one process may take their time to get there.
    waited = [ended[seen.body["user"]] - seen.at for seen in fake_openai.requests]
    assert len(waited) == 100  # no retry after the request was sent
    assert max(waited) <= t1 + 0.5, max(waited)
    await asyncio.sleep(0.3)
    assert abs(len(os.listdir("/proc/self/fd")) - fds_before) <= 2
    records = await gw.records()
    assert {r.status for r in records} == {"upstream_timeout"}


class _Resetter:
    """Accepts and resets at once, before reading anything."""

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._reset, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _reset(self, reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()


async def test_r11_safe_retry_before_the_first_byte(gateway, fake_openai, aiohttp_server):
    failing = await FakeOpenAI().start(aiohttp_server)
    failing.default = Behaviour(status=503)
    resetter = _Resetter()
    reset_port = await resetter.start()
    refused = {"name": "refused", "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "weight": 1000,
               "url": f"http://127.0.0.1:{_closed_port()}/v1", "models": ["m"]}
    # Reset right after accept, in the TLS handshake: no byte of the request left, so it is retried.
    # (Over plain HTTP the request is written before the reset comes: that one is final, R13.)
    reset = {**refused, "name": "reset", "url": f"https://127.0.0.1:{reset_port}/v1"}
    busy = openai_provider(failing, name="busy", models=("m",), weight=1000)
    healthy = openai_provider(fake_openai, name="healthy", models=("m",), isHosted=False)
    gw = await gateway({"providers": [refused, reset, busy, healthy], "routing": {"maxAttempts": 4}})
    sem = asyncio.Semaphore(20)

    async def one():
        async with sem, gw.post("/v1/chat/completions", json=_body("m", stream=False)) as resp:
            assert resp.status == 200, await resp.text()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(500)))
    assert time.monotonic() - started < 60
    records = await gw.records()
    assert len(records) == 500 and all(r.provider == "healthy" for r in records)
    assert all(1 <= r.attempts <= 4 for r in records)
    assert any(r.recovered for r in records)
    resetter.server.close()


@pytest.mark.parametrize(("status", "code", "client_status"), [
    (401, "upstream_auth_error", 502), (403, "upstream_auth_error", 502),
    (429, "upstream_rate_limited", 429), (500, "upstream_error", 502), (502, "upstream_error", 502),
    (503, "upstream_overloaded", 503), (504, "upstream_timeout", 504)])
async def test_failover_causes_and_the_error_left_when_none_remains(gateway, fake_openai, aiohttp_server,
                                                                    status, code, client_status):
    second = await FakeOpenAI().start(aiohttp_server)
    for fake, name in ((fake_openai, "a"), (second, "b")):  # each echoes the key it was sent
        fake.default = Behaviour(status=status, headers={"Retry-After": "7"} if status in (429, 503) else {},
                                 error={"message": f"Incorrect API key provided: {PROVIDER_KEY}-{name}",
                                        "type": "invalid_request_error", "param": None, "code": "x"})
    gw = await gateway({"providers": [openai_provider(fake_openai, name="a"), openai_provider(second, name="b")]})
    async with gw.post("/v1/chat/completions", json=_body("gpt-4o-mini")) as resp:
        assert resp.status == client_status
        error = (await resp.json())["error"]
        text = await resp.text()
    assert error["code"] == code
    assert PROVIDER_KEY[:12] not in text
    assert len(fake_openai.requests) == 1 and len(second.requests) == 1
    last = "a" if fake_openai.requests[0].at > second.requests[0].at else "b"
    assert f"'{last}'" in error["message"] and f"HTTP {status}" in error["message"]  # the last provider, its status
    if status in (429, 503):
        assert resp.headers["Retry-After"] == "7"
    if status == 429:
        assert gw.gw.router.is_open("a") and gw.gw.router.is_open("b")


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_are_not_retried_and_keep_their_status(gateway, fake_openai, aiohttp_server, status):
    second = await FakeOpenAI().start(aiohttp_server)
    fake_openai.default = Behaviour(status=status, error={"message": "bad thing", "type": "invalid_request_error",
                                                          "param": "messages", "code": "bad"})
    gw = await gateway({"providers": [openai_provider(fake_openai, name="a", weight=1000),
                                      openai_provider(second, name="b", isHosted=False)]})
    async with gw.post("/v1/chat/completions", json=_body("gpt-4o-mini")) as resp:
        assert resp.status == status
        assert (await resp.json())["error"]["message"] == "bad thing"
    assert second.requests == []


async def test_redirects_are_never_followed_and_html_is_not_reflected(gateway, fake_openai):
    fake_openai.on("moved", Behaviour(status=302, headers={"Location": "http://169.254.169.254/latest"}, body=b""))
    fake_openai.on("html", Behaviour(status=500, body=b"<html>" + b"secret page " * 1000 + b"</html>",
                                     headers={"Content-Type": "text/html"}))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("moved", "html"))]})
    async with gw.post("/v1/chat/completions", json=_body("moved")) as resp:
        assert resp.status == 502
    async with gw.post("/v1/chat/completions", json=_body("html")) as resp:
        assert resp.status == 502
        assert b"secret page" not in await resp.read()


async def test_response_larger_than_the_cap_is_a_502(gateway, fake_openai):
    fake_openai.on("big", Behaviour(content=["x" * 1024] * 2000))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("big",))],
                        "limits": {"maxResponseBytes": 1024 * 1024}})
    async with gw.post("/v1/chat/completions", json=_body("big")) as resp:
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_response_too_large"


async def test_circuit_opens_after_consecutive_failures_and_sends_traffic_elsewhere(gateway, fake_openai,
                                                                                   aiohttp_server):
    broken = await FakeOpenAI().start(aiohttp_server)
    broken.default = Behaviour(status=500)
    gw = await gateway({"providers": [openai_provider(broken, name="broken", weight=1000),
                                      openai_provider(fake_openai, name="ok", isHosted=False)],
                        "routing": {"failureThreshold": 5, "ejectionSeconds": 60}})
    for _ in range(20):
        async with gw.post("/v1/chat/completions", json=_body("gpt-4o-mini")) as resp:
            assert resp.status == 200
    assert len(broken.requests) == 5  # ejected after five failures in a row
    assert gw.gw.router.is_open("broken")


async def test_watchdog_fires_after_idle_and_not_while_touched():
    async def busy():
        async with Watchdog(0.2) as dog:
            for _ in range(10):
                await asyncio.sleep(0.05)
                dog.touch()
        return dog.reason

    assert await busy() is None
    with pytest.raises(TimeoutError):
        async with Watchdog(0.1) as dog:
            await asyncio.sleep(1)
    assert dog.reason == "idle"
    with pytest.raises(TimeoutError):
        async with Watchdog(10, asyncio.get_running_loop().time() + 0.1) as dog:
            while True:
                await asyncio.sleep(0.01)
                dog.touch()
    assert dog.reason == "max_duration"


def test_redact_keeps_only_the_last_four():
    assert redact("key sk-abcdef123456 bad", "sk-abcdef123456") == "key …3456 bad"
    assert orjson.dumps(redact("nothing", None))


class IdleCloser:
    """A provider that closes its first connection, as idle, just as a second request arrives on it
    (the request is read, no answer is written); every other request gets a chat.completion."""

    ANSWER = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first_connection, served = self.connections == 1, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                self.requests += 1
                if first_connection and served == 1:
                    break  # closed with the request unanswered
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(self.ANSWER), self.ANSWER))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def provider(self, port: int) -> dict:
        return {"name": "a", "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True,
                "url": f"http://127.0.0.1:{port}/v1", "models": ["m"]}


async def test_by_default_a_request_written_into_a_connection_closed_as_it_was_reused_is_not_sent_again(gateway):
    """The race the pool cannot see (the provider closed the connection after reading the request
    written into it) is a 502 after one attempt: the provider may have charged it (R13)."""
    closer = IdleCloser()
    gw = await gateway({"providers": [closer.provider(await closer.start())]})  # the defaults
    async with gw.post("/v1/chat/completions", json=_body("m")) as resp:
        assert resp.status == 200
    async with gw.post("/v1/chat/completions", json=_body("m")) as resp:
        assert resp.status == 502 and (await resp.json())["error"]["code"] == "upstream_reset"
    async with gw.post("/v1/chat/completions", json=_body("m")) as resp:
        assert resp.status == 200  # on a new connection
    assert (closer.requests, closer.connections) == (3, 2)  # each request sent once
    records = await gw.records()
    assert [(r.attempts, r.status) for r in records] == [(1, "completed"), (1, "upstream_error"), (1, "completed")]
    closer.server.close()


async def test_with_retry_on_reset_a_connection_closed_as_it_was_reused_is_retried_once_on_a_new_one(gateway):
    closer = IdleCloser()
    gw = await gateway({"providers": [closer.provider(await closer.start())], "routing": {"retryOnReset": True}})
    for _ in range(3):
        async with gw.post("/v1/chat/completions", json=_body("m")) as resp:
            assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "ok"
    assert (closer.requests, closer.connections) == (4, 2)  # opted in: the second request was sent twice
    records = await gw.records()
    assert [(r.attempts, r.status, r.recovered) for r in records] == [(1, "completed", False), (2, "completed", False),
                                                                      (1, "completed", False)]
    assert gw.gw.router.health["a"].failures == 0  # not held against the provider
    closer.server.close()


class IdleTimeout(IdleCloser):
    """Closes a connection once it has been idle for `idle` s, as uvicorn-based servers do (5 s)."""

    def __init__(self, idle: float) -> None:
        super().__init__()
        self.idle = idle

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle)
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(self.ANSWER), self.ANSWER))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_pooled_connection_the_provider_closed_while_idle_is_never_used(gateway):
    provider = IdleTimeout(0.05)
    gw = await gateway({"providers": [provider.provider(await provider.start())]})
    for _ in range(3):
        async with gw.post("/v1/chat/completions", json=_body("m")) as resp:
            assert resp.status == 200
        await asyncio.sleep(0.2)  # past the provider's idle timeout
    assert (provider.requests, provider.connections) == (3, 3)  # each sent once, each on a new connection
    records = await gw.records()
    assert [r.attempts for r in records] == [1, 1, 1]
    provider.server.close()


# -- the class of the last provider's answer reaches the client -----------------------------------
ANSWERS = [  # cassette, the client's status, whether the next candidate is tried
    ("openai/error_429", 429, True), ("anthropic/error_429", 429, True), ("gemini/error_429", 429, True),
    ("openai/error_503", 503, True), ("anthropic/error_529", 503, True), ("gemini/error_503", 503, True),
    ("openai/error_500", 502, True), ("openai/error_502", 502, True), ("anthropic/error_500", 502, True),
    ("gemini/error_504", 504, True),
    ("openai/error_400", 400, False), ("anthropic/error_400", 400, False), ("gemini/error_400", 400, False),
    ("openai/error_404", 404, False), ("anthropic/error_404", 404, False),
    ("openai/error_401", 502, True), ("gemini/error_403", 502, True)]


@pytest.mark.parametrize(("name", "client_status", "fails_over"), ANSWERS, ids=[a[0] for a in ANSWERS])
async def test_the_last_providers_answer_keeps_its_class(gateway, aiohttp_server, name, client_status, fails_over):
    cassette = load(CASSETTES / f"{name}.json")
    first, second = Replay(), Replay()
    for fake in (first, second):
        await fake.start(aiohttp_server)
        fake.load(cassette)
    gw = await gateway({"providers": [{**first.provider(cassette, "first"), "weight": 1000},
                                      {**second.provider(cassette, "second"), "isHosted": False}]})
    async with gw.post("/v1/chat/completions", json={"model": cassette["model"], **cassette["openai"]}) as resp:
        assert resp.status == client_status
        error = (await resp.json())["error"]
        retry_after = resp.headers.get("Retry-After")
    assert (first.calls, second.calls) == (1, 1 if fails_over else 0)
    sent = cassette["response"]["status"]
    if client_status in (400, 404):  # the provider's own words, as its callers would read them
        assert error["message"] == _provider_message(cassette)
    else:  # the last provider tried, and what it answered
        assert "'second'" in error["message"] and f"HTTP {sent}" in error["message"], error["message"]
    if client_status in (429, 503):
        assert retry_after is not None and int(retry_after) >= 1
        assert retry_after == cassette["expect"].get("retry_after", "1")
    assert cassette["apiKey"] not in error["message"]
    if client_status in (502, 503, 504):  # the provider failed: an upstream error, not a refusal
        (record,) = await gw.records()
        assert record.status in ("upstream_error", "upstream_timeout"), record.status


def _provider_message(cassette: dict) -> str:
    body = orjson.loads(body_bytes(cassette))
    return (body[0] if isinstance(body, list) else body)["error"]["message"]
