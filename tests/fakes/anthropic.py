"""A fake Anthropic Messages API on loopback: the real wire (JSON message bodies; SSE with an
`event:` line per frame: message_start, ping, content blocks, message_delta, message_stop;
`count_tokens`; Anthropic's error bodies), per the Messages API reference.

    fake.content = [text("Hi"), tool("toolu_1", "get_weather", ['{"city":', ' "Paris"}'])]
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from tests.fakes.openai import Seen


def text(value: str, pieces: int = 3) -> dict:
    size = max(len(value) // pieces, 1)
    return {"type": "text", "pieces": [value[i:i + size] for i in range(0, len(value), size)]}


def tool(ident: str, name: str, pieces: list[str]) -> dict:
    return {"type": "tool_use", "id": ident, "name": name, "pieces": pieces}


def provider(fake: FakeAnthropic, models=("claude-up",), key: str = "sk-ant-fake-0001") -> dict:
    """The registration of an Anthropic provider answered by `fake`."""
    return {"name": "anth", "supportedProvider": "ANTHROPIC", "url": fake.url, "apiKey": key,
            "models": list(models), "isHosted": True}


class FakeAnthropic:
    def __init__(self) -> None:
        self.content = [text("Hello from the Messages API.")]
        self.stop_reason = "end_turn"
        self.usage = {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5,
                      "output_tokens": 9}
        self.error: tuple[int, str] | None = None  # (status, Anthropic error type)
        self.requests: list[Seen] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_post("/v1/messages/count_tokens", self._count)

    async def start(self, aiohttp_server) -> FakeAnthropic:
        self.server = await aiohttp_server(self.app)
        self.url = f"http://127.0.0.1:{self.server.port}/v1"
        return self

    async def _seen(self, request: web.Request) -> dict:
        raw = await request.read()
        body = orjson.loads(raw)
        self.requests.append(Seen(request.path, request.query_string, dict(request.headers), body, time.monotonic()))
        return body

    async def _count(self, request: web.Request) -> web.Response:
        body = await self._seen(request)
        if self.error is not None:
            return self._error()
        return web.json_response({"input_tokens": 1000 + len(body["messages"])})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._seen(request)
        if self.error is not None:
            return self._error()
        if body.get("stream"):
            return await self._stream(request, body)
        content = [self._whole(block) for block in self.content]
        return web.json_response({"id": "msg_01FakeFakeFake", "type": "message", "role": "assistant",
                                  "model": body["model"], "content": content, "stop_reason": self.stop_reason,
                                  "stop_sequence": None, "usage": self.usage})

    def _error(self) -> web.Response:
        status, kind = self.error
        error = {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}
        return web.json_response(error, status=status, headers={"request-id": "req_fake"})

    @staticmethod
    def _whole(block: dict) -> dict:
        if block["type"] == "text":
            return {"type": "text", "text": "".join(block["pieces"])}
        return {"type": "tool_use", "id": block["id"], "name": block["name"],
                "input": orjson.loads("".join(block["pieces"]) or "{}")}

    async def _stream(self, request: web.Request, body: dict) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await out.prepare(request)
        for event in self.events(body["model"]):
            await out.write(event)
        return out

    def events(self, model: str) -> list[bytes]:
        def sse(name: str, data: dict) -> bytes:
            return f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"

        start_usage = {**self.usage, "output_tokens": 1}
        events = [sse("message_start", {"type": "message_start", "message": {
            "id": "msg_01FakeFakeFake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}), sse("ping", {"type": "ping"})]
        for index, block in enumerate(self.content):
            if block["type"] == "text":
                head, delta = {"type": "text", "text": ""}, lambda p: {"type": "text_delta", "text": p}
            else:
                head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                delta = lambda p: {"type": "input_json_delta", "partial_json": p}  # noqa: E731
            events.append(sse("content_block_start", {"type": "content_block_start", "index": index,
                                                      "content_block": head}))
            for piece in block["pieces"]:
                events.append(sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                          "delta": delta(piece)}))
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(sse("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": self.stop_reason, "stop_sequence": None}, "usage": {"output_tokens": self.usage["output_tokens"]}}))
        events.append(sse("message_stop", {"type": "message_stop"}))
        return events
