"""The SSE relay: cancellation, truncation, stalls, latency (RELIABILITY R01b, R02, R03, R06, R08, R12)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import aiohttp
import orjson
import pytest

from tests.conftest import count_writes_to_clients, openai_provider
from tests.fakes.openai import Behaviour

MESSAGES = [{"role": "user", "content": "count"}]


def _stream_body(model: str, **extra) -> dict:
    return {"model": model, "messages": MESSAGES, "stream": True, **extra}


def _events(raw: bytes) -> list[bytes]:
    return [block[len(b"data: "):] for block in raw.split(b"\n\n") if block.startswith(b"data: ")]


async def _upstream_gauge(gw) -> float:
    return gw.gw.metrics.upstream_in_flight


async def test_r01b_client_disconnect_mid_stream_cancels_upstream(gateway, fake_openai):
    fake_openai.on("slow", Behaviour(content=["x"] * 200, delay_chunk=0.01))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("slow",))]})
    lags = []
    for _ in range(100):
        closed_before = len(fake_openai.closed_at)
        resp = await gw.session.post(gw.url + "/v1/chat/completions", json=_stream_body("slow"))
        for _ in range(5):
            await resp.content.readline()
        resp.close()  # the client goes away after five relayed lines
        gone = time.monotonic()
        for _ in range(200):
            if len(fake_openai.closed_at) > closed_before:
                break
            await asyncio.sleep(0.005)
        assert len(fake_openai.closed_at) > closed_before, "the upstream call was not cancelled"
        lags.append(fake_openai.closed_at[-1] - gone)
    assert max(lags) <= 1.0
    for _ in range(100):
        if await _upstream_gauge(gw) == 0:
            break
        await asyncio.sleep(0.01)
    assert await _upstream_gauge(gw) == 0
    assert gw.gw.router.state("fake").in_flight == 0


async def test_r02_every_aborted_request_has_exactly_one_record(gateway, fake_openai):
    fake_openai.on("slow", Behaviour(content=["tok"] * 100, delay_chunk=0.005))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("slow",))]})
    relayed: dict[int, int] = {}

    async def abort_after(i: int) -> None:
        resp = await gw.session.post(gw.url + "/v1/chat/completions", json=_stream_body("slow", tags=[f"trial:{i}"]))
        seen = 0
        while seen < 3 + i % 5:
            line = await resp.content.readline()
            if line.startswith(b"data: "):
                seen += 1
        relayed[i] = seen
        resp.close()

    total = 1000
    sem = asyncio.Semaphore(50)

    async def bounded(i):
        async with sem:
            await abort_after(i)

    await asyncio.wait_for(asyncio.gather(*(bounded(i) for i in range(total))), 120)
    for _ in range(200):
        records = await gw.records()
        if len(records) >= total:
            break
        await asyncio.sleep(0.05)
    assert len(records) == total
    assert len({r.id for r in records}) == total
    assert {r.status for r in records} == {"client_aborted"}
    assert all(r.tokens_estimated for r in records)
    # The record counts what the gateway relayed: at least what the client read (less the role
    # chunk), and at most the few 5 ms chunks the gateway sent while the client was closing.
    for r in records:
        read = relayed[int(r.tags[0].split(":")[1])]
        assert read - 1 <= r.completion_tokens <= read + 5, (read, r.completion_tokens)


@pytest.mark.parametrize("end", ["fin", "rst"])
async def test_r03_truncation_ends_with_an_error_event_never_done(gateway, fake_openai, end):
    fake_openai.on("cut", Behaviour(content=["w"] * 60, cut_after=40, end=end))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("cut",))]})

    async def one() -> float:
        async with gw.post("/v1/chat/completions", json=_stream_body("cut")) as resp:
            raw = await resp.read()
        events = _events(raw)
        assert b"[DONE]" not in events
        assert orjson.loads(events[-1])["error"]["code"] == "upstream_truncated"
        return len(events)

    counts = await asyncio.gather(*(one() for _ in range(100)))
    if end == "fin":
        assert set(counts) == {42}  # role chunk + 40 content chunks + the error event
    else:  # an RST discards what the gateway had not read yet: fewer chunks, same ending
        assert max(counts) <= 42
    records = await gw.records()
    assert len(records) == 100 and {r.status for r in records} == {"upstream_truncated"}


async def test_r06_stalled_stream_ends_after_idle_and_keepalives_keep_it(gateway, fake_openai):
    idle = 0.5
    fake_openai.on("stall", Behaviour(content=["a", "b", "c"], cut_after=3, end="stall"))
    fake_openai.on("alive", Behaviour(content=["a", "b", "c"], cut_after=3, end="stall", keepalive=idle / 2))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("stall", "alive"))],
                        "timeouts": {"idle": idle}})

    async def stalled(n: int) -> float:
        # Timed from the provider's last event: the client may read it late (one event loop runs the
        # test, the fake and the gateway), never early.
        async with gw.post("/v1/chat/completions", json={**_stream_body("stall"), "user": f"s{n}"}) as resp:
            async for line in resp.content:
                if b"upstream_timeout" in line:
                    return time.monotonic() - fake_openai.stalled_at[f"s{n}"]
        raise AssertionError("no timeout event")

    waits = await asyncio.gather(*(stalled(n) for n in range(100)))
    assert idle * 0.9 <= min(waits) and max(waits) <= idle + 1.0

    async with gw.post("/v1/chat/completions", json=_stream_body("alive")) as resp:
        started = time.monotonic()
        comments = 0
        while time.monotonic() - started < 10 * idle:
            line = await asyncio.wait_for(resp.content.readline(), idle * 2)
            assert b"upstream_timeout" not in line
            comments += line.startswith(b": keep-alive")
    assert comments >= 10


@pytest.fixture
def served_gateway(tmp_path):
    """The gateway as users run it: its own process (uvloop, `serve`), on a free loopback port."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    procs = []

    def start(providers: list[dict]) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = tmp_path / "served.json"
        config.write_text(json.dumps({"listen": {"port": port}, "dataDir": str(tmp_path / "served"),
                                      "providers": providers}))
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                                env={**os.environ, "PORT": str(port)}, stdout=subprocess.DEVNULL,
                                stderr=open(tmp_path / "served.err", "wb"))
        procs.append(proc)
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the gateway did not start: " + (tmp_path / "served.err").read_text()[-2000:])

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


async def test_r08_relay_adds_no_buffering(served_gateway, fake_openai):
    """Each chunk carries the time it left the fake; the client measures what the relay added."""
    fake_openai.on("paced", Behaviour(content=["x"] * 40, delay_chunk=0.02))
    url = served_gateway([openai_provider(fake_openai, models=("paced",))])

    async def stamped(request, body, b):
        from aiohttp import web
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await out.prepare(request)
        for _ in b.content:
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "paced",
                     "choices": [{"index": 0, "delta": {"content": repr(time.monotonic())}, "finish_reason": None}]}
            await out.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await asyncio.sleep(b.delay_chunk)
        await out.write(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"paced",'
                        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        return out

    fake_openai._stream = stamped

    async def measure() -> tuple[list[float], list[float]]:
        added, first_byte = [], {"gateway": [], "direct": []}

        async def one(session, base: str, kind: str, delay: float = 0.0):
            await asyncio.sleep(delay)  # arrivals 10 ms apart: all 50 streams still overlap (each lasts ~0.8 s)
            started = time.monotonic()
            async with session.post(base + "/chat/completions", json=_stream_body("paced")) as resp:
                async for line in resp.content:
                    if not line.startswith(b"data: {"):
                        continue
                    now = time.monotonic()
                    delta = orjson.loads(line[6:])["choices"][0]["delta"].get("content")
                    if delta:
                        if kind == "gateway":
                            added.append(now - float(delta))
                        if len(first_byte[kind]) < 50 and now - started < 5:
                            first_byte[kind].append(now - started)
                            started = float("inf")

        async with aiohttp.ClientSession() as session:
            await one(session, url + "/v1", "gateway")  # warm up the connection pools
            added.clear()
            first_byte["gateway"].clear()
            await asyncio.gather(*(one(session, fake_openai.url, "direct", i * 0.01) for i in range(50)))
            await asyncio.gather(*(one(session, url + "/v1", "gateway", i * 0.01) for i in range(50)))
        assert len(added) == 50 * 40
        overhead = sorted(g - d for g, d in zip(sorted(first_byte["gateway"]), sorted(first_byte["direct"]),
                                                strict=True))
        return sorted(added), overhead

    # The figures hold on a quiet host. A VM's hypervisor taking the CPU for 20 ms delays every
    # chunk in flight and alone moves p99 past 10 ms, so a miss while it stole time is measured
    # again (twice at most); a miss on a quiet host fails at once.
    for attempt in range(3):
        stolen = _steal_seconds()
        added, overhead = await measure()
        stolen = _steal_seconds() - stolen
        p50, p99 = statistics.median(added), added[int(len(added) * 0.99) - 1]
        ttfb_p99 = overhead[int(len(overhead) * 0.99) - 1]
        if (p50 <= 0.002 and p99 <= 0.010 and ttfb_p99 <= 0.020) or stolen < _NOISY_STEAL_S or attempt == 2:
            break
        print(f"R08 attempt {attempt + 1}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, TTFB overhead "
              f"p99 {ttfb_p99 * 1000:.1f} ms while the hypervisor stole {stolen * 1000:.0f} ms of CPU: measured again")
    assert p50 <= 0.002 and p99 <= 0.010, (p50, p99, f"stolen {stolen * 1000:.0f} ms")
    assert ttfb_p99 <= 0.020, overhead  # time-to-first-byte overhead p99


_NOISY_STEAL_S = 0.02


def _steal_seconds() -> float:
    """CPU time the hypervisor has taken from this machine (`steal` in /proc/stat); 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def test_r12_no_retry_once_bytes_reached_the_client(gateway, fake_openai, aiohttp_server):
    from tests.fakes.openai import FakeOpenAI
    backup = await FakeOpenAI().start(aiohttp_server)
    fake_openai.on("m", Behaviour(content=["one", "two", "three", "four", "five", "six"], cut_after=5, end="rst"))
    gw = await gateway({"providers": [openai_provider(fake_openai, name="a", models=("m",), weight=1000),
                                      openai_provider(backup, name="b", models=("m",), isHosted=False)]})
    for trial in range(100):
        async with gw.post("/v1/chat/completions", json=_stream_body("m")) as resp:
            raw = await resp.read()
        text = "".join((orjson.loads(e)["choices"][0]["delta"].get("content") or "")
                       for e in _events(raw) if b'"choices"' in e)
        assert text == "onetwothreefourfive"
        assert b"upstream_truncated" in raw and b"[DONE]" not in raw
        assert len(fake_openai.requests) == trial + 1 and backup.requests == []


async def test_headers_of_a_stream(gateway, fake_openai):
    fake_openai.default = Behaviour(headers={"Set-Cookie": "session=upstream"})
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with gw.post("/v1/chat/completions", json=_stream_body("gpt-4o-mini")) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "Set-Cookie" not in resp.headers
        assert "Content-Encoding" not in resp.headers
        await resp.read()


async def test_a_stream_that_arrives_whole_goes_to_the_client_in_one_write(gateway, fake_openai, monkeypatch):
    """Head, every event and the chunked body's end of a burst leave in one write (each write wakes
    the client's side), byte for byte what the provider sent but the usage chunk."""
    fake_openai.on("whole", Behaviour(content=[f"t{i} " for i in range(100)], burst=True))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("whole",))]})
    writes = count_writes_to_clients(monkeypatch, gw.port)
    async with gw.post("/v1/chat/completions", json=_stream_body("whole")) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        events = _events(await resp.read())
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert events[-1] == b"[DONE]" and all(c["choices"] for c in chunks)  # the injected usage chunk dropped
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "".join(
        f"t{i} " for i in range(100))
    assert len(writes) == 1, writes  # was three: the head, the events, the chunked end
    (record,) = await gw.records()
    assert record.status == "completed" and record.completion_tokens == 10 and not record.tokens_estimated


async def test_a_paced_stream_sends_its_head_with_its_first_events_at_once(gateway, fake_openai, monkeypatch):
    """A stream that is still arriving is not held back: its head goes with the first events,
    before the provider sends the rest."""
    fake_openai.on("paced", Behaviour(content=["a", "b", "c", "d"], delay_chunk=0.2))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("paced",))]})
    writes = count_writes_to_clients(monkeypatch, gw.port)
    started = time.monotonic()
    async with gw.post("/v1/chat/completions", json=_stream_body("paced")) as resp:
        first = await resp.content.readuntil(b"\n\n")
        took = time.monotonic() - started
        rest = await resp.read()
    assert took < 0.15 and first.startswith(b"data: ")  # the first event, not the whole answer's wait
    assert _events(first + rest)[-1] == b"[DONE]"
    assert writes[0] > len(first) + 100  # the head (status line, five headers) and the first event: one write


async def test_usage_chunk_kept_when_the_caller_asks(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    body = _stream_body("gpt-4o-mini", stream_options={"include_usage": True})
    async with gw.post("/v1/chat/completions", json=body) as resp:
        events = _events(await resp.read())
    usage = [orjson.loads(e) for e in events if e != b"[DONE]" and orjson.loads(e).get("usage")]
    assert len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 10 and usage[0]["choices"] == []


async def test_client_disconnect_record_counts_relayed_tokens(gateway, fake_openai):
    fake_openai.on("slow", Behaviour(content=["x"] * 50, delay_chunk=0.01))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("slow",))]})
    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn) as session:
        resp = await session.post(gw.url + "/v1/chat/completions", json=_stream_body("slow"))
        seen = 0
        while seen < 10:
            if (await resp.content.readline()).startswith(b"data: "):
                seen += 1
        resp.close()
    await asyncio.sleep(0.3)
    (record,) = await gw.records()
    assert record.status == "client_aborted" and record.tokens_estimated
    assert abs(record.completion_tokens - 9) <= 1


async def test_a_client_gone_before_the_stream_starts_is_an_aborted_record_not_an_error(gateway, fake_openai):
    """The client hung up while the provider answered, and the handler ran before aiohttp saw the
    connection lost: writing the stream's headers fails. That race cannot be timed over a socket,
    so the request stands in for it: its transport is closing and the writer refuses."""
    from unittest import mock

    from aiohttp.client_exceptions import ClientConnectionResetError
    from aiohttp.test_utils import make_mocked_request

    from proxy.pipeline.relay import Relay
    from proxy.upstream.dispatch import Opened

    await gateway({"providers": [openai_provider(fake_openai, models=("m",))]})
    transport = mock.Mock()
    transport.is_closing.return_value = True
    writer = mock.Mock()
    writer.write_headers = mock.AsyncMock(side_effect=ClientConnectionResetError("Cannot write to closing transport"))
    writer.send_headers = mock.Mock(side_effect=ClientConnectionResetError("Cannot write to closing transport"))
    request = make_mocked_request("POST", "/v1/chat/completions", writer=writer, transport=transport)
    closed = []
    opened = Opened(None, mock.Mock(close=lambda: closed.append(True)), 0.0)
    opened.parser = mock.Mock(model=None, usage=None, content_events=0)
    ex = Relay(opened, "request-id")  # the relay stage: what it found is read from it
    await ex.run(request, idle=5.0, max_stream=60.0)  # no exception escapes
    assert ex.status == "client_aborted" and closed == [True]  # and the provider's answer is let go
