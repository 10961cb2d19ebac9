"""The Responses stream written from chat chunks: frames, order, ids and sequence numbers."""

from __future__ import annotations

import pathlib

import orjson

from proxy.dialects.base import DialectStream, chunk_decoder
from proxy.dialects.responses import ResponsesContext
from proxy.dialects.responses_stream import ResponsesStream
from proxy.errors import RateLimited, UpstreamError
from proxy.providers.openai import PassthroughParser

RECORDED = pathlib.Path(__file__).parent / "recorded"
USAGE = {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22,
         "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 3}}


def context(names: dict | None = None) -> ResponsesContext:
    ctx = ResponsesContext("asked-model", {}, drop_hosted=False)
    ctx.id, ctx.created = "resp_abc", 1700000000
    ctx.names.update(names or {})
    return ctx


def body(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    """A `chat.completion.chunk` as an OpenAI-wire provider streams it."""
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    out = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "up-model", "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None):
    return chunk_decoder.decode(orjson.dumps(body(delta, finish, usage)))


def head(ident: str, name: str) -> dict:
    return {"tool_calls": [{"index": int(ident[-1]) - 1, "id": ident, "type": "function",
                            "function": {"name": name, "arguments": ""}}]}


def args(index: int, piece: str) -> dict:
    return {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def run(chunks, ctx=None, error=None) -> bytes:
    stream = ResponsesStream(ctx or context())
    return b"".join(stream.feed(c) for c in chunks) + stream.close(error)


def events(data: bytes) -> list[tuple[str, dict]]:
    """(event line, data) per frame; every frame's type is its event line, numbers dense from 0."""
    out = []
    for frame in data.decode().split("\n\n"):
        if frame:
            event, payload = frame.split("\n")
            body = orjson.loads(payload.removeprefix("data: "))
            assert event == "event: " + body["type"]
            assert body["sequence_number"] == len(out)
            out.append((body["type"], body))
    return out


TEXT_THEN_CALL = [body({"role": "assistant", "content": ""}), body({"content": "Let me"}), body({"content": " look."}),
                  body(head("call_1", "get_weather")), body(args(0, '{"city":')), body(args(0, ' "Paris"}')),
                  body(finish="tool_calls"), body(usage=USAGE)]


def test_event_order_is_byte_exact_against_the_recorded_order():
    chunks = [chunk_decoder.decode(orjson.dumps(each)) for each in TEXT_THEN_CALL]
    assert run(chunks) == (RECORDED / "responses_text_then_call.sse").read_bytes()


def test_chat_sse_through_the_dialect_stream_gives_the_same_frames():
    """The seam's path: the adapter's parser writes chat SSE, split anywhere across reads."""
    sse = b"".join(b"data: " + orjson.dumps(each) + b"\n\n" for each in TEXT_THEN_CALL) + b"data: [DONE]\n\n"
    stream = DialectStream(PassthroughParser(drop_usage_chunk=False), ResponsesStream(context()), False, {})
    out = b"".join(stream.feed(sse[i:i + 7]) for i in range(0, len(sse), 7)) + stream.close()
    assert out == (RECORDED / "responses_text_then_call.sse").read_bytes()


def test_interleaved_calls_come_out_one_item_after_the_other():
    chunks = [chunk(head("call_1", "a")), chunk(head("call_2", "b")), chunk(args(0, '{"x"')), chunk(args(1, '{"y"')),
              chunk(args(0, ": 1}")), chunk(args(1, ": 2}")), chunk(finish="tool_calls")]
    found = events(run(chunks))
    kinds = [kind for kind, _ in found]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    deltas = [(body["output_index"], body["delta"]) for kind, body in found if kind.endswith("arguments.delta")]
    assert deltas == [(0, '{"x"'), (0, ": 1}"), (1, '{"y": 2}')]  # the first streams, the second waits whole
    output = found[-1][1]["response"]["output"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in output] == [("call_1", "a", '{"x": 1}'),
                                                                          ("call_2", "b", '{"y": 2}')]


def test_text_arriving_while_a_call_streams_waits_for_its_own_item():
    chunks = [chunk(head("call_1", "a")), chunk(args(0, "{}")), chunk({"content": "after"}), chunk(finish="stop")]
    found = events(run(chunks))
    added = [body["item"]["type"] for kind, body in found if kind == "response.output_item.added"]
    assert added == ["function_call", "message"]
    assert found[-1][1]["response"]["output"][1]["content"][0]["text"] == "after"


def test_a_custom_tool_call_is_written_whole_with_its_input():
    ctx = context({"apply_patch": (None, "apply_patch", "custom")})
    chunks = [chunk(head("call_1", "apply_patch")), chunk(args(0, '{"input": "*** Begin')),
              chunk(args(0, ' Patch\\n"}')), chunk(finish="tool_calls")]
    found = events(run(chunks, ctx))
    kinds = [kind for kind, _ in found][2:]
    assert kinds == ["response.output_item.added", "response.custom_tool_call_input.delta",
                     "response.custom_tool_call_input.done", "response.output_item.done", "response.completed"]
    item = found[-2][1]["item"]
    assert item["type"] == "custom_tool_call" and item["id"].startswith("ctc_")
    assert (item["call_id"], item["name"], item["input"]) == ("call_1", "apply_patch", "*** Begin Patch\n")
    assert found[2][1]["item"]["input"] == ""


def test_a_namespaced_call_is_mapped_back_to_its_name_and_namespace():
    ctx = context({"mcp__fs__read": ("mcp__fs__", "read", "function")})
    found = events(run([chunk(head("call_1", "mcp__fs__read")), chunk(args(0, "{}")), chunk(finish="tool_calls")], ctx))
    item = found[-1][1]["response"]["output"][0]
    assert (item["type"], item["name"], item["namespace"], item["call_id"]) == (
        "function_call", "read", "mcp__fs__", "call_1")


def test_a_cut_answer_ends_in_response_incomplete():
    found = events(run([chunk({"content": "half"}), chunk(finish="length")]))
    kind, body = found[-1]
    assert kind == "response.incomplete"
    assert body["response"]["status"] == "incomplete"
    assert body["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["response"]["output"][0]["status"] == "incomplete"
    filtered = events(run([chunk({"content": "x"}), chunk(finish="content_filter")]))
    assert filtered[-1][1]["response"]["incomplete_details"] == {"reason": "content_filter"}


def test_a_failure_after_the_first_event_is_response_failed_with_a_code():
    stream = ResponsesStream(context())
    data = stream.feed(chunk({"content": "Hi"})) + stream.close(UpstreamError("the provider's stream broke off"))
    kind, body = events(data)[-1]
    assert kind == "response.failed"
    assert body["response"]["status"] == "failed" and body["response"]["id"] == "resp_abc"
    assert body["response"]["error"] == {"code": "server_error", "message": "the provider's stream broke off"}
    limited = events(run([chunk({"content": "Hi"})], error=RateLimited("slow down")))
    assert limited[-1][1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_a_failure_before_any_chunk_still_opens_with_response_created():
    found = events(ResponsesStream(context()).close(UpstreamError("gone")))
    assert [kind for kind, _ in found] == ["response.created", "response.in_progress", "response.failed"]


def test_a_refusal_streams_as_a_refusal_part():
    found = events(run([chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk(finish="stop")]))
    kinds = [kind for kind, _ in found]
    assert "response.refusal.delta" in kinds and "response.refusal.done" in kinds
    assert found[-1][1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]


def test_no_usage_from_the_provider_gives_the_estimate():
    ctx = context()
    ctx.prompt_estimate = 40
    usage = events(run([chunk({"content": "x"}), chunk(finish="stop")], ctx))[-1][1]["response"]["usage"]
    assert usage["input_tokens"] == 40 and usage["output_tokens"] == 0
