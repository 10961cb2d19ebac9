"""The Messages stream written from chat chunks: frames, order and indices, byte for byte."""

from __future__ import annotations

import orjson
import pytest

from proxy.dialects.base import Chunk, chunk_decoder
from proxy.dialects.messages import MessagesContext
from proxy.dialects.messages_stream import MessagesStream, error_type
from proxy.errors import RateLimited, UpstreamError


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> Chunk:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return chunk_decoder.decode(orjson.dumps({"id": "chatcmpl-abc", "model": "served-m", "choices": choices,
                                              "usage": usage}))


def translate(chunks: list[Chunk], thinking: bool = False) -> bytes:
    context = MessagesContext("asked-m", thinking)
    context.prompt_estimate = 7
    stream = MessagesStream(context)
    return b"".join(stream.feed(c) for c in chunks) + stream.close(None)


def frames(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        event, data = block.split(b"\n")
        assert event.startswith(b"event: ") and data.startswith(b"data: ")
        out.append((event[7:].decode(), orjson.loads(data[6:])))
    return out


def call(index: int, ident: str | None = None, name: str | None = None, args: str | None = None) -> dict:
    function = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    piece = {"index": index, "function": function}
    if ident:
        piece.update(id=ident, type="function")
    return {"tool_calls": [piece]}


USAGE = {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34, "prompt_tokens_details": {"cached_tokens": 8}}


def test_a_text_stream_byte_for_byte():
    raw = translate([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
                     chunk(finish="stop"), chunk(usage=USAGE)])
    assert raw == (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_abc","type":"message",'
        b'"role":"assistant","model":"served-m","content":[],"stop_reason":null,"stop_sequence":null,"usage":'
        b'{"input_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"text_delta","text":"Hel"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"text_delta","text":"lo"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"input_tokens":22,"cache_creation_input_tokens":0,'
        b'"cache_read_input_tokens":8,"output_tokens":4}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_tool_call_pieces_stream_as_input_json_deltas_as_they_come():
    stream = MessagesStream(MessagesContext("m", False))
    assert b"message_start" in stream.feed(chunk({"content": "Looking."}))
    head = frames(stream.feed(chunk(call(0, "call_1", "get_weather", ""))))
    assert [(e, d.get("index")) for e, d in head] == [("content_block_stop", 0), ("content_block_start", 1)]
    assert head[1][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    for piece in ['{"ci', 'ty": "Pa', 'ris"}']:
        (event, data), = frames(stream.feed(chunk(call(0, args=piece))))
        assert (event, data["index"], data["delta"]) == ("content_block_delta", 1,
                                                         {"type": "input_json_delta", "partial_json": piece})
    tail = frames(stream.feed(chunk(finish="tool_calls")) + stream.close(None))
    assert [e for e, _ in tail] == ["content_block_stop", "message_delta", "message_stop"]
    assert tail[1][1]["delta"]["stop_reason"] == "tool_use"


def test_interleaved_tool_calls_become_sequential_blocks_the_second_written_whole():
    raw = translate([chunk(call(0, "call_a", "get_weather", "")), chunk(call(1, "call_b", "get_time", "")),
                     chunk(call(0, args='{"city"')), chunk(call(1, args='{"tz"')),
                     chunk(call(0, args=': "Paris"}')), chunk(call(1, args=': "CET"}')),
                     chunk(finish="tool_calls")])
    shape = [(e, d.get("index"), d.get("content_block", d.get("delta"))) for e, d in frames(raw)[2:]]
    assert shape == [
        ("content_block_start", 0, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        ("content_block_delta", 0, {"type": "input_json_delta", "partial_json": '{"city"'}),
        ("content_block_delta", 0, {"type": "input_json_delta", "partial_json": ': "Paris"}'}),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": '{"tz": "CET"}'}),
        ("content_block_stop", 1, None),
        ("message_delta", None, {"stop_reason": "tool_use", "stop_sequence": None}),
        ("message_stop", None, None)]


def test_a_call_opens_when_its_name_arrives_and_text_during_a_call_waits_its_turn():
    raw = translate([chunk(call(0, "call_x")), chunk(call(0, name="lookup", args='{"q":')),
                     chunk({"content": "meanwhile"}), chunk(call(0, args=' 1}')), chunk(finish="tool_calls")])
    shape = [(e, d.get("index")) for e, d in frames(raw)[2:-2]]
    assert shape == [("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0),
                     ("content_block_stop", 0), ("content_block_start", 1), ("content_block_delta", 1),
                     ("content_block_stop", 1)]
    assert frames(raw)[3][1]["delta"]["partial_json"] == '{"q":'
    assert frames(raw)[7][1]["delta"] == {"type": "text_delta", "text": "meanwhile"}


@pytest.mark.parametrize("thinking", [True, False])
def test_reasoning_is_a_thinking_block_only_when_the_caller_asked_for_thinking(thinking):
    raw = translate([chunk({"reasoning_content": "Hmm"}), chunk({"content": "Yes"}), chunk(finish="stop")], thinking)
    blocks = [d["content_block"]["type"] for e, d in frames(raw) if e == "content_block_start"]
    assert blocks == (["thinking", "text"] if thinking else ["text"])
    if thinking:
        assert {"type": "thinking_delta", "thinking": "Hmm"} in [d.get("delta") for _, d in frames(raw)]


@pytest.mark.parametrize(("finish", "reason"), [("stop", "end_turn"), ("length", "max_tokens"),
                                                ("content_filter", "refusal"), ("tool_calls", "tool_use")])
def test_stop_reasons(finish, reason):
    raw = translate([chunk({"content": "x"}), chunk(finish=finish)])
    assert frames(raw)[-2][1]["delta"]["stop_reason"] == reason


def test_a_stream_with_no_chunk_still_has_every_frame_of_an_empty_message():
    assert [e for e, _ in frames(translate([]))] == ["message_start", "ping", "message_delta", "message_stop"]


def test_a_failure_is_an_error_frame_typed_by_status():
    stream = MessagesStream(MessagesContext("m", False))
    stream.feed(chunk({"content": "partial"}))
    assert frames(stream.close(UpstreamError("cut"))) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "cut"}})]
    assert frames(stream.close(RateLimited("slow down")))[0][1]["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (401, "authentication_error"),
                                              (403, "permission_error"), (404, "not_found_error"),
                                              (405, "invalid_request_error"), (413, "request_too_large"),
                                              (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"),
                                              (503, "overloaded_error"), (504, "timeout_error"),
                                              (529, "overloaded_error")])
def test_error_types_by_status(status, kind):
    assert error_type(status) == kind
