"""The Responses answer's shapes, and its stream written incrementally from chat chunks.

The `response` object (`response_object`) is the same in the answer and in the stream's
lifecycle events: one `resp_` id per request (made when the request is read, so every event of a
stream carries it), the caller's parameters echoed, `output` items and `usage`.

Stream frames, each `event: TYPE` + `data: {"type": TYPE, "sequence_number": N, …}` with N from 0:
`response.created`, `response.in_progress` at the first chunk; then per output item
`response.output_item.added` → (a message) `content_part.added` / `output_text.delta`… /
`output_text.done` / `content_part.done`, or (a function call) `function_call_arguments.delta`…
/ `.done` → `response.output_item.done`; at the end `response.completed` (or
`response.incomplete`) with the whole output and the usage. A failure after the first frame is
`response.failed` carrying an error code.

Items are written one after the other. When a provider interleaves two tool calls' pieces, the
call whose item is open streams as it comes and the others' pieces are kept, each call whole,
and written at the finish; text arriving while a call's item is open waits the same way. A
custom tool call is always written whole at the finish: its `input` is a string inside the
JSON arguments the chat provider streams, so it is known only once they are complete.
"""

from __future__ import annotations

import msgspec
import orjson

from proxy.dialects.base import ChatUsage, Chunk, ChunkWalk, Delta, ToolCallDelta

_encode = msgspec.json.encode  # the echoed parameters are msgspec.Raw: orjson cannot write them
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}  # chat finish → reason
_ECHO_DEFAULTS = (("instructions", None), ("max_output_tokens", None), ("parallel_tool_calls", True),
                  ("previous_response_id", None), ("reasoning", None), ("store", True), ("temperature", None),
                  ("text", {"format": {"type": "text"}}), ("tool_choice", "auto"), ("tools", []),
                  ("top_p", None), ("truncation", "disabled"), ("user", None), ("metadata", {}))
ECHOED = tuple(name for name, _ in _ECHO_DEFAULTS)


def usage_json(usage: ChatUsage | None, prompt_estimate: int = 0) -> dict:
    if usage is None:
        prompt, completion, cached, reasoning = prompt_estimate, 0, 0, 0
    else:
        prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
        cached, reasoning = usage.cached, usage.reasoning
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": (usage and usage.total_tokens) or prompt + completion}


def response_object(context, status: str, output: list, usage: dict | None, finish: str | None = None,
                    error: dict | None = None) -> dict:
    """The `response` object; `finish` (chat's finish reason) makes a completed one incomplete."""
    reason = INCOMPLETE.get(finish or "")
    if reason is not None and status == "completed":
        status = "incomplete"
    out = {"id": context.id, "object": "response", "created_at": context.created, "status": status,
           "background": False, "error": error,
           "incomplete_details": {"reason": reason} if status == "incomplete" else None}
    echo = context.echo
    for name, default in _ECHO_DEFAULTS:
        out[name] = echo.get(name, default)
    out["model"] = context.served or context.model
    out["output"] = output
    out["usage"] = usage
    return out


def failure_code(status: int) -> str:
    """The Responses error code of a failed stream (the API's codes for a provider's failure)."""
    return "rate_limit_exceeded" if status == 429 else "server_error"


def item_ids(context, index: int) -> str:
    """An output item's id suffix: the response's own, so ids are unique and stable per answer."""
    return f"{context.id[5:]}{index:02d}"


def message_item(context, index: int, parts: list[dict], status: str = "completed") -> dict:
    return {"id": "msg_" + item_ids(context, index), "type": "message", "status": status, "role": "assistant",
            "content": parts}


def part(kind: str, text: str) -> dict:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def call_item(context, index: int, call_id: str, flat_name: str, arguments: str,
              status: str = "completed") -> dict:
    """A function call, or a custom tool call (its `input` is the `input` argument's string)."""
    namespace, name, kind = context.names.get(flat_name, (None, flat_name, "function"))
    if kind == "custom":
        item = {"id": "ctc_" + item_ids(context, index), "type": "custom_tool_call", "status": status,
                "call_id": call_id, "name": name, "input": custom_input(arguments) if status == "completed" else ""}
    else:
        item = {"id": "fc_" + item_ids(context, index), "type": "function_call", "status": status,
                "call_id": call_id, "name": name, "arguments": arguments}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def custom_input(arguments: str) -> str:
    """A custom tool's input, offered to chat providers as a function with one string `input`."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return arguments  # never drop what the model wrote
    found = value.get("input") if isinstance(value, dict) else None
    return found if isinstance(found, str) else arguments


class _Item:
    """One output item while it streams or waits: a message (its parts) or a tool call."""

    __slots__ = ("call", "call_id", "name", "parts", "pieces", "index")

    def __init__(self, call: bool) -> None:
        self.call = call
        self.call_id = ""
        self.name = ""
        self.parts: list[list] = []  # message: [kind, pieces] per content part
        self.pieces: list[str] = []  # tool call: every argument piece so far
        self.index = 0


class ResponsesStream(ChunkWalk):
    """Per request: chat chunks in (`feed`), Responses frames out; `close` ends the stream."""

    def __init__(self, context) -> None:
        self._c = context
        self._seq = 0
        self._started = False
        self._output: list[dict] = []  # the items written whole so far, in output order
        self._open: _Item | None = None
        self._waiting: list[_Item] = []
        self._calls: dict[int, _Item] = {}

    def _event(self, kind: str, members: dict) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return b"".join((b"event: ", kind.encode(), b"\ndata: ",
                         _encode({"type": kind, "sequence_number": seq, **members}), b"\n\n"))

    # -- in --------------------------------------------------------------------------------------
    def _take(self, delta: Delta, out: list[bytes]) -> None:
        if delta.content:
            out.append(self._text("output_text", delta.content))
        if delta.refusal:
            out.append(self._text("refusal", delta.refusal))
        for piece in delta.tool_calls or ():
            out.append(self._tool(piece))

    def close(self, error) -> bytes:
        out = [] if self._started else [self._start(Chunk())]
        if error is not None:
            failure = {"code": failure_code(error.status), "message": error.message}
            failed = response_object(self._c, "failed", self._output, None, error=failure)
            out.append(self._event("response.failed", {"response": failed}))
            return b"".join(out)
        out.append(self._on_finish())
        final = response_object(self._c, "completed", self._output, usage_json(self._usage, self._c.prompt_estimate),
                                self._finish)
        out.append(self._event("response." + final["status"], {"response": final}))
        return b"".join(out)

    def _start(self, chunk: Chunk) -> bytes:
        self._started = True
        if chunk.model:
            self._c.served = chunk.model
        head = response_object(self._c, "in_progress", [], None)
        return self._event("response.created", {"response": head}) + self._event("response.in_progress",
                                                                                  {"response": head})

    # -- items -----------------------------------------------------------------------------------
    def _text(self, kind: str, text: str) -> bytes:
        item = self._open
        if item is not None and item.call:  # a call's item is open: the text waits its turn
            waiting = self._waiting[-1] if self._waiting and not self._waiting[-1].call else None
            if waiting is None:
                waiting = _Item(call=False)
                self._waiting.append(waiting)
            _add(waiting, kind, text)
            return b""
        out = b""
        if item is None:
            item = _Item(call=False)
            out = self._begin(item)
        return out + self._text_delta(item, kind, text)

    def _tool(self, piece: ToolCallDelta) -> bytes:
        call = self._calls.get(piece.index)
        fresh = call is None
        if fresh:
            call = self._calls[piece.index] = _Item(call=True)
        call.call_id = call.call_id or piece.id or ""
        function = piece.function
        arguments = function.arguments if function is not None else None
        if function is not None and function.name:
            call.name += function.name
        if arguments:
            call.pieces.append(arguments)
        if call is self._open:
            return self._args_delta(call, arguments) if arguments else b""
        blocked = (self._open is not None and self._open.call) or not call.name or self._custom(call)
        if blocked:
            if fresh:
                self._waiting.append(call)
            return b""
        if not fresh:
            self._waiting = [item for item in self._waiting if item is not call]
        out = self._close_open() + self._begin(call)
        if call.pieces:
            out += self._args_delta(call, "".join(call.pieces))
        return out

    def _custom(self, call: _Item) -> bool:
        found = self._c.names.get(call.name)
        return found is not None and found[2] == "custom"

    def _begin(self, item: _Item) -> bytes:
        self._open = item
        item.index = index = len(self._output)
        if item.call:
            item.call_id = item.call_id or f"call_{item_ids(self._c, index)}"
            added = call_item(self._c, index, item.call_id, item.name, "", "in_progress")
        else:
            added = message_item(self._c, index, [], "in_progress")
        return self._event("response.output_item.added", {"output_index": index, "item": added})

    def _text_delta(self, item: _Item, kind: str, text: str) -> bytes:
        out = b""
        if not item.parts or item.parts[-1][0] != kind:
            out = self._part_done(item) + self._part_added(item, kind)
        item.parts[-1][1].append(text)
        name = "response.refusal.delta" if kind == "refusal" else "response.output_text.delta"
        members = {"item_id": "msg_" + item_ids(self._c, item.index), "output_index": item.index,
                   "content_index": len(item.parts) - 1, "delta": text}
        if kind != "refusal":
            members["logprobs"] = []
        return out + self._event(name, members)

    def _part_added(self, item: _Item, kind: str) -> bytes:
        item.parts.append([kind, []])
        return self._event("response.content_part.added", {
            "item_id": "msg_" + item_ids(self._c, item.index), "output_index": item.index,
            "content_index": len(item.parts) - 1, "part": part(kind, "")})

    def _part_done(self, item: _Item) -> bytes:
        """The text of the message's last part is complete (nothing when it has none)."""
        if not item.parts:
            return b""
        kind, pieces = item.parts[-1]
        text = "".join(pieces)
        item.parts[-1][1] = [text]
        where = {"item_id": "msg_" + item_ids(self._c, item.index), "output_index": item.index,
                 "content_index": len(item.parts) - 1}
        if kind == "refusal":
            done = self._event("response.refusal.done", {**where, "refusal": text})
        else:
            done = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
        return done + self._event("response.content_part.done", {**where, "part": part(kind, text)})

    def _args_delta(self, call: _Item, piece: str) -> bytes:
        return self._event("response.function_call_arguments.delta", {
            "item_id": "fc_" + item_ids(self._c, call.index), "output_index": call.index, "delta": piece})

    def _close_open(self) -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        index = item.index
        if item.call:
            arguments = "".join(item.pieces)
            done = call_item(self._c, index, item.call_id, item.name, arguments)
            out = b""
            if done["type"] == "function_call":
                out = self._event("response.function_call_arguments.done", {
                    "item_id": done["id"], "output_index": index, "arguments": arguments})
            else:
                where = {"item_id": done["id"], "output_index": index}
                out = (self._event("response.custom_tool_call_input.delta", {**where, "delta": done["input"]})
                       + self._event("response.custom_tool_call_input.done", {**where, "input": done["input"]}))
        else:
            out = self._part_done(item)
            status = "incomplete" if self._finish in INCOMPLETE else "completed"
            done = message_item(self._c, index, [part(kind, pieces[0]) for kind, pieces in item.parts], status)
        self._output.append(done)
        return out + self._event("response.output_item.done", {"output_index": index, "item": done})

    def _on_finish(self) -> bytes:
        """The finish: the open item closes, and every item that waited is written whole."""
        out = [self._close_open()]
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            out.append(self._begin(item))
            if item.call:
                if item.pieces and not self._custom(item):
                    out.append(self._args_delta(item, "".join(item.pieces)))
            else:
                parts, item.parts = item.parts, []
                for kind, pieces in parts:
                    out.append(self._text_delta(item, kind, "".join(pieces)))
            out.append(self._close_open())
        return b"".join(out)


def _add(item: _Item, kind: str, text: str) -> None:
    if item.parts and item.parts[-1][0] == kind:
        item.parts[-1][1].append(text)
    else:
        item.parts.append([kind, [text]])
