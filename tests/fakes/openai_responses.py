"""A fake OpenAI Responses API on loopback: the real wire per the API reference (a `response`
JSON body; SSE frames with an `event:` line and `sequence_number`: response.created,
response.in_progress, output items with their deltas, response.completed; OpenAI's error bodies).
Served at `/v1/responses` (OpenAI), `/openai/v1/responses` (Azure's v1 API) and
`/openai/responses` (Azure's dated preview versions, with `?api-version=`).

    fake.script = [[call("call_1", "get_weather", ['{"city":', ' "Paris"}'])], [text("Sunny.")]]

Each request takes the next turn of `script` (the last one repeats); a turn is a list of items.
"""

from __future__ import annotations

import dataclasses

import orjson
from aiohttp import web


def text(value: str, pieces: int = 3) -> dict:
    size = max(len(value) // pieces, 1)
    return {"type": "message", "pieces": [value[i:i + size] for i in range(0, len(value), size)]}


def call(call_id: str, name: str, pieces: list[str]) -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "pieces": pieces}


@dataclasses.dataclass
class Seen:
    path: str
    query: str
    headers: dict
    body: dict


class FakeResponses:
    def __init__(self) -> None:
        self.script: list[list[dict]] = [[text("Hello from the Responses API.")]]
        self.usage = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 17,
                      "output_tokens_details": {"reasoning_tokens": 6}, "total_tokens": 53}
        self.error: tuple[int, dict] | None = None  # (status, OpenAI error object)
        self.requests: list[Seen] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/responses", self._responses)
        self.app.router.add_post("/openai/v1/responses", self._responses)
        self.app.router.add_post("/openai/responses", self._responses)  # Azure's dated preview versions
        self._turn = 0

    async def start(self, aiohttp_server) -> FakeResponses:
        self.server = await aiohttp_server(self.app)
        self.root = f"http://127.0.0.1:{self.server.port}"
        self.url = self.root + "/v1"
        return self

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(Seen(request.path, request.query_string, dict(request.headers), body))
        if self.error is not None:
            status, error = self.error
            return web.json_response({"error": error}, status=status)
        items = self.script[min(self._turn, len(self.script) - 1)]
        self._turn += 1
        ident = f"resp_fake{self._turn:04d}"
        if not body.get("stream"):
            return web.json_response(self._response(ident, body, "completed", [_whole(i, n) for n, i in enumerate(items)],
                                                    self.usage))
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await out.prepare(request)
        for frame in self.frames(ident, body, items):
            await out.write(frame)
        return out

    @staticmethod
    def _response(ident: str, body: dict, status: str, output: list, usage) -> dict:
        return {"id": ident, "object": "response", "created_at": 1741476542, "status": status, "error": None,
                "incomplete_details": None, "instructions": body.get("instructions"), "max_output_tokens": None,
                "model": body["model"] + "-2025-04-14", "output": output, "parallel_tool_calls": True,
                "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": True,
                "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
                "tools": body.get("tools", []), "top_p": 1.0, "truncation": "disabled", "usage": usage,
                "user": None, "metadata": {}}

    def frames(self, ident: str, body: dict, items: list[dict]) -> list[bytes]:
        seq = iter(range(10_000))

        def sse(kind: str, data: dict) -> bytes:
            return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data,
                                                                    "sequence_number": next(seq)}) + b"\n\n"

        start = self._response(ident, body, "in_progress", [], None)
        out = [sse("response.created", {"response": start}), sse("response.in_progress", {"response": start})]
        done = []
        for n, item in enumerate(items):
            whole = _whole(item, n)
            if item["type"] == "message":
                out.append(sse("response.output_item.added", {"output_index": n, "item": {
                    **whole, "status": "in_progress", "content": []}}))
                where = {"item_id": whole["id"], "output_index": n, "content_index": 0}
                out.append(sse("response.content_part.added", {**where, "part": {
                    "type": "output_text", "annotations": [], "text": ""}}))
                out += [sse("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
                        for piece in item["pieces"]]
                out.append(sse("response.output_text.done", {**where, "text": whole["content"][0]["text"],
                                                              "logprobs": []}))
                out.append(sse("response.content_part.done", {**where, "part": whole["content"][0]}))
            else:
                out.append(sse("response.output_item.added", {"output_index": n, "item": {
                    **whole, "status": "in_progress", "arguments": ""}}))
                where = {"item_id": whole["id"], "output_index": n}
                out += [sse("response.function_call_arguments.delta", {**where, "delta": piece})
                        for piece in item["pieces"]]
                out.append(sse("response.function_call_arguments.done", {**where, "arguments": whole["arguments"]}))
            out.append(sse("response.output_item.done", {"output_index": n, "item": whole}))
            done.append(whole)
        out.append(sse("response.completed", {"response": self._response(ident, body, "completed", done, self.usage)}))
        return out


def _whole(item: dict, n: int) -> dict:
    joined = "".join(item["pieces"])
    if item["type"] == "message":
        return {"id": f"msg_fake{n}", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "text": joined}]}
    return {"id": f"fc_fake{n}", "type": "function_call", "status": "completed", "call_id": item["call_id"],
            "name": item["name"], "arguments": joined}
