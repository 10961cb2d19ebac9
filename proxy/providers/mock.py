"""MOCK: a deterministic in-process model for demos, tests and capacity runs.

The model name picks the scenario, by its dash-separated words:
    mock-gpt            a short answer (stream or not), with usage
    …-slow              50 ms between stream chunks
    …-long              1,000 stream chunks
    …-429               429 with Retry-After: 1
    …-500               500 server error
    …-truncated         the stream stops halfway, without a finish reason or [DONE]
    …-errorstream       HTTP 200 whose first event is an error
It speaks OpenAI's wire, so it is relayed like any OpenAI-compatible provider.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import time
import zlib

import msgspec
import orjson

from proxy.providers.base import Capabilities, UpstreamRequest
from proxy.providers.openai import Adapter as OpenAIAdapter

_WORDS = ("Hello! I am {model}, a mock model served by the gateway. "
          "Your message had {n} characters.").split(" ")


class _Body(msgspec.Struct):
    model: str = "mock-gpt"
    messages: msgspec.Raw = msgspec.Raw(b"[]")
    input: msgspec.Raw = msgspec.Raw(b"[]")
    stream: bool = False
    stream_options: dict | None = None


_body = msgspec.json.Decoder(_Body)


class MockResponse:
    """The same small surface as `proxy.net.httpclient.Response`."""

    def __init__(self, status: int, chunks: list[bytes], *, stream: bool, delay: float = 0.0):
        self.status = status
        self.headers = {"Content-Type": "text/event-stream" if stream and status == 200
                        else "application/json"}
        if status == 429:
            self.headers["Retry-After"] = "1"
        self._chunks = chunks
        self._delay = delay
        self._next = 0

    async def chunk(self) -> bytes:
        if self._next >= len(self._chunks):
            return b""
        if self._delay and self._next:
            await asyncio.sleep(self._delay)
        self._next += 1
        return self._chunks[self._next - 1]

    @property
    def complete(self) -> bool:
        return self._next >= len(self._chunks)

    def close(self) -> None:
        self._next = len(self._chunks)


def _error(status: int, message: str, type_: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _pieces(model: str, prompt: bytes, count: int) -> list[str]:
    words = [w.format(model=model, n=len(prompt)) for w in _WORDS]
    return [(words[i % len(words)] + " ") for i in range(count)]


def _sse(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _stream(model: str, pieces: list[str], usage: dict, include_usage: bool,
            truncated: bool) -> list[bytes]:
    ident = f"chatcmpl-mock{zlib.crc32(model.encode()):08x}"
    base = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}
    chunks = [_sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]})]
    for piece in pieces:
        chunks.append(_sse({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                "logprobs": None, "finish_reason": None}]}))
    if truncated:
        return chunks[: len(chunks) // 2]
    chunks.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                            "finish_reason": "stop"}]}))
    if include_usage:
        chunks.append(_sse({**base, "choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def _completion(model: str, pieces: list[str], usage: dict) -> bytes:
    return orjson.dumps({
        "id": f"chatcmpl-mock{zlib.crc32(model.encode()):08x}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces),
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": usage, "system_fingerprint": None})


def _embeddings(model: str, text: bytes) -> bytes:
    seed = zlib.crc32(text)
    vector = [((seed >> (i % 24)) & 0xFF) / 255.0 for i in range(8)]
    tokens = max(len(text) // 4, 1)
    return orjson.dumps({"object": "list", "model": model,
                         "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class Adapter(OpenAIAdapter):
    def __init__(self) -> None:
        super().__init__(Capabilities(in_process=True, hosted_by_default=True, embeddings=True,
                                      default_url="mock://local"))

    def serve(self, request: UpstreamRequest) -> MockResponse:
        body = _body.decode(request.body)
        words = set(body.model.split("-"))
        stream = body.stream
        if request.url.endswith("/embeddings"):
            return MockResponse(200, [_embeddings(body.model, bytes(body.input))], stream=False)
        if "429" in words:
            return MockResponse(429, [_error(429, "mock rate limit", "requests", "rate_limit_exceeded")],
                                stream=False)
        if "500" in words:
            return MockResponse(500, [_error(500, "mock server error", "server_error", "server_error")],
                                stream=False)
        prompt = bytes(body.messages)
        pieces = _pieces(body.model, prompt, 1000 if "long" in words else 16)
        completion = len(pieces)
        prompt_tokens = max(len(prompt) // 4, 1)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion,
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0}}
        if not stream:
            data = _completion(body.model, pieces, usage)
            if "truncated" in words:
                data = data[: len(data) // 2]
            return MockResponse(200, [data], stream=False)
        if "errorstream" in words:
            error = _error(500, "mock stream error", "server_error", "server_error")
            return MockResponse(200, [b"data: " + error + b"\n\n"], stream=True)
        include = bool(body.stream_options and body.stream_options.get("include_usage"))
        chunks = _stream(body.model, pieces, usage, include, "truncated" in words)
        return MockResponse(200, chunks, stream=True, delay=0.05 if "slow" in words else 0.0)


def demo_item() -> dict:
    """The provider of the embedded defaults (`proxy/data/defaults.json`), as a registration item:
    the demo model `mock-gpt`."""
    data = importlib.resources.files("proxy.data").joinpath("defaults.json").read_bytes()
    return orjson.loads(data)["providers"][0]
