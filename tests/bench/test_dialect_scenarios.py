"""The bench's Responses and Messages scenarios: their requests are what a real gateway accepts, and
their streams are counted right.

The gateway is served on loopback in front of the bench's own mock upstream (run in this test's
loop), so each request goes the way the bench sends it: through the bench's HTTP client, translated
to chat by the gateway, answered by the mock, translated back.
"""

from __future__ import annotations

import asyncio
import hashlib
import pathlib

import orjson
import pytest

from bench.client import Endpoint, Sink, exchange
from bench.dialects import CHAT, CONTENT_EVENTS, DIALECT_SCENARIOS, MESSAGES, RESPONSES, Wire, count_events
from bench.drivers import StreamSink, _Totals
from bench.mock_upstream import Canned, Upstream, _payloads
from bench.targets import KEY
from proxy.dialects.base import chunk_decoder
from proxy.dialects.messages import MessagesContext
from proxy.dialects.messages_stream import MessagesStream

RECORDED = pathlib.Path(__file__).parents[1] / "dialects" / "recorded" / "responses_text_then_call.sse"


def messages_stream() -> bytes:
    """A Messages text stream as the gateway writes it, from chat chunks: two text deltas, the second
    of which spells the counter's marker (JSON-escaped inside the text, so not a frame)."""
    stream = MessagesStream(MessagesContext("m", False))
    pieces = [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "event: content_block_delta\n"}]
    chunks = [{"id": "chatcmpl-b", "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
              for d in pieces]
    chunks.append({"id": "chatcmpl-b", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(stream.feed(chunk_decoder.decode(orjson.dumps(c))) for c in chunks) + stream.close(None)


MESSAGES_STREAM = messages_stream()
SPLITS = (1, 2, 3, 5, 7, 13, 19, 26, 27, 33, 34, 35, 100, 1 << 20)


def frames_named(raw: bytes, event: str) -> int:
    """Frames of one event type, counted by parsing the stream (not by the counter's substring)."""
    names = [block.split(b"\n", 1)[0] for block in raw.split(b"\n\n") if block]
    return sum(1 for name in names if name == b"event: " + event.encode())


def counted(wire: Wire, raw: bytes, size: int) -> tuple[int, bool]:
    total, done, tail = 0, False, b""
    for at in range(0, len(raw), size):
        count, seen, tail = count_events(wire, tail, raw[at:at + size])
        total += count
        done = done or seen
    return total, done


@pytest.mark.parametrize("size", SPLITS)
def test_the_counter_counts_a_recorded_stream_however_it_is_split(size):
    responses = RECORDED.read_bytes()
    expected = frames_named(responses, "response.output_text.delta")
    assert expected >= 2
    assert counted(RESPONSES, responses, size) == (expected, True)
    # The second delta's text spells the marker, JSON-escaped: it is text, not a frame.
    assert counted(MESSAGES, MESSAGES_STREAM, size) == (frames_named(MESSAGES_STREAM, "content_block_delta"), True)
    assert frames_named(MESSAGES_STREAM, "content_block_delta") == 2
    chunks, _, done = _payloads("bench-model")
    assert counted(CHAT, b"".join([*chunks, done]), size) == (100, True)  # [DONE] is not a chunk


def test_a_stream_cut_before_its_end_is_not_done():
    raw = RECORDED.read_bytes()
    cut = raw[:raw.index(b"event: response.completed")]
    assert counted(RESPONSES, cut, 64)[1] is False
    assert counted(MESSAGES, MESSAGES_STREAM[:MESSAGES_STREAM.index(b"event: message_stop")], 64)[1] is False


@pytest.fixture
async def bench_gateway(gateway):
    """A gateway with the bench's caller key and provider, in front of the bench's mock upstream."""
    loop = asyncio.get_running_loop()
    mock = await loop.create_server(lambda: Upstream(Canned(0.0, 0.0)), "127.0.0.1", 0)
    port = mock.sockets[0].getsockname()[1]
    running = await gateway({
        "auth": {"keys": [{"id": "bench", "name": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]},
        "providers": [{"name": "bench", "supportedProvider": "OPENAI_COMPATIBLE", "url": f"http://127.0.0.1:{port}/v1",
                       "models": ["bench-model", "bench-burst"], "isHosted": True, "apiKey": "sk-bench-upstream-0000"}]})
    yield running.url + "/openai/v1"
    mock.close()
    await mock.wait_closed()


class Body(Sink):
    def __init__(self) -> None:
        self.status, self.parts = 0, []

    def head(self, status: int) -> None:
        self.status = status

    def body(self, data: bytes) -> None:
        self.parts.append(data)


async def send(wire: Wire, base: str, raw: bytes, sink: Sink) -> None:
    conn = await asyncio.wait_for(exchange(None, Endpoint(wire.path(base)), raw, sink), 10)
    if conn is not None:
        conn.close()


@pytest.mark.parametrize("wire", [RESPONSES, MESSAGES], ids=lambda w: w.name)
async def test_the_non_stream_request_is_answered_in_its_dialect(bench_gateway, wire):
    sink = Body()
    await send(wire, bench_gateway, wire.request(bench_gateway, KEY, "bench-model", False), sink)
    answer = orjson.loads(b"".join(sink.parts))
    assert sink.status == 200, answer
    if wire is RESPONSES:
        assert answer["object"] == "response" and answer["output"][0]["content"][0]["text"]
    else:
        assert answer["type"] == "message" and answer["content"][0]["text"]


@pytest.mark.parametrize("model", ["bench-model", "bench-burst"])  # paced (rs32, ms32) and burst (rb32, mb32)
@pytest.mark.parametrize("wire", [RESPONSES, MESSAGES], ids=lambda w: w.name)
async def test_a_stream_counts_the_mocks_content_events(bench_gateway, wire, model):
    totals = _Totals(float("inf"), float("inf"))
    sink = StreamSink(totals, 0.0, wire)
    await send(wire, bench_gateway, wire.request(bench_gateway, KEY, model, True), sink)
    assert sink.status == 200
    assert (sink.events, sink.done) == (CONTENT_EVENTS, True)


def test_every_dialect_scenario_mirrors_a_chat_scenario_on_a_dialect_wire():
    assert {wire for wire, _ in DIALECT_SCENARIOS.values()} == {RESPONSES, MESSAGES}
    assert {chat for _, chat in DIALECT_SCENARIOS.values()} == {"c32", "s32", "b32"}
    assert MESSAGES.path("http://h:1/openai/v1") == "http://h:1/anthropic/v1/messages"
    assert RESPONSES.path("http://h:1/openai/v1") == "http://h:1/openai/v1/responses"
