"""The Messages stream, written incrementally from chat chunks.

Frames (each with its `event:` line): `message_start` (input tokens as estimated so far) and
`ping` at the first chunk; content blocks with dense indices, strictly one after the other:
`content_block_start` → `text_delta` / `thinking_delta` / `input_json_delta`… →
`content_block_stop`; at the end `message_delta` (stop reason, the provider's usage) and
`message_stop`. A failure after the first frame is an `error` frame.

A block is closed before the next opens, so when a provider interleaves two tool calls' pieces
(chat allows it: each piece names its call's index), the call whose block is open streams as it
comes and the others' argument pieces are kept, each call whole, and written as one block
apiece at the finish. Text that arrives while a tool call's block is open waits the same way.
"""

from __future__ import annotations

import os

import orjson

from proxy.dialects.base import ChatUsage, Chunk, ChunkWalk, Delta, ToolCallDelta

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status (any other 4xx is an invalid request)."""
    found = _TYPES.get(status)
    if found is not None:
        return found
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


FINISH = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
          "content_filter": "refusal"}


def message_id(chat_id: str | None) -> str:
    if chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return "msg_" + os.urandom(12).hex()


def usage_json(usage: ChatUsage | None, prompt_estimate: int = 0) -> dict:
    if usage is None:
        return {"input_tokens": prompt_estimate, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": 0}
    cached = usage.cached
    return {"input_tokens": max((usage.prompt_tokens or 0) - cached, 0), "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": usage.completion_tokens or 0}


def stop_reason(finish: str | None, called: bool) -> str:
    reason = FINISH.get(finish or "stop", "end_turn")
    return "tool_use" if called and reason == "end_turn" else reason


def frame(event: bytes, data: dict) -> bytes:
    return b"event: " + event + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Call:
    """One tool call: its id and name, and, while its block waits, its argument pieces."""

    __slots__ = ("id", "name", "pieces")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.pieces: list[str] = []


class MessagesStream(ChunkWalk):
    """Per request: chat chunks in (`feed`), Messages frames out; `close` ends the stream."""

    def __init__(self, context) -> None:
        self._context = context
        self._started = False
        self._next = 0  # the index the next block gets
        self._open: str | _Call | None = None  # "text", "thinking", a tool call, or no block
        self._waiting: list[list] = []  # [kind or _Call, pieces]: blocks to write when the open one is done
        self._calls: dict[int, _Call] = {}

    # -- in ------------------------------------------------------------------------------------
    def _take(self, delta: Delta, out: list[bytes]) -> None:
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning and self._context.thinking:
            out.append(self._piece("thinking", reasoning))
        text = delta.content or delta.refusal
        if text:
            out.append(self._piece("text", text))
        for call in delta.tool_calls or ():
            out.append(self._tool(call))

    def close(self, error) -> bytes:
        if error is not None:
            return frame(b"error", {"type": "error", "error": {"type": error_type(error.status),
                                                               "message": error.message}})
        out = [] if self._started else [self._start(Chunk())]
        out.append(self._on_finish())
        usage = usage_json(self._usage, self._context.prompt_estimate)
        out.append(frame(b"message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop_reason(self._finish, bool(self._calls)), "stop_sequence": None}, "usage": usage}))
        out.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        return b"".join(out)

    # -- blocks --------------------------------------------------------------------------------
    def _start(self, chunk: Chunk) -> bytes:
        self._started = True
        usage = {"input_tokens": self._context.prompt_estimate, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": 0}
        message = {"id": message_id(chunk.id), "type": "message", "role": "assistant",
                   "model": chunk.model or self._context.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": usage}
        return (frame(b"message_start", {"type": "message_start", "message": message})
                + b'event: ping\ndata: {"type":"ping"}\n\n')

    def _piece(self, kind: str, text: str) -> bytes:
        if self._open == kind:
            return self._delta(kind, text)
        if isinstance(self._open, _Call):  # a tool call's block is open: the text waits its turn
            if self._waiting and self._waiting[-1][0] == kind:
                self._waiting[-1][1].append(text)
            else:
                self._waiting.append([kind, [text]])
            return b""
        return self._stop() + self._begin(kind) + self._delta(kind, text)

    def _tool(self, piece: ToolCallDelta) -> bytes:
        call = self._calls.get(piece.index)
        fresh = call is None
        if fresh:
            call = self._calls[piece.index] = _Call()
        function = piece.function
        call.id = call.id or piece.id or ""
        if function is not None and function.name:
            call.name += function.name
        arguments = function.arguments if function is not None else None
        if call is self._open:
            return self._delta(call, arguments) if arguments else b""
        if arguments:
            call.pieces.append(arguments)
        if isinstance(self._open, _Call) or not call.name:
            if fresh:
                self._waiting.append([call, call.pieces])
            return b""
        # no tool block is open: this call's block opens now (it waited for its name)
        if not fresh:
            self._waiting = [entry for entry in self._waiting if entry[0] is not call]
        out = self._stop() + self._begin(call)
        if call.pieces:
            out += self._delta(call, "".join(call.pieces))
            call.pieces = []
        return out

    def _begin(self, kind: str | _Call) -> bytes:
        self._open = kind
        if isinstance(kind, _Call):
            kind.id = kind.id or "toolu_" + os.urandom(12).hex()
            block: dict = {"type": "tool_use", "id": kind.id, "name": kind.name, "input": {}}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            block = {"type": "text", "text": ""}
        return frame(b"content_block_start", {"type": "content_block_start", "index": self._next,
                                              "content_block": block})

    def _delta(self, kind: str | _Call, piece: str) -> bytes:
        if isinstance(kind, _Call):
            delta = {"type": "input_json_delta", "partial_json": piece}
        elif kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": piece}
        else:
            delta = {"type": "text_delta", "text": piece}
        return frame(b"content_block_delta", {"type": "content_block_delta", "index": self._next, "delta": delta})

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._next
        self._next += 1
        return frame(b"content_block_stop", {"type": "content_block_stop", "index": index})

    def _on_finish(self) -> bytes:
        """The finish: the open block closes, and every block that waited is written whole."""
        out = [self._stop()]
        waiting, self._waiting = self._waiting, []
        for kind, pieces in waiting:
            out.append(self._begin(kind))
            if pieces:
                out.append(self._delta(kind, "".join(pieces)))
            out.append(self._stop())
        return b"".join(out)
