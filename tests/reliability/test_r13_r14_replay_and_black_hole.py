"""No silent replay once a request was sent (R13); a black-holed provider fails over at the
connect timeout (R14)."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour, FakeOpenAI

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class ReadThenReset:
    """Reads a whole request (headers and Content-Length body), then resets without answering."""

    def __init__(self) -> None:
        self.requests = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            writer.close()
            return
        self.requests += 1
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    def provider(self, port: int, name: str, **extra) -> dict:
        return {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "weight": 1000,
                "url": f"http://127.0.0.1:{port}/v1", "models": ["m"], **extra}


async def test_r13_first_byte_timeout_after_the_request_was_sent_is_never_replayed(gateway, fake_openai,
                                                                                  aiohttp_server):
    backup = await FakeOpenAI().start(aiohttp_server)
    fake_openai.on("m", Behaviour(delay_headers=3600))
    gw = await gateway({"providers": [openai_provider(fake_openai, name="a", models=("m",), weight=1000),
                                      openai_provider(backup, name="b", models=("m",), isHosted=False)],
                        "timeouts": {"firstByte": 1.0}})  # 100 new connections in one loop: each is sent in time

    async def one() -> None:
        async with gw.post("/v1/chat/completions", json=BODY) as resp:
            assert resp.status == 504

    await asyncio.gather(*(one() for _ in range(100)))
    assert len(fake_openai.requests) == 100 and backup.requests == []  # 1 upstream request each
    records = await gw.records()
    assert [r.attempts for r in records] == [1] * 100


async def test_r13_reset_after_the_request_was_sent_is_final_by_default(gateway, aiohttp_server):
    resetter = ReadThenReset()
    port = await resetter.start()
    backup = await FakeOpenAI().start(aiohttp_server)
    gw = await gateway({"providers": [resetter.provider(port, "a"),
                                      openai_provider(backup, name="b", models=("m",), isHosted=False)],
                        "routing": {"failureThreshold": 1000}})  # a stays first; retryOnReset left as it comes
    for trial in range(100):
        async with gw.post("/v1/chat/completions", json=BODY) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"]["code"] == "upstream_reset"
        assert resetter.requests == trial + 1  # exactly one upstream request per client request
    assert backup.requests == []
    records = await gw.records()
    assert len(records) == 100 and {(r.attempts, r.status, r.provider) for r in records} == {(1, "upstream_error", "a")}
    resetter.server.close()


async def test_r13_with_retry_on_reset_every_attempt_is_in_the_record(gateway):
    resetter = ReadThenReset()
    port = await resetter.start()
    gw = await gateway({"providers": [resetter.provider(port, name) for name in ("a", "b", "c")],
                        "routing": {"maxAttempts": 3, "retryOnReset": True}})  # the opt-in

    async def one() -> None:
        async with gw.post("/v1/chat/completions", json=BODY) as resp:
            assert resp.status == 502

    await asyncio.gather(*(one() for _ in range(100)))
    records = await gw.records()
    assert len(records) == 100
    assert sum(r.attempts for r in records) == resetter.requests  # 0 unrecorded attempts
    assert resetter.requests > 100  # it did retry
    resetter.server.close()


class BlackHole:
    """A listener whose accept queue is full and never drained: new SYNs are dropped."""

    def __enter__(self) -> int:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        port = self.listener.getsockname()[1]
        self.fill = []
        for _ in range(3):  # backlog 0 holds one; the rest wait in SYN_SENT and are dropped
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            self.fill.append(sock)
        time.sleep(0.1)
        return port

    def __exit__(self, *exc) -> None:
        for sock in self.fill:
            sock.close()
        self.listener.close()


def _hole(port: int, name: str) -> dict:
    return {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "weight": 1000,
            "url": f"http://127.0.0.1:{port}/v1", "models": ["m"]}


async def test_r14_black_holed_provider_fails_over_at_the_connect_timeout(gateway_process, aiohttp_server):
    t_conn = 1.0
    backup = await FakeOpenAI().start(aiohttp_server)
    with BlackHole() as port:
        gw = await gateway_process({"providers": [_hole(port, "hole"),
                                                  openai_provider(backup, name="b", models=("m",), isHosted=False)],
                                    "timeouts": {"connect": t_conn}, "logLevel": "error",
                                    "routing": {"failureThreshold": 1000}})  # the hole stays first
        started: dict[int, float] = {}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(i: int) -> None:
                body = {**BODY, "messages": [{"role": "user", "content": f"req-{i}"}]}
                started[i] = time.monotonic()
                async with session.post(gw.url + "/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200

            for wave in range(4):  # 100 trials, 25 at a time
                await asyncio.gather(*(one(i) for i in range(wave * 25, wave * 25 + 25)))
    arrived = {seen.body["messages"][0]["content"]: seen.at for seen in backup.requests}
    lags = sorted(arrived[f"req-{i}"] - started[i] for i in range(100))
    print(f"R14 failover after {lags[0]:.3f}-{lags[-1]:.3f} s (Tconn {t_conn} s)")
    assert t_conn <= lags[0] and lags[-1] <= t_conn + 0.25, (lags[0], lags[-1])
    records = await gw.records()
    assert len(records) == 100 and all(r.attempts == 2 and r.recovered for r in records)


@pytest.mark.parametrize("attempts", [1, 2])
async def test_r14_with_no_healthy_provider_a_504_within_attempts_times_the_connect_timeout(gateway, attempts):
    t_conn = 0.5
    with BlackHole() as port:
        gw = await gateway({"providers": [_hole(port, "h1"), _hole(port, "h2")],
                            "timeouts": {"connect": t_conn}, "routing": {"maxAttempts": attempts}})

        async def one() -> float:
            started = time.monotonic()
            async with gw.post("/v1/chat/completions", json=BODY) as resp:
                assert resp.status == 504
            return time.monotonic() - started

        took = await asyncio.gather(*(one() for _ in range(20)))
    assert max(took) <= attempts * t_conn + 0.5, max(took)
