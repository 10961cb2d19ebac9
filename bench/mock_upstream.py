"""A mock OpenAI upstream, cheap enough never to be the bottleneck: a bare asyncio Protocol.

`POST …/chat/completions` answers a canned `chat.completion` (echoing the model), or, with
`"stream": true`, 100 SSE chunks (the last with `finish_reason: "stop"`), a usage-only chunk
when `stream_options.include_usage` is set, then `data: [DONE]`.

Delays: `--ttfb-ms` (before the first body byte) and `--chunk-delay-ms` (between chunks) apply
to every request; a model named `bench-ttfb<T>-chunk<C>` (milliseconds, e.g.
`bench-ttfb200-chunk10`) picks its own. With no chunk delay the chunks still leave one per
event-loop turn, as a fast real upstream's would, rather than in one write. The model
`bench-burst` gets the whole stream in one write (one HTTP chunk), as a cached answer, a replay
or a very fast model arrives.

    python -m bench.mock_upstream --port 0      # prints "LISTENING <port>" when ready
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

import msgspec

CHUNKS = 100
BURST = "bench-burst"
_DELAYED = re.compile(r"bench-ttfb(\d+)-chunk(\d+)")


class _Options(msgspec.Struct):
    include_usage: bool = False


class _Body(msgspec.Struct):
    model: str = "bench-model"
    stream: bool = False
    stream_options: _Options | None = None


_decode = msgspec.json.Decoder(_Body).decode


def _completion(model: str) -> bytes:
    body = msgspec.json.encode({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        "system_fingerprint": "fp_bench"})
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "\r\n").encode()
    return head + body


def _frame(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def _events(model: str) -> tuple[list[bytes], bytes, bytes]:
    """The framed content chunks, the framed usage chunk, and the framed end of the stream; for
    `bench-burst`, the whole stream as one chunk, with usage and without, and no usage chunk."""
    chunks, usage, done = _payloads(model)
    if model == BURST:  # usage asked for, and not: each the whole stream in one chunk
        return [_frame(b"".join([*chunks, usage, done])), _frame(b"".join([*chunks, done]))], b"", b"0\r\n\r\n"
    return [_frame(c) for c in chunks], _frame(usage), _frame(done) + b"0\r\n\r\n"


def _payloads(model: str) -> tuple[list[bytes], bytes, bytes]:
    chunks = []
    for i in range(CHUNKS):
        last = i == CHUNKS - 1
        delta = {} if last else {"content": "tok "} if i else {"role": "assistant", "content": ""}
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                 "model": model, "system_fingerprint": "fp_bench",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": "stop" if last else None}]}
        chunks.append(b"data: " + msgspec.json.encode(chunk) + b"\n\n")
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": model, "choices": [],
             "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS - 1, "total_tokens": CHUNKS + 11}}
    return chunks, b"data: " + msgspec.json.encode(usage) + b"\n\n", b"data: [DONE]\n\n"


_SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
             b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"


class Canned:
    """Responses built once per model name, plus that model's delays."""

    def __init__(self, ttfb: float, chunk_delay: float) -> None:
        self.ttfb = ttfb
        self.chunk_delay = chunk_delay
        self._by_model: dict[str, tuple] = {}

    def get(self, model: str) -> tuple:
        found = self._by_model.get(model)
        if found is None:
            match = _DELAYED.fullmatch(model)
            delays = (int(match[1]) / 1000, int(match[2]) / 1000) if match else (self.ttfb, self.chunk_delay)
            found = self._by_model[model] = (_completion(model), *_events(model), *delays)
        return found


class Upstream(asyncio.Protocol):
    """One client connection: requests parsed in order, one response in flight at a time."""

    def __init__(self, canned: Canned) -> None:
        self.canned = canned
        self.buf = bytearray()
        self.busy = False
        self.paused = False
        self.parts: list[bytes] = []
        self.delay = 0.0
        self.handle: asyncio.Handle | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.busy and self.handle is None and self.parts:
            self._step()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            self.transport.write(_BAD)
            self.transport.close()
            return
        line_end = head.find(b"\r\n", at)
        length = int(head[at + 15: line_end if line_end >= 0 else None])
        if len(buf) < end + 4 + length:
            return
        body = bytes(buf[end + 4: end + 4 + length])
        del buf[: end + 4 + length]
        if not head.startswith(b"post ") or b"/chat/completions " not in head.split(b"\r\n", 1)[0]:
            self.transport.write(_NOT_FOUND)
            return self._next()
        self._answer(body)

    def _answer(self, body: bytes) -> None:
        try:
            request = _decode(body)
        except msgspec.DecodeError:
            self.transport.write(_BAD)
            self.transport.close()
            return
        completion, chunks, usage, end, ttfb, delay = self.canned.get(request.model)
        self.busy = True
        if not request.stream:
            if ttfb:
                self.handle = self.loop.call_later(ttfb, self._complete, completion)
            else:
                self._complete(completion)
            return
        wants_usage = request.stream_options is not None and request.stream_options.include_usage
        if not usage:  # a burst
            self.parts = [chunks[0 if wants_usage else 1], end]
        else:
            self.parts = [*chunks, usage, end] if wants_usage else [*chunks, end]
        self.parts.reverse()  # popped from the end
        self.delay = delay
        self.transport.write(_SSE_HEAD)
        self.handle = self.loop.call_later(ttfb, self._step) if ttfb else self.loop.call_soon(self._step)

    def _complete(self, response: bytes) -> None:
        self.handle = None
        if self.transport is None:
            return
        self.transport.write(response)
        self.busy = False
        if self.buf:
            self._next()

    def _step(self) -> None:
        self.handle = None
        if self.transport is None or self.paused:
            return
        parts = self.parts
        self.transport.write(parts.pop())
        if not parts:
            self.busy = False
            if self.buf:
                self._next()
            return
        delay = self.delay
        self.handle = self.loop.call_later(delay, self._step) if delay else self.loop.call_soon(self._step)


async def serve(host: str, port: int, ttfb: float, chunk_delay: float) -> None:
    canned = Canned(ttfb, chunk_delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(canned), host, port, backlog=4096, reuse_address=True)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mock_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--ttfb-ms", type=float, default=0.0, help="delay before the first body byte")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks")
    args = parser.parse_args(argv)
    import uvloop

    try:
        uvloop.run(serve(args.host, args.port, args.ttfb_ms / 1000, args.chunk_delay_ms / 1000))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
