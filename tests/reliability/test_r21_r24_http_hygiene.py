"""HTTP hygiene on the served gateway (proxy.edge.server): header limits (R21), slowloris and slow POST
(R22), the connection cap and idle keep-alive (R23), request smuggling and malformed HTTP (R24)."""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import time

import aiohttp
import orjson
import pytest

from tests.conftest import openai_provider
from tests.procs import ROOT

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
CL = b"%d" % len(BODY)
POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
CHUNKED_BODY = b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"


def _req(headers: bytes, body: bytes = BODY, line: bytes = POST) -> bytes:
    return line + headers + b"\r\n" + body


async def _exchange(port: int, raw: bytes, wait: float = 2.0) -> tuple[bytes, bool]:
    """Send raw bytes; return everything answered and whether the gateway closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        data, closed = b"", False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                part = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                break
            except ConnectionError:
                closed = True
                break
            if not part:
                closed = True
                break
            data += part
        return data, closed
    finally:
        writer.close()


def _statuses(data: bytes) -> list[int]:
    return [int(line.split(b" ")[1]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/")]


@pytest.fixture
async def hygienic(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))]})
    return gw, fake_openai


# -- R21 ---------------------------------------------------------------------------------------
HEADER_LIMIT_CASES = {
    "request_line_9k": _req(b"Content-Length: %s\r\n" % CL,
                            line=b"POST /v1/chat/completions?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n"),
    "one_header_9k": _req(b"Content-Length: %s\r\nX-Big: %s\r\n" % (CL, b"b" * 9000)),
    "headers_80k_total": _req(b"Content-Length: %s\r\n" % CL + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(20))),
    "101_headers": _req(b"Content-Length: %s\r\n" % CL + b"".join(b"X-H%d: v\r\n" % i for i in range(101))),
    "header_name_9k": _req(b"Content-Length: %s\r\n%s: v\r\n" % (CL, b"N" * 9000)),
}


@pytest.mark.parametrize("case", sorted(HEADER_LIMIT_CASES))
async def test_r21_header_size_and_count_limits(hygienic, case):
    gw, fake = hygienic
    data, closed = await _exchange(gw.port, HEADER_LIMIT_CASES[case])
    statuses = _statuses(data)
    assert statuses and all(400 <= s < 500 for s in statuses), (case, data[:200])
    assert closed
    assert fake.requests == []


async def test_r21_headers_within_the_limits_pass(hygienic):
    gw, fake = hygienic
    raw = _req(b"Content-Length: %s\r\nContent-Type: application/json\r\n" % CL + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * 500) for i in range(90)))
    data, _ = await _exchange(gw.port, raw, wait=1.0)
    assert _statuses(data) == [200]
    assert len(fake.requests) == 1


# -- R22 ---------------------------------------------------------------------------------------
async def _latencies(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    async def one() -> float:
        started = time.monotonic()
        async with session.post(url + "/v1/chat/completions", data=BODY,
                                headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            await resp.read()
        return time.monotonic() - started

    sem = asyncio.Semaphore(10)

    async def bounded() -> float:
        async with sem:
            return await one()

    return sorted(await asyncio.gather(*(bounded() for _ in range(n))))


async def test_r22_slowloris_and_slow_post_are_cut_and_real_traffic_is_served(served, fake_openai):
    deadline, window = 1.0, 0.5
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"headerTimeout": deadline, "minBodyRate": 200, "bodyRateWindow": window}})
    await _latencies(gw.session, gw.url, 50)  # warm-up: connections, first use of every path
    baseline = await _latencies(gw.session, gw.url, 200)
    slow_headers = _req(b"Content-Length: %s\r\nX-Slow: " % CL + b"z" * 200 + b"\r\n")
    slow_body = _req(b"Content-Length: %s\r\nContent-Type: application/json\r\n" % CL)
    attack = await asyncio.create_subprocess_exec(  # a process of its own, as slowhttptest would be
        sys.executable, "-m", "tests.reliability.dribble", str(gw.port), "0.1", f"100:0:{slow_headers.hex()}",
        f"100:{len(slow_body) - len(BODY)}:{slow_body.hex()}", stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert await asyncio.wait_for(attack.stdout.readline(), 10) == b"OPEN\n"
    await asyncio.sleep(0.2)
    during = await _latencies(gw.session, gw.url, 200)
    lasted = orjson.loads(await asyncio.wait_for(attack.stdout.readline(), 10))
    assert await attack.wait() == 0
    assert max(lasted[:100]) <= deadline + 1.0, max(lasted[:100])  # header deadline
    assert max(lasted[100:]) <= window + 1.0, max(lasted[100:])  # body below the minimum rate
    p99 = lambda xs: xs[int(len(xs) * 0.99) - 1]  # noqa: E731
    assert p99(during) <= max(2 * p99(baseline), 0.05), (p99(baseline), p99(during))
    assert gw.runner.guard.refused.get("header_timeout", 0) >= 100
    assert gw.runner.guard.refused.get("slow_body", 0) >= 100
    assert len(fake_openai.requests) == 450  # only the real ones
    print(f"R22 slow headers closed ≤ {max(lasted[:100]):.2f} s, slow bodies ≤ {max(lasted[100:]):.2f} s; "
          f"p99 {p99(baseline) * 1000:.1f} ms → {p99(during) * 1000:.1f} ms under attack; "
          f"median {statistics.median(during) * 1000:.1f} ms")


async def test_r22_a_slow_but_steady_body_is_served(served, fake_openai):
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"minBodyRate": 100, "bodyRateWindow": 0.5}})
    padded = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "y" * 400}]})
    raw = _req(b"Content-Length: %d\r\nContent-Type: application/json\r\n" % len(padded), padded)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    head = len(raw) - len(padded)
    writer.write(raw[:head])
    for i in range(head, len(raw), 40):  # 400 B/s, above the 100 B/s minimum, for about 1 s
        writer.write(raw[i:i + 40])
        await asyncio.sleep(0.1)
    answer = await asyncio.wait_for(reader.read(65536), 2)
    writer.close()
    assert _statuses(answer) == [200]


# -- R23 ---------------------------------------------------------------------------------------
def _idle_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(sock)
    return socks


async def _health_times(url: str, n: int, every: float) -> list[float]:
    times = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(n):
            started = time.monotonic()
            async with session.get(url + "/healthz") as resp:
                assert resp.status == 200
            times.append(time.monotonic() - started)
            await asyncio.sleep(every)
    return times


async def test_r23_connection_flood_stays_under_the_cap_and_health_answers(gateway_process, fake_openai):
    cap = 200
    gw = await gateway_process({"providers": [openai_provider(fake_openai, models=("m",))],
                                "limits": {"maxConnections": cap}})
    fds_before = gw.fds()
    socks = []
    health = asyncio.ensure_future(_health_times(gw.url, 40, 0.05))
    peak = 0
    for _ in range(6):  # 600 idle connections, in bursts
        socks += _idle_sockets(gw.port, 100)
        await asyncio.sleep(0.1)
        peak = max(peak, gw.fds())
    times = await health
    assert peak <= fds_before + cap + 64, (peak, fds_before)
    assert max(times) < 0.1, max(times)
    for sock in socks:
        sock.close()
    print(f"R23 600 idle connections: gateway FDs peak {peak} (baseline {fds_before}, cap {cap}); "
          f"/healthz max {max(times) * 1000:.1f} ms")


async def test_r23_idle_keep_alive_connections_close_after_the_timeout(served, fake_openai):
    keep_alive = 1.0
    gw = await served({"providers": [openai_provider(fake_openai, models=("m",))],
                       "limits": {"keepAlive": keep_alive}})

    async def one() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"}")
        answered = time.monotonic()
        assert await asyncio.wait_for(reader.read(), keep_alive + 2) == b""
        writer.close()
        return time.monotonic() - answered

    lasted = await asyncio.gather(*(one() for _ in range(50)))
    assert keep_alive * 0.9 <= min(lasted) and max(lasted) <= keep_alive + 1.0, (min(lasted), max(lasted))


@pytest.mark.slow
async def test_r23_slow_5000_idle_connections(gateway_process, fake_openai):
    gw = await gateway_process({"providers": [openai_provider(fake_openai, models=("m",))]})
    fds_before = gw.fds()
    socks, peak = [], 0
    health = asyncio.ensure_future(_health_times(gw.url, 100, 0.1))
    for _ in range(50):
        socks += _idle_sockets(gw.port, 100)
        await asyncio.sleep(0.05)
        peak = max(peak, gw.fds())
    times = await health
    assert peak <= fds_before + 4096 + 64 and max(times) < 0.1
    for sock in socks:
        sock.close()


# -- R24 ---------------------------------------------------------------------------------------
def _chunked(headers: bytes, body: bytes = CHUNKED_BODY, line: bytes = POST) -> bytes:
    return _req(b"Transfer-Encoding: chunked\r\n" + headers, body, line)


SMUGGLING = {
    # Content-Length and Transfer-Encoding together, or lengths that disagree
    "cl_then_te": _req(b"Content-Length: %s\r\nTransfer-Encoding: chunked\r\n" % CL),
    "te_then_cl": _req(b"Transfer-Encoding: chunked\r\nContent-Length: %s\r\n" % CL, CHUNKED_BODY),
    "two_cl_different": _req(b"Content-Length: %s\r\nContent-Length: 5\r\n" % CL),
    "two_cl_same": _req(b"Content-Length: %s\r\nContent-Length: %s\r\n" % (CL, CL)),
    "cl_list": _req(b"Content-Length: %s, %s\r\n" % (CL, CL)),
    "cl_plus": _req(b"Content-Length: +%s\r\n" % CL),
    "cl_negative": _req(b"Content-Length: -1\r\n"),
    "cl_hex": _req(b"Content-Length: 0x40\r\n"),
    "cl_space_inside": _req(b"Content-Length: 6 4\r\n"),
    "cl_huge": _req(b"Content-Length: 99999999999999999999999\r\n"),
    # Transfer-Encoding variants
    "te_obs_fold": _req(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %s\r\n" % CL),
    "te_chunked_then_identity": _req(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
    "te_identity_with_cl": _req(b"Transfer-Encoding: identity\r\nContent-Length: %s\r\n" % CL),
    "te_xchunked": _req(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te_space_before_colon": _req(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    "te_twice": _req(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_BODY),
    "te_gzip_chunked": _req(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_BODY),
    "te_chunked_semicolon": _req(b"Transfer-Encoding: chunked;x\r\n", CHUNKED_BODY),
    "te_vertical_tab": _req(b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_BODY),
    "te_nul": _req(b"Transfer-Encoding: chunked\x00\r\n", CHUNKED_BODY),
    "http10_chunked": _chunked(b"", line=b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n"),
    # chunk sizes and framing
    "chunk_negative": _chunked(b"", b"-1\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_overflow": _chunked(b"", b"ffffffffffffffffff\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_plus": _chunked(b"", b"+40\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_0x": _chunked(b"", b"0x40\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_ext_nul": _chunked(b"", b"%x;\x00\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    "chunk_bare_lf": _chunked(b"", b"%x\n" % len(BODY) + BODY + b"\n0\n\n"),
    "chunk_missing_crlf": _chunked(b"", b"%x\r\n" % len(BODY) + BODY + b"0\r\n\r\n"),
    "chunk_size_too_small": _chunked(b"", b"5\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_trailer_nul": _chunked(b"", b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX: \x00\r\n\r\n"),
    "chunk_space_size": _chunked(b"", b"4 0\r\n" + BODY + b"\r\n0\r\n\r\n"),
    # line endings and header syntax
    "bare_lf_headers": POST.replace(b"\r\n", b"\n") + b"Content-Length: %s\n\n" % CL + BODY,
    "bare_cr_line": b"POST /v1/chat/completions HTTP/1.1\rHost: x\r\nContent-Length: %s\r\n\r\n" % CL + BODY,
    "lf_in_header_value": _req(b"Content-Length: %s\r\nX-A: a\n b\r\n" % CL),
    "nul_in_header_value": _req(b"Content-Length: %s\r\nX-A: a\x00b\r\n" % CL),
    "cr_in_header_value": _req(b"Content-Length: %s\r\nX-A: a\rb\r\n" % CL),
    "del_in_header_value": _req(b"Content-Length: %s\r\nX-A: a\x7fb\r\n" % CL),
    "nul_in_header_name": _req(b"Content-Length: %s\r\nX\x00A: b\r\n" % CL),
    "space_before_colon": _req(b"Content-Length : %s\r\n" % CL),
    "space_in_header_name": _req(b"Content-Length: %s\r\nX A: b\r\n" % CL),
    "header_without_colon": _req(b"Content-Length: %s\r\nBadHeader\r\n" % CL),
    "leading_whitespace_header": _req(b" Content-Length: %s\r\n" % CL),
    "obs_fold_content_length": _req(b"Content-Length:\r\n %s\r\n" % CL),
    "utf8_in_header_name": _req(b"Content-Length: %s\r\nX-\xc3\xa9: b\r\n" % CL),
    "empty_header_name": _req(b"Content-Length: %s\r\n: b\r\n" % CL),
    "two_hosts": _req(b"Content-Length: %s\r\nHost: y\r\n" % CL),
    "no_host_http11": b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %s\r\n\r\n" % CL + BODY,
    # the request line
    "absolute_form_elsewhere": _req(b"Content-Length: %s\r\n" % CL,
                                    line=b"POST http://evil.example/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"),
    "authority_form_connect": _req(b"Content-Length: %s\r\n" % CL,
                                   line=b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n"),
    "asterisk_form": _req(b"Content-Length: %s\r\n" % CL, line=b"POST * HTTP/1.1\r\nHost: x\r\n"),
    "http_2_0_over_h1": _req(b"Content-Length: %s\r\n" % CL, line=b"POST /v1/chat/completions HTTP/2.0\r\nHost: x\r\n"),
    "http_bad_version": _req(b"Content-Length: %s\r\n" % CL, line=b"POST /v1/chat/completions HTTP/1.x\r\nHost: x\r\n"),
    "http_0_9": b"POST /v1/chat/completions\r\n\r\n",
    "lowercase_method": _req(b"Content-Length: %s\r\n" % CL, line=b"post /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"),
    "space_in_target": _req(b"Content-Length: %s\r\n" % CL, line=b"POST /v1/chat/ completions HTTP/1.1\r\nHost: x\r\n"),
    "control_in_target": _req(b"Content-Length: %s\r\n" % CL, line=b"POST /v1/chat/\x01completions HTTP/1.1\r\nHost: x\r\n"),
    "tab_separated_line": _req(b"Content-Length: %s\r\n" % CL, line=b"POST\t/v1/chat/completions\tHTTP/1.1\r\nHost: x\r\n"),
    # a second request pipelined behind an ambiguous first one: never executed
    "pipelined_after_cl_te": _req(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                                  b"0\r\n\r\n" + POST + b"Content-Length: %s\r\n\r\n" % CL + BODY),
    "pipelined_after_absolute_form": _req(b"Content-Length: %s\r\n" % CL,
                                          BODY + POST + b"Content-Length: %s\r\n\r\n" % CL + BODY,
                                          line=b"POST http://evil.example/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"),
    "pipelined_after_http10_chunked": _chunked(b"", CHUNKED_BODY + POST + b"Content-Length: %s\r\n\r\n" % CL + BODY,
                                               line=b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n"),
    "pipelined_after_gzip_chunked": _req(b"Transfer-Encoding: gzip, chunked\r\n",
                                         CHUNKED_BODY + POST + b"Content-Length: %s\r\n\r\n" % CL + BODY),
}


def test_r24_the_corpus_has_at_least_50_cases():
    assert len(SMUGGLING) >= 50


@pytest.mark.parametrize("case", sorted(SMUGGLING))
async def test_r24_smuggling_and_malformed_requests_are_refused_and_closed(hygienic, case):
    gw, fake = hygienic
    data, closed = await _exchange(gw.port, SMUGGLING[case])
    statuses = _statuses(data)
    assert len(statuses) == 1, (case, data[:300])  # one answer: nothing desynchronised behind it
    assert statuses[0] in (400, 431, 501, 505), (case, data[:300])
    assert closed, case
    assert fake.requests == [], case
    if b"\r\n\r\n{" in data:  # our own answers are in OpenAI's error shape
        assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "invalid_request_error"


async def test_r24_a_well_formed_chunked_request_still_works(hygienic):
    gw, fake = hygienic
    data, _ = await _exchange(gw.port, _chunked(b"Content-Type: application/json\r\n"), wait=1.0)
    assert _statuses(data) == [200] and len(fake.requests) == 1
