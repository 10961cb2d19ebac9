"""ANTHROPIC: the Messages API, translated both ways.

Request: system and developer messages → `system`; user, assistant and tool turns → alternating
`user`/`assistant` messages (consecutive same-role turns merged; tool results are user
`tool_result` blocks, tool calls `tool_use` blocks, ids kept); images → `url` or `base64` sources.
`max_tokens` is required there: 4096 when the caller gives none. JSON mode (`response_format`
json_object or json_schema) is a forced tool whose input schema is the caller's schema (any
object for json_object); its input comes back as the message content, finish_reason `stop`.
Answer: text and tool_use blocks → content and tool calls; stop reasons → finish_reason; usage
with prompt caching: prompt = input + cache read + cache creation, cached = cache read.
Stream: message_start … message_stop → `chat.completion.chunk` events with one id; the finish
chunk at message_delta; the usage chunk (when asked for) and `[DONE]` at message_stop.
Passthrough: a caller speaking Messages itself (the `messages` dialect, proxy/dialects/) is
sent as it came, model swapped and its `anthropic-version`/`anthropic-beta` kept; the answer
and the events go back untouched, usage read off them (`NativeParser`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from proxy.errors import InvalidRequest
from proxy.providers import base
from proxy.providers import chat_shapes as chat
from proxy.providers.base import (
    Capabilities,
    ChatRequest,
    Parsed,
    Target,
    UpstreamFailure,
    UpstreamRequest,
    Usage,
    speaks,
)
from proxy.providers.chat_shapes import ChatParams, ImagePart, Message, NamedChoice, ResponseFormat

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_response"
_ANY_OBJECT = {"type": "object"}
_NO_PARAMETERS = {"type": "object", "properties": {}}
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length"}
# An error type → the status Anthropic answers it with (an error event in a stream has none).
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
# Error types whose class does not follow from the status (an overload may come as 529 or 429;
# an account error is about the gateway's own key, whatever the status: fail over, never blame
# the caller).
_KINDS = {"overloaded_error": "overloaded", "timeout_error": "timeout",
          **dict.fromkeys(("authentication_error", "permission_error", "billing_error"), "auth")}
_OVERLOADED = ERROR_STATUS["overloaded_error"]  # 529 alone, with a body that cannot be read, says it too


# -- request: OpenAI → Anthropic ------------------------------------------------------------
def to_anthropic_request(params: ChatParams, model: str, stream: bool) -> dict:
    system, messages = to_anthropic_messages(params.messages)
    body: dict = {"model": model, "messages": messages,
                  "max_tokens": params.output_limit or DEFAULT_MAX_TOKENS}
    if system:
        body["system"] = system
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.stops:
        body["stop_sequences"] = params.stops
    if params.user:
        body["metadata"] = {"user_id": params.user}
    body.update(to_anthropic_tools(params))
    if stream:
        body["stream"] = True
    return body


def to_anthropic_messages(messages: list[Message]) -> tuple[str | None, list[dict]]:
    """(system prompt, turns): system messages joined; consecutive same-role turns merged."""
    system: list[str] = []
    turns: list[dict] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            system.extend(t for t in chat.texts(message, i) if t)
            continue
        role, blocks = _blocks(message, i)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system) or None, turns


def _blocks(message: Message, i: int) -> tuple[str, list[dict]]:
    if message.role == "user":
        return "user", [_user_block(part, i) for part in chat.parts(message)
                        if isinstance(part, ImagePart) or part.text]
    if message.role == "assistant":
        blocks = [{"type": "text", "text": text} for text in chat.texts(message, i) if text]
        blocks += [{"type": "tool_use", "id": call.id, "name": call.function.name,
                    "input": chat.arguments(call, i)} for call in message.tool_calls or ()]
        return "assistant", blocks
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(f"messages[{i}].tool_call_id is required", param=f"messages[{i}].tool_call_id")
        return "user", [{"type": "tool_result", "tool_use_id": message.tool_call_id,
                         "content": "".join(chat.texts(message, i))}]
    raise InvalidRequest(f"messages[{i}]: role {message.role!r} is not supported by this provider; "
                         "use 'tool' messages", param=f"messages[{i}].role")


def _user_block(part, i: int) -> dict:
    if not isinstance(part, ImagePart):
        return {"type": "text", "text": part.text}
    kind, media_type, data = chat.image_source(part, i)
    if kind == "url":
        return {"type": "image", "source": {"type": "url", "url": data}}
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def to_anthropic_tools(params: ChatParams) -> dict:
    """`tools` and `tool_choice`, or the forced JSON tool of JSON mode."""
    if params.json_mode:
        if params.tools:
            raise InvalidRequest("JSON mode together with tools is not supported by this provider",
                                 param="response_format")
        return _json_tool(params.response_format)
    if not params.tools:
        return {}
    tools = []
    for tool in params.tools:
        spec = tool.function
        entry: dict = {"name": spec.name, "input_schema": chat.present(spec.parameters) or _NO_PARAMETERS}
        if spec.description:
            entry["description"] = spec.description
        tools.append(entry)
    out: dict = {"tools": tools}
    choice = _tool_choice(params.tool_choice, params.parallel_tool_calls)
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool_choice(given: str | NamedChoice | None, parallel: bool | None) -> dict | None:
    if isinstance(given, NamedChoice):
        out = {"type": "tool", "name": given.function.name}
    elif given is None:
        out = {"type": "auto"} if parallel is False else None
    elif given == "auto":
        out = {"type": "auto"}
    elif given in ("required", "none"):
        out = {"type": "any" if given == "required" else "none"}
    else:
        raise InvalidRequest(f"tool_choice {given!r} is not one of none, auto, required", param="tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _json_tool(fmt: ResponseFormat | None) -> dict:
    schema = fmt.json_schema if fmt is not None else None
    tool = {"name": JSON_TOOL, "description": "Give the answer as this tool's input.",
            "input_schema": (schema and chat.present(schema.schema)) or _ANY_OBJECT}
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": JSON_TOOL}}


# -- answer: Anthropic → OpenAI -------------------------------------------------------------
class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Block(msgspec.Struct):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw(b"{}")


class _Message(msgspec.Struct):
    id: str = ""
    model: str | None = None
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _Error(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _Event(msgspec.Struct):
    """Every stream event, as one view: each type fills the fields it has."""

    type: str
    message: _Message | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


_message = msgspec.json.Decoder(_Message)
_error_body = msgspec.json.Decoder(_ErrorBody)


def usage_of(usage: _Usage) -> Usage:
    read = usage.cache_read_input_tokens or 0
    prompt = (usage.input_tokens or 0) + read + (usage.cache_creation_input_tokens or 0)
    completion_ = usage.output_tokens or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion_, total_tokens=prompt + completion_,
                 cached_tokens=read)


def from_anthropic_response(message: _Message, json_mode: bool) -> dict:
    """The OpenAI choice for a Message."""
    text, calls = [], []
    for block in message.content:
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            args = bytes(block.input).decode()
            if json_mode and block.name == JSON_TOOL:
                text.append(args)
            else:
                calls.append(chat.tool_call(block.id, block.name, args))
    finish = FINISH.get(message.stop_reason or "", "stop")
    if json_mode and finish == "tool_calls":
        finish = "stop"
    return chat.choice(0, "".join(text), calls, finish)


def count_into(tally: _Usage, usage: _Usage | None) -> None:
    """Stream usage fields are cumulative: the latest value of each wins."""
    if usage is not None:
        for field in usage.__struct_fields__:
            value = getattr(usage, field)
            if value is not None:
                setattr(tally, field, value)


def failure_of(status: int, error: _Error | None, retry_after: float | None = None) -> UpstreamFailure:
    error = error or _Error(message=f"the provider answered HTTP {status}")
    kind = _KINDS.get(error.type) or ("overloaded" if status == _OVERLOADED else base.kind_of_status(status))
    return UpstreamFailure(status=status, message=error.message or error.type, kind=kind,
                           retry_after=retry_after, code=error.type or None, type=error.type or None)


class StreamParser(chat.TranslatingParser):
    """Anthropic stream events in, OpenAI chunk events out (see the module docstring)."""

    events_decoder = msgspec.json.Decoder(_Event)

    def __init__(self, model: str, wants_usage: bool, json_mode: bool) -> None:
        super().__init__(model, wants_usage)
        self._json_mode = json_mode
        self._calls: dict[int, int] = {}  # content block index → tool call position
        self._json_blocks: set[int] = set()
        self._tally = _Usage()

    def on_event(self, view: _Event) -> bytes:
        handler = _HANDLERS.get(view.type)
        return handler(self, view) if handler is not None else b""

    def _count(self, usage: _Usage | None) -> None:
        count_into(self._tally, usage)

    def _message_start(self, event: _Event) -> bytes:
        message = event.message or _Message()
        self._count(message.usage)
        return self.start(message.id, message.model).delta({"role": "assistant", "content": ""})

    def _block_start(self, event: _Event) -> bytes:
        block = event.content_block
        if block is None or block.type not in ("text", "tool_use"):
            return b""
        if block.type == "text":
            return self.text(block.text)
        if self._json_mode and block.name == JSON_TOOL:
            self._json_blocks.add(event.index)
            return b""
        position = self._calls[event.index] = len(self._calls)
        self.content_events += 1
        return self.out.tool(position, "", chat.tool_call(block.id, block.name, ""))

    def _block_delta(self, event: _Event) -> bytes:
        delta = event.delta or _Delta()
        if delta.type == "text_delta":
            return self.text(delta.text)
        if delta.type != "input_json_delta" or not delta.partial_json:
            return b""
        if event.index in self._json_blocks:
            return self.text(delta.partial_json)
        position = self._calls.get(event.index)
        if position is None:
            return b""
        self.content_events += 1
        return self.out.tool(position, delta.partial_json)

    def _message_delta(self, event: _Event) -> bytes:
        self._count(event.usage)
        self.usage = usage_of(self._tally)
        reason = (event.delta or _Delta()).stop_reason
        if reason is None:
            return b""
        finish = FINISH.get(reason, "stop")
        if self._json_mode and finish == "tool_calls":
            finish = "stop"
        self.finished = True
        return self.out.finish(finish)

    def _message_stop(self, event: _Event) -> bytes:
        if self.usage is None:
            self.usage = usage_of(self._tally)
        return self.end()

    def _error(self, event: _Event) -> bytes:
        error = event.error or _Error()
        return self.fail(failure_of(ERROR_STATUS.get(error.type, 500), error))


_HANDLERS = {"message_start": StreamParser._message_start, "content_block_start": StreamParser._block_start,
             "content_block_delta": StreamParser._block_delta, "message_delta": StreamParser._message_delta,
             "message_stop": StreamParser._message_stop, "error": StreamParser._error}


class NativeParser(base.RelayParser):
    """Messages events relayed as they came (the caller speaks Messages); usage, the stop reason
    and errors read off them. Text and JSON deltas are counted by their `event:` line, not decoded."""

    __slots__ = ("_tally",)
    READ = frozenset({b"message_start", b"message_delta", b"message_stop", b"error"})
    CONTENT = (b"content_block_delta",)

    def __init__(self) -> None:
        super().__init__()
        self._tally = _Usage()

    def _read(self, data: bytes) -> None:
        try:
            view = StreamParser.events_decoder.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return
        if view.type == "message_start" and view.message is not None:
            self.model = view.message.model
            count_into(self._tally, view.message.usage)
        elif view.type == "message_delta":
            count_into(self._tally, view.usage)
            self.usage = usage_of(self._tally)
            self.finished = self.finished or bool(view.delta and view.delta.stop_reason)
        elif view.type == "message_stop":
            self.done = True
            self.usage = usage_of(self._tally)
        elif view.type == "error":
            error = view.error or _Error()
            self.error = failure_of(ERROR_STATUS.get(error.type, 500), error)
        elif view.type == "content_block_delta":  # an event without its `event:` line
            self.content_events += 1


def _json_mode(request: ChatRequest) -> bool:
    fmt = request.decode("response_format", ResponseFormat)
    return fmt is not None and fmt.type in chat.JSON_FORMATS


class Adapter:
    """Anthropic's own API; `body`, `headers` and `url` are what a host of the same wire changes
    (proxy.providers.vertex_anthropic). A caller speaking Messages (`messages` in `caps.dialects`)
    goes through the same hooks, its own body in place of the translated one."""

    def __init__(self, caps: Capabilities | None = None) -> None:
        self.caps = caps or Capabilities(default_url="https://api.anthropic.com/v1", passthrough=False,
                                         dialects=frozenset({"messages"}))

    def body(self, request: ChatRequest) -> dict:
        if speaks(self.caps, request):  # the caller's body as it came, model swapped
            return {**request.native.fields, "model": request.model}
        return to_anthropic_request(chat.read_params(request, multiple_choices=False), request.model, request.stream)

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"anthropic-version": VERSION, **target.headers, "Content-Type": "application/json"}
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return headers

    def url(self, target: Target, request: ChatRequest) -> str:
        url = (target.url or self.caps.default_url or "").rstrip("/")
        if url.count("/") == 2:  # a bare host: the API lives under /v1
            url += "/v1"
        if speaks(self.caps, request) and request.native.operation:  # a sub-endpoint: count_tokens
            return url + "/messages/" + request.native.operation
        return url + "/messages"

    def build_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        native = speaks(self.caps, request)
        if not native and request.kind != "chat":
            raise InvalidRequest("this provider serves chat completions only", code="unsupported_endpoint")
        body = msgspec.json.encode(self.body(request))
        headers = self.headers(target)
        if native:  # the caller's anthropic-version/-beta win over the gateway's defaults
            headers.update(request.native.headers)
        if request.stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamRequest("POST", self.url(target, request), headers, body, request.stream)

    def parse_response(self, request: ChatRequest, body: bytes) -> Parsed:
        message = _message.decode(body)
        if speaks(self.caps, request):  # relayed as it came; `count_tokens` answers are not usage
            usage = usage_of(message.usage) if message.usage is not None and not request.native.operation else None
            return Parsed(body=body, usage=usage, model=message.model)
        usage = usage_of(message.usage) if message.usage is not None else None
        answer = from_anthropic_response(message, _json_mode(request))
        body = chat.completion(message.id or chat.new_id(), message.model or request.model, [answer], usage)
        return Parsed(body=body, usage=usage, model=message.model)

    def stream_parser(self, request: ChatRequest) -> StreamParser | NativeParser:
        if speaks(self.caps, request):
            return NativeParser()
        return StreamParser(request.model, request.wants_usage, _json_mode(request))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        retry_after = base.retry_after_seconds(headers.get("Retry-After"))
        try:
            error = _error_body.decode(body).error
        except (msgspec.DecodeError, RecursionError):
            error = _Error(type="", message=f"the provider answered HTTP {status} with a body that is not "
                                            f"an Anthropic error ({len(body)} bytes)")
        return failure_of(status, error, retry_after)
