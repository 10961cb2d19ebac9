"""What every inbound dialect implements, and the pieces they share (see `proxy.dialects`).

The gateway's internal request and answer are OpenAI chat completions. A dialect turns its
caller's body into a chat request (`ChatRequest`, with the body kept in `request.native` for a
passthrough), and the chat answer, or the stream of chat chunks, back into its own wire. The
chunks reach its `StreamTranslator` already decoded (`Chunk`, a view of the fields a
translation reads), one at a time, through `DialectStream`, which sits where the relay expects
the adapter's stream parser. `DialectStream` frames and decodes every event of the chat SSE the
adapter's parser relays, whatever that parser decodes for itself: OpenAI's wire relays whole
reads and decodes only the finish, usage and error events it needs, so plain chat streams pay
nothing per event and a translated stream still gets each chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from proxy.config.catalog import reasoning_model
from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.providers.base import ChatRequest, ParserStep, StreamParser, speaks
from proxy.streaming.sse import Decoder


# -- the OpenAI chat chunk, as a translation reads it ------------------------------------------
class FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # the reasoning text of the wires that stream it
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class Choice(msgspec.Struct):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class ChatUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None

    @property
    def cached(self) -> int:
        return (self.prompt_tokens_details and self.prompt_tokens_details.cached_tokens) or 0

    @property
    def reasoning(self) -> int:
        return (self.completion_tokens_details and self.completion_tokens_details.reasoning_tokens) or 0


class ErrorView(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class Chunk(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[Choice] = []
    usage: ChatUsage | None = None
    error: ErrorView | str | None = None


# -- the OpenAI chat answer, as a translation reads it -----------------------------------------
class FunctionCall(msgspec.Struct, frozen=True):
    name: str = ""
    arguments: str = ""


class ToolCall(msgspec.Struct):
    id: str = ""
    function: FunctionCall = FunctionCall()


class AnswerMessage(msgspec.Struct, frozen=True):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None


class AnswerChoice(msgspec.Struct):
    message: AnswerMessage = AnswerMessage()
    finish_reason: str | None = None


class Completion(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[AnswerChoice] = []
    usage: ChatUsage | None = None


chunk_decoder = msgspec.json.Decoder(Chunk)
completion_decoder = msgspec.json.Decoder(Completion)
_DONE = b"[DONE]"


# -- the interface --------------------------------------------------------------------------------
class StreamTranslator(Protocol):
    """Per request: chat chunks in, the dialect's frames out, incrementally."""

    def feed(self, chunk: Chunk) -> bytes:
        """The frames one chat chunk makes (often none: a tool call's head waits for its name)."""

    def close(self, error: ProxyError | None) -> bytes:
        """The end of the stream: its closing frames, or, given an error, the dialect's error frame."""


class ChunkWalk:
    """The walk over a chat chunk both translated streams share: the first chunk starts the
    stream, usage is kept for the end, the first choice's delta is handed to `_take` and its
    finish closes what waits. Subclasses write `_start`, `_take` and `_on_finish`."""

    _started = False
    _finish: str | None = None
    _usage: ChatUsage | None = None

    def feed(self, chunk: Chunk) -> bytes:
        out = [] if self._started else [self._start(chunk)]
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices:
            if choice.index:
                continue  # both dialects answer with one choice: chat's others (n > 1) have no place
            delta = choice.delta
            if delta is not None:
                self._take(delta, out)
            if choice.finish_reason:
                self._finish = choice.finish_reason
                out.append(self._on_finish())
        return b"".join(out)

    def _start(self, chunk: Chunk) -> bytes:
        raise NotImplementedError

    def _take(self, delta: Delta, out: list[bytes]) -> None:
        """Append the frames one delta makes to `out`."""
        raise NotImplementedError

    def _on_finish(self) -> bytes:
        raise NotImplementedError


class Dialect(Protocol):
    name: str  # the record's `endpoint`, the metrics' route, and what adapters list in `Capabilities.dialects`
    id_header: str  # the response header carrying the request id the dialect's clients read

    def request(self, body: bytes, headers: Mapping[str, str]) -> tuple[object, object]:
        """(ChatRequest with `native` set, context for the answer); a 400 naming the field."""

    def answer(self, body: bytes, context) -> bytes:
        """A chat completion body → the dialect's answer body."""

    def stream(self, context) -> StreamTranslator: ...

    def error_body(self, error: ProxyError) -> bytes:
        """Any gateway error (its status kept) in the dialect's error shape."""


class Context:
    """What a dialect learns from a request that its answer needs; dialects subclass it.

    `refusal`: the body holds what only the dialect's own wire can carry (a server tool): the
    request may go to providers that speak the dialect natively, and to no other (`fit`).
    `reasoning`: the chat request carries `reasoning_effort`, which only providers declaring
    `Capabilities.reasoning` take; it is dropped when any other may serve the request.
    """

    refusal: InvalidRequest | None = None
    reasoning: bool = False
    prompt_estimate: int = 0


def fit(request: ChatRequest, context: Context, routes: list) -> list:
    """The routes this request can take, given what its translation cannot carry."""
    if context.refusal is not None:
        routes = [route for route in routes if speaks(route.provider.adapter.caps, request)]
        if not routes:
            raise context.refusal
    if context.reasoning and not all(_takes_effort(route, request) for route in routes):
        request.fields.pop("reasoning_effort", None)
    return routes


def _takes_effort(route, request) -> bool:
    """The route's provider takes `reasoning_effort` for its model: a provider declaring it, for a
    model the catalog marks as reasoning (gpt-4o and its kind refuse the field with a 400), or one
    that is passed the caller's own request."""
    caps = route.provider.adapter.caps
    return speaks(caps, request) or (caps.reasoning and reasoning_model(route.model))


def passthrough(request: ChatRequest, route) -> bool:
    """This route's provider speaks the request's dialect: its answer is in that wire already."""
    return speaks(route.provider.adapter.caps, request)


def answer(opened, request, dialect: Dialect, context: Context) -> bytes:
    """The dialect's answer body: the provider's own when it spoke the dialect, else translated."""
    if passthrough(request, opened.route):
        return opened.parsed.body
    return dialect.answer(opened.parsed.body, context)


def adopt_stream(opened, request, dialect: Dialect, context: Context, request_id: str) -> None:
    """Put the dialect between the adapter's stream parser and the relay (`opened.first` too)."""
    native = passthrough(request, opened.route)
    headers = {dialect.id_header: request_id}
    stream = opened.parser = DialectStream(opened.parser, dialect.stream(context), native, headers)
    if not native:
        opened.first = stream.translate(opened.first)


class DialectStream(ParserStep):
    """Where the relay expects the adapter's stream parser: the adapter's parser does the
    upstream's wire, its chat SSE out is decoded here and translated by the dialect.

    Passthrough (`passthrough=True`): the adapter's parser output goes out
    as it is; only the dialect's error frame and headers are added. Attributes the relay reads
    (usage, done, finished, …) are the adapter's parser's.
    """

    __slots__ = ("_translator", "_passthrough", "_sse", "ended", "headers")

    def __init__(self, inner: StreamParser, translator: StreamTranslator, passthrough: bool,
                 headers: dict[str, str]) -> None:
        super().__init__(inner)
        self._translator = translator
        self._passthrough = passthrough
        self._sse = Decoder()
        self.ended = False
        self.headers = headers  # the relay adds them to the stream's answer

    def feed(self, chunk: bytes) -> bytes:
        data = self._inner.feed(chunk)
        return data if self._passthrough else self.translate(data)

    def translate(self, data: bytes) -> bytes:
        """Chat SSE bytes (what the adapter's parser wrote) → the dialect's frames."""
        if not data or self.ended:
            return b""
        out = []
        for block in self._sse.feed(data):
            payload = block.data
            if payload is None:
                continue
            if payload == _DONE:
                out.append(self._end())
                break
            try:
                chunk = chunk_decoder.decode(payload)
            except (msgspec.DecodeError, RecursionError):
                continue  # not a chat chunk: nothing a client of another wire could use
            if chunk.error is not None:
                out.append(self.error_frame(_failure(chunk.error)))
                break
            out.append(self._translator.feed(chunk))
        return b"".join(out)

    def close(self) -> bytes:
        tail = self._inner.close()
        if self._passthrough:
            return tail
        out = self.translate(tail)
        if not self.ended and (self._inner.done or self._inner.finished):  # a stream cut short is left to the relay
            out += self._end()
        return out

    def _end(self) -> bytes:
        self.ended = True
        return self._translator.close(None)

    def error_frame(self, error: ProxyError) -> bytes:
        """The stream's last frame when it fails after its first byte (once, whoever asks first)."""
        if self.ended or (self._passthrough and self._inner.error is not None):  # the provider's own said it
            return b""
        self.ended = True
        return self._translator.close(error)


class Replayed:
    """A cached chat answer (proxy.pipeline.cache) served to a dialect's caller, translated as a live one is."""

    __slots__ = ("_dialect", "_context", "headers")

    def __init__(self, dialect: Dialect, context: Context, request_id: str) -> None:
        self._dialect = dialect
        self._context = context
        self.headers = {dialect.id_header: request_id}

    def answer(self, body: bytes) -> bytes:
        return self._dialect.answer(body, self._context)

    def stream(self, chat_events: bytes) -> bytes:
        """A whole replayed chat stream (ending in `[DONE]`) → the dialect's frames."""
        return DialectStream(None, self._dialect.stream(self._context), False, {}).translate(chat_events)


def replayed(dialect: Dialect | None, context: Context | None, request_id: str) -> Replayed | None:
    return None if dialect is None else Replayed(dialect, context, request_id)


def _failure(view: ErrorView | str) -> ProxyError:
    if isinstance(view, str):
        return UpstreamError(view)
    error = UpstreamError(view.message or "the provider sent an error event")
    if view.type in ("overloaded_error", "server_is_overloaded"):
        error.status = 529
    return error
