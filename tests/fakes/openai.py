"""A fake OpenAI API: the real wire (JSON bodies, SSE `data:` lines, the usage chunk, `[DONE]`,
error bodies) per OpenAI's API reference, with faults on demand, chosen per model name.

    fake.on("m", Behaviour(stream_chunks=5, end="rst"))
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import time

import orjson
from aiohttp import web

CONTENT = ["Hello", " there", ",", " how", " can", " I", " help", " you", " today", "?"]


@dataclasses.dataclass
class Behaviour:
    status: int = 200
    error: dict | None = None  # an OpenAI error object for status >= 400
    headers: dict = dataclasses.field(default_factory=dict)
    content: list[str] = dataclasses.field(default_factory=lambda: list(CONTENT))
    usage: dict | None = dataclasses.field(default_factory=lambda: {
        "prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
    delay_headers: float = 0.0  # wait before answering at all
    delay_chunk: float = 0.0  # between stream chunks
    end: str = "done"  # done | fin (close, no [DONE]) | rst | stall | error_first
    cut_after: int | None = None  # stream: stop after this many content chunks
    keepalive: float | None = None  # stream: send `: keep-alive` every so often while stalled
    body: bytes | None = None  # raw body override (non-JSON answers)
    message: dict | None = None  # non-stream: the choice's message instead of `content` (tool calls)
    deltas: list[dict] | None = None  # stream: the choice's deltas instead of `content` (tool call pieces)
    finish: str = "stop"
    burst: bool = False  # stream: the whole answer (head, every event) in one write, as a cached answer comes


@dataclasses.dataclass
class Seen:
    path: str
    query: str
    headers: dict
    body: dict
    at: float


class FakeOpenAI:
    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.default = Behaviour()
        self.requests: list[Seen] = []
        self.open_connections = 0
        self.closed_at: list[float] = []
        self.stalled_at: dict[str, float] = {}  # a stream's `user` -> when its last event was written
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        self.url = ""

    def on(self, model: str, behaviour: Behaviour) -> None:
        self.behaviours[model] = behaviour

    async def start(self, aiohttp_server) -> FakeOpenAI:
        self.server = await aiohttp_server(self.app)
        self.url = f"http://127.0.0.1:{self.server.port}/v1"
        self.root = f"http://127.0.0.1:{self.server.port}"
        return self

    def behaviour(self, model: str) -> Behaviour:
        return self.behaviours.get(model, self.default)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Seen(request.path, request.query_string, dict(request.headers), body, time.monotonic()))
        return web.json_response({"object": "list", "model": body["model"],
                                  "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
                                  "usage": {"prompt_tokens": 5, "total_tokens": 5}})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        self.requests.append(Seen(request.path, request.query_string, dict(request.headers), body, time.monotonic()))
        b = self.behaviour(body.get("model", ""))
        self.open_connections += 1
        try:
            if b.delay_headers:
                await asyncio.sleep(b.delay_headers)
            if b.end == "stall" and not body.get("stream"):
                await asyncio.sleep(3600)
            if b.body is not None:
                return web.Response(status=b.status, body=b.body, headers=b.headers)
            if b.status >= 400:
                error = b.error or {"message": "fake failure", "type": "server_error", "param": None,
                                    "code": None}
                return web.Response(status=b.status, body=orjson.dumps({"error": error}),
                                    content_type="application/json", headers=b.headers)
            if body.get("stream"):
                return await self._stream(request, body, b)
            return web.Response(body=orjson.dumps(completion(body["model"], b)),
                                content_type="application/json", headers=b.headers)
        finally:
            self.open_connections -= 1
            self.closed_at.append(time.monotonic())

    async def _stream(self, request: web.Request, body: dict, b: Behaviour) -> web.StreamResponse:
        if b.burst:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return web.Response(body=b"".join(stream_events(body["model"], b, include_usage)),
                                headers={"Content-Type": "text/event-stream; charset=utf-8", **b.headers})
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **b.headers})
        await out.prepare(request)
        if b.end == "error_first":
            await out.write(b'data: {"error":{"message":"The server had an error while processing your '
                            b'request.","type":"server_error","param":null,"code":null}}\n\n')
            return out
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for i, data in enumerate(stream_events(body["model"], b, include_usage)):
            if b.cut_after is not None and i > b.cut_after:
                if body.get("user"):
                    self.stalled_at[body["user"]] = time.monotonic()
                return await self._end(request, out, b)
            await out.write(data)
            if b.delay_chunk:
                await asyncio.sleep(b.delay_chunk)
        return out

    async def _end(self, request: web.Request, out: web.StreamResponse, b: Behaviour):
        transport = request.transport
        if b.end == "rst" and transport is not None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif b.end == "fin" and transport is not None:
            transport.close()
        elif b.end == "stall":
            for _ in range(100000):
                await asyncio.sleep(b.keepalive or 3600)
                if b.keepalive:
                    await out.write(b": keep-alive\n\n")
        return out


def completion(model: str, b: Behaviour) -> dict:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion",
        "created": 1741569952, "model": model,
        "choices": [{"index": 0, "message": b.message or {"role": "assistant", "content": "".join(b.content),
                                                          "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": b.finish}],
        "usage": b.usage, "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035"}


def stream_events(model: str, b: Behaviour, include_usage: bool) -> list[bytes]:
    base = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
            "model": model, "system_fingerprint": "fp_44709d6fcb"}
    usage_field = {"usage": None} if include_usage else {}

    def sse(obj) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    events = [sse({**base, **usage_field, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                      "logprobs": None, "finish_reason": None}]})]
    for delta in b.deltas if b.deltas is not None else [{"content": piece} for piece in b.content]:
        events.append(sse({**base, **usage_field, "choices": [{"index": 0, "delta": delta,
                                                              "logprobs": None, "finish_reason": None}]}))
    events.append(sse({**base, **usage_field, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                                          "finish_reason": b.finish}]}))
    if include_usage:
        events.append(sse({**base, "choices": [], "usage": b.usage}))
    events.append(b"data: [DONE]\n\n")
    return events
