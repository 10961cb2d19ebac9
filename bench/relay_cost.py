"""What the stream relay's parsing costs per event, per wire: canned reads fed to each adapter's
stream parser in one process (no sockets, no server, one core for a few seconds).

The relay's loop per upstream read is: read, `parser.feed(read)`, write what it returns. A bare
passthrough does the read and the write too, so `feed` is what the gateway adds per read; this
measures it, divided by the events the reads carried. Two read patterns:

- `burst`: the whole stream (100 content events, finish, usage, end) in one read, as a fast model,
  a cached answer or a replay arrives;
- `paced`: one event per read, as a model generating at its own pace arrives.

    python -m bench.relay_cost               # a table, microseconds of CPU per event
    python -m bench.relay_cost --json        # the same as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import orjson

from proxy import providers
from proxy.dialects import completions as decoding

EVENTS = 100  # content events per stream, as the bench's mock sends

# wire name -> (the provider type, the end-of-event separator of its framing)
WIRES = {"openai": ("OPENAI_COMPATIBLE", b"\n\n"), "anthropic": ("ANTHROPIC", b"\n\n"),
         "gemini": ("GEMINI", b"\r\n\r\n"), "vertex": ("VERTEXAIGEMINI", b"\r\n\r\n"),
         "bedrock": ("BEDROCK", b"")}


def _sse(obj: dict, sep: bytes = b"\n\n", event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(obj) + sep


def openai_stream(n: int = EVENTS) -> list[bytes]:
    """OpenAI's chunks with `usage: null` in each (include_usage asked), the usage chunk, [DONE]."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "bench-model", "system_fingerprint": "fp_bench", "usage": None}
    events = [_sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]})]
    events += [_sse({**base, "choices": [{"index": 0, "delta": {"content": "tok "}, "logprobs": None,
                                          "finish_reason": None}]}) for _ in range(n - 1)]
    events.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}))
    events.append(_sse({**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": n,
                                                          "total_tokens": n + 12}}))
    return [*events, b"data: [DONE]\n\n"]


def anthropic_stream(n: int = EVENTS) -> list[bytes]:
    """Messages API events, each `event:` + `data:` lines, LF framing."""
    start = {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}
    events = [_sse(start, event="message_start"),
              _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   event="content_block_start")]
    events += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok "}},
                    event="content_block_delta") for _ in range(n)]
    events += [_sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"),
               _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                     "usage": {"output_tokens": n}}, event="message_delta"),
               _sse({"type": "message_stop"}, event="message_stop")]
    return events


def gemini_stream(n: int = EVENTS) -> list[bytes]:
    """`alt=sse` GenerateContentResponse events, CRLF framing, the last with the finish reason."""
    def event(text: str, last: bool) -> bytes:
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        usage = {"promptTokenCount": 12, "totalTokenCount": 12}
        if last:
            candidate["finishReason"] = "STOP"
            usage = {"promptTokenCount": 12, "candidatesTokenCount": n, "totalTokenCount": n + 12}
        return _sse({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-bench",
                     "responseId": "bench"}, b"\r\n\r\n")
    return [event("tok ", i == n - 1) for i in range(n)]


def bedrock_stream(n: int = EVENTS) -> list[bytes]:
    """ConverseStream's binary eventstream frames (the fakes' encoder): start, n text deltas, the
    block's stop, the message's stop, metadata with usage."""
    from tests.fakes.eventstream import event

    frames = [event("messageStart", {"role": "assistant"})]
    frames += [event("contentBlockDelta", {"delta": {"text": "tok "}, "contentBlockIndex": 0}) for _ in range(n)]
    frames += [event("contentBlockStop", {"contentBlockIndex": 0}),
               event("messageStop", {"stopReason": "end_turn"}),
               event("metadata", {"usage": {"inputTokens": 12, "outputTokens": n, "totalTokens": n + 12},
                                  "metrics": {"latencyMs": 100}})]
    return frames


STREAMS = {"openai": openai_stream, "anthropic": anthropic_stream, "gemini": gemini_stream, "vertex": gemini_stream,
           "bedrock": bedrock_stream}


def _request(wants_usage: bool):
    body = {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    if wants_usage:
        body["stream_options"] = {"include_usage": True}
    return decoding.parse(orjson.dumps(body), "chat")


def per_event_us(wire: str, pattern: str, seconds: float = 1.0) -> dict:
    """CPU microseconds per upstream event for one wire and read pattern (process time, best of 3)."""
    provider, _ = WIRES[wire]
    adapter = providers.adapter(provider)
    request = _request(wants_usage=False)  # the common case: the gateway asked for usage and drops it
    events = STREAMS[wire]()
    reads = [b"".join(events)] if pattern == "burst" else events
    best = None
    for _ in range(3):
        streams = 0
        start = time.process_time()
        while True:
            for _ in range(20):
                parser = adapter.stream_parser(request)
                for read in reads:
                    parser.feed(read)
                parser.close()
            streams += 20
            spent = time.process_time() - start
            if spent >= seconds / 3:
                break
        cost = spent / (streams * len(events)) * 1e6
        best = cost if best is None else min(best, cost)
    return {"wire": wire, "pattern": pattern, "events_per_stream": len(events), "us_per_event": round(best, 3)}


def measure(seconds: float = 1.0, wires: tuple[str, ...] = tuple(WIRES)) -> list[dict]:
    return [per_event_us(wire, pattern, seconds) for wire in wires for pattern in ("burst", "paced")]


def render(rows: list[dict]) -> str:
    lines = [f"{'wire':<10} {'reads':<7} {'events':>6}  {'µs CPU per event':>16}"]
    lines += [f"{r['wire']:<10} {r['pattern']:<7} {r['events_per_stream']:>6}  {r['us_per_event']:>16.3f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay_cost", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per figure (default 1)")
    p.add_argument("--wires", default=",".join(WIRES), help=f"a subset of {','.join(WIRES)}")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    rows = measure(args.seconds, tuple(args.wires.split(",")))
    print(json.dumps(rows, indent=2) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
