"""OpenAI's chat shapes for the adapters that translate (Anthropic, Gemini): requests in, answers out.

In: `read_params` decodes the caller's whole request once into typed views (a shape the
translation cannot carry is a 400 naming the field). Out: `completion` writes a
`chat.completion` body and `ChunkWriter` writes `chat.completion.chunk` SSE events that share
one id, model and creation time. Passthrough (OpenAI-wire) adapters never use this module.
"""

from __future__ import annotations

import os
import time

import msgspec
import orjson

from proxy.errors import InvalidRequest
from proxy.providers.base import ChatRequest, UpstreamFailure, Usage
from proxy.streaming.sse import Framer

DONE = b"data: [DONE]\n\n"
JSON_FORMATS = frozenset({"json_object", "json_schema"})


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageURL


class Function(msgspec.Struct):
    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct):
    id: str
    function: Function
    type: str = "function"
    extra_content: dict | None = None  # provider state a client echoes back (Gemini's thought signature)

    def extra(self, vendor: str, key: str) -> str | None:
        """A string the client echoed back in `extra_content[vendor][key]`, if any."""
        found = (self.extra_content or {}).get(vendor)
        value = found.get(key) if isinstance(found, dict) else None
        return value if isinstance(value, str) and value else None


class Message(msgspec.Struct):
    role: str
    content: str | list[TextPart | ImagePart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()  # JSON Schema, forwarded untouched (see `present`)


class Tool(msgspec.Struct):
    function: FunctionDef
    type: str = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedChoice(msgspec.Struct):
    function: NamedFunction
    type: str = "function"


class JsonSchema(msgspec.Struct):
    name: str = "response"
    schema: msgspec.Raw = msgspec.Raw()
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str = "text"
    json_schema: JsonSchema | None = None


class ChatParams(msgspec.Struct):
    """The OpenAI request fields a translation reads; anything else is dropped."""

    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    user: str | None = None
    audio: msgspec.Raw = msgspec.Raw()

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or ())

    @property
    def json_mode(self) -> bool:
        return self.response_format is not None and self.response_format.type in JSON_FORMATS


_params = msgspec.json.Decoder(ChatParams)
_object = msgspec.json.Decoder(dict)


def read_params(request: ChatRequest, *, multiple_choices: bool) -> ChatParams:
    """Decode the whole request once; refuse what no translation can honour."""
    try:
        params = _params.decode(msgspec.json.encode(request.fields))
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"the request cannot be translated for this provider: {exc}") from None
    except (UnicodeDecodeError, msgspec.DecodeError):  # the subtrees `request.parse` skipped were never checked (a crafted body)
        raise InvalidRequest("the request body is not valid UTF-8") from None
    if params.n is not None and params.n > 1 and not multiple_choices:
        raise InvalidRequest("this provider returns one choice per request; 'n' must be 1", param="n")
    if params.logprobs:
        raise InvalidRequest("this provider does not return log probabilities", param="logprobs")
    if present(params.audio) is not None:
        raise InvalidRequest("this provider does not produce audio", param="audio")
    return params


def present(raw: msgspec.Raw) -> msgspec.Raw | None:
    """A forwarded subtree, or None when it was absent or null (msgspec.Raw cannot be in a union)."""
    return raw if raw and bytes(raw) != b"null" else None


def texts(message: Message, index: int) -> list[str]:
    """The text parts of a message; an image where only text is allowed is a 400."""
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for part in content:
        if not isinstance(part, TextPart):
            raise InvalidRequest(f"messages[{index}] ({message.role}) may only hold text",
                                 param=f"messages[{index}].content")
        out.append(part.text)
    return out


def parts(message: Message) -> list[TextPart | ImagePart]:
    content = message.content
    if content is None:
        return []
    return [TextPart(content)] if isinstance(content, str) else content


def image_source(part: ImagePart, index: int) -> tuple[str, str, str]:
    """("base64", media type, data) for a data URL, ("url", "", url) for an http(s) URL."""
    url = part.image_url.url
    if url.startswith("data:"):
        head, comma, data = url[5:].partition(",")
        fields = head.split(";")
        if comma and fields[0] and fields[-1] == "base64":
            return "base64", fields[0], data
    elif url.startswith(("https://", "http://")):
        return "url", "", url
    raise InvalidRequest(f"messages[{index}]: an image must be an http(s) URL or a base64 data URL "
                         "(data:<type>;base64,<data>)", param=f"messages[{index}].content")


def arguments(call: ToolCall, index: int) -> dict:
    """A tool call's arguments as the JSON object the providers want."""
    if not call.function.arguments.strip():
        return {}
    try:
        return _object.decode(call.function.arguments)
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest(f"messages[{index}].tool_calls: arguments of {call.function.name!r} are not "
                             "a JSON object", param=f"messages[{index}].tool_calls") from None


def new_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def usage_json(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def tool_call(ident: str, name: str, args: str, extra: dict | None = None) -> dict:
    call = {"id": ident, "type": "function", "function": {"name": name, "arguments": args}}
    if extra:
        call["extra_content"] = extra
    return call


def choice(index: int, text: str, calls: list[dict], finish: str) -> dict:
    message = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def completion(ident: str, model: str, choices: list[dict], usage: Usage | None) -> bytes:
    return orjson.dumps({"id": ident, "object": "chat.completion", "created": int(time.time()),
                         "model": model, "choices": choices,
                         "usage": usage_json(usage) if usage is not None else None})


def error_event(failure: UpstreamFailure) -> bytes:
    error = {"message": failure.message, "type": failure.type or "upstream_error", "param": None,
             "code": failure.code}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


class ChunkWriter:
    """`chat.completion.chunk` SSE events that share one id, model and creation time."""

    __slots__ = ("_head",)

    def __init__(self, ident: str, model: str) -> None:
        self._head = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                      "model": model}

    def _event(self, choices: list[dict], usage: Usage | None = None) -> bytes:
        event = {**self._head, "choices": choices}
        if usage is not None:
            event["usage"] = usage_json(usage)
        return b"data: " + orjson.dumps(event) + b"\n\n"

    def delta(self, delta: dict, index: int = 0) -> bytes:
        return self._event([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])

    def content(self, text: str, index: int = 0) -> bytes:
        return self.delta({"content": text}, index)

    def tool(self, position: int, args: str, head: dict | None = None, index: int = 0) -> bytes:
        """A tool-call delta, as OpenAI streams them: the first for a call is its `head` (a `tool_call`
        with id, type and name); later ones carry pieces of its arguments only."""
        call = {"index": position, **head} if head else {"index": position, "function": {"arguments": args}}
        return self.delta({"tool_calls": [call]}, index)

    def finish(self, reason: str, index: int = 0) -> bytes:
        return self._event([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def usage(self, usage: Usage) -> bytes:
        return self._event([], usage)


class TranslatingParser:
    """The StreamParser skeleton the translators share: SSE events in, one decoded view at a time.

    A subclass sets `events_decoder` (a msgspec Decoder of its provider's event view) and
    implements `on_event(view) -> bytes`. Events that do not decode are counted and skipped.
    """

    events_decoder: msgspec.json.Decoder

    def __init__(self, model: str, wants_usage: bool) -> None:
        self._sse = Framer()
        self._writer: ChunkWriter | None = None
        self.fallback_model = model
        self.wants_usage = wants_usage
        self.usage: Usage | None = None
        self.model: str | None = None
        self.events = self.content_events = self.invalid = 0
        self.done = self.finished = False
        self.error: UpstreamFailure | None = None

    def feed(self, chunk: bytes) -> bytes:
        region = self._sse.feed(chunk)
        if not region:
            return b""
        out = []
        for data in self._sse.events(region):
            self.events += 1
            try:
                view = self.events_decoder.decode(data)
            except (msgspec.DecodeError, RecursionError):
                self.invalid += 1
                continue
            data = self.on_event(view)
            if data:
                out.append(data)
        return b"".join(out)

    def on_event(self, view) -> bytes:
        raise NotImplementedError

    def close(self) -> bytes:
        return b""

    def start(self, ident: str | None, model: str | None) -> ChunkWriter:
        self.model = model
        self._writer = ChunkWriter(ident or new_id(), model or self.fallback_model)
        return self._writer

    @property
    def out(self) -> ChunkWriter:
        return self._writer or self.start(None, None)

    def text(self, text: str, index: int = 0) -> bytes:
        if not text:
            return b""
        self.content_events += 1
        return self.out.content(text, index)

    def fail(self, failure: UpstreamFailure) -> bytes:
        self.error = failure
        return error_event(failure)

    def end(self) -> bytes:
        """The usage chunk when the caller asked for it, then `[DONE]`."""
        self.done = True
        if self.wants_usage and self.usage is not None:
            return self.out.usage(self.usage) + DONE
        return DONE
