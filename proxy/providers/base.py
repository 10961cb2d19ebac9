"""The adapter interface every provider implements, and the records it exchanges.

Adapters are sans-IO: they build the upstream request and parse bytes. They never touch a
session, retry, log or emit telemetry; `proxy.upstream.dispatch` owns the I/O. Surface:

    build_request(target, request) -> UpstreamRequest
    parse_response(request, body) -> Parsed
    stream_parser(request) -> StreamParser          (one per request)
    parse_error(status, headers, body) -> UpstreamFailure
    serve(upstream_request) -> response             (in-process upstreams only: MOCK)

Inbound dialects (proxy/dialects/) reach providers through the same surface: a request whose
`native` names a dialect the adapter declares in `Capabilities.dialects` is passed through in
that dialect (see `speaks`); every other request is a chat request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from proxy.net.http import retry_after_seconds  # noqa: F401  (the adapters' Retry-After)
from proxy.streaming.sse import Decoder


class Capabilities(msgspec.Struct, frozen=True):
    """What a provider type can do, as data, so routing and relay never branch on names."""

    needs_url: bool = False
    default_url: str | None = None
    passthrough: bool = True  # speaks OpenAI's wire: bodies and SSE relay as bytes
    in_process: bool = False  # answers without a network call (MOCK)
    hosted_by_default: bool = False
    chat: bool = True
    embeddings: bool = False
    tools: bool = True
    images: bool = True
    needs_api_version: bool = False
    # A cloud credential the request is signed with after it is built (proxy.providers.credentials):
    # the extra that provides it, always (`extra`) or when no `apiKey` is registered (`keyless_extra`).
    extra: str | None = None
    keyless_extra: str | None = None
    needs_region: bool = False
    # Inbound dialects (proxy/dialects/) this provider speaks natively: such a request is passed
    # through in its own wire (model swapped), its answer and stream relayed as they come.
    dialects: frozenset[str] = frozenset()
    reasoning: bool = False  # takes chat's `reasoning_effort` (a dialect drops it for the others)


class Native(msgspec.Struct):
    """A caller's request in an inbound dialect, kept for a passthrough to a provider speaking it."""

    dialect: str  # matched against `Capabilities.dialects`
    fields: dict[str, msgspec.Raw]  # the caller's body, top-level fields untouched
    headers: dict[str, str] = {}  # the caller's headers the provider's own wire wants (a version)
    operation: str = ""  # a sub-endpoint of the dialect ("count_tokens"); "" for the main one


def speaks(caps: Capabilities, request) -> bool:
    """This request goes to this provider in its own dialect, untranslated."""
    native = request.native
    return native is not None and native.dialect in caps.dialects


class Target(msgspec.Struct, frozen=True):
    """The provider an attempt goes to, with its secrets already decrypted."""

    name: str
    url: str | None
    api_key: str | None
    api_version: str | None = None
    headers: Mapping[str, str] = {}
    region: str | None = None
    credentials: str | None = None


_TRUE_USAGE = msgspec.Raw(b'{"include_usage":true}')


class ChatRequest:
    """An OpenAI chat or embeddings request, decoded just enough to route and record it."""

    __slots__ = ("kind", "fields", "model", "stream", "wants_usage", "tags", "native")

    def __init__(self, kind: str, fields: dict[str, msgspec.Raw], model: str, stream: bool,
                 wants_usage: bool, tags: list[str] | None) -> None:
        self.kind = kind
        self.fields = fields
        self.model = model
        self.stream = stream
        self.wants_usage = wants_usage
        self.tags = tags
        self.native = None  # an inbound dialect's own request (providers.base.Native), for a passthrough

    def decode(self, name: str, type_, default=None):
        """Decode one field fully (for adapters that translate)."""
        raw = self.fields.get(name)
        if raw is None:
            return default
        return msgspec.json.decode(raw, type=type_)

    def openai_body(self, model: str, *, ask_usage: bool) -> bytes:
        """The body for an OpenAI-wire upstream: our own fields out, the served model in."""
        fields = self.fields
        out = {k: v for k, v in fields.items() if k != "tags"}
        out["model"] = model
        if self.stream and ask_usage and not self.wants_usage:
            out["stream_options"] = _TRUE_USAGE
        return msgspec.json.encode(out)


class UpstreamRequest(msgspec.Struct):
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool = False


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False  # counted by the gateway (the provider reported none): the record says so


class Parsed(msgspec.Struct):
    """A non-stream answer in OpenAI's shape, and what the record needs from it."""

    body: bytes
    usage: Usage | None
    model: str | None


class UpstreamFailure(msgspec.Struct):
    """A provider's error answer, classified by status and structured fields."""

    status: int
    message: str
    # auth | rate_limit | overloaded | timeout | server | client | not_found: the client sees its
    # class when no candidate is left (proxy.upstream.dispatch.error_for)
    kind: str
    retry_after: float | None = None
    code: str | None = None
    type: str | None = None


class StreamParser(Protocol):
    """Per-request: turns upstream bytes into OpenAI SSE bytes and tracks usage as they pass."""

    usage: Usage | None
    model: str | None
    events: int  # events seen (content or not)
    content_events: int  # events that carried output; the estimate when usage is missing
    done: bool  # the upstream's terminal marker was seen
    finished: bool  # a finish reason was seen
    error: UpstreamFailure | None  # an error event

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class ParserStep:
    """A stream parser that adds one step to another's output (the response cache's copy, an
    inbound dialect's translation). What the relay and the record read of the stream (usage,
    model, counts, its end, its error) is the inner parser's, named here one by one."""

    __slots__ = ("_inner",)

    def __init__(self, inner: StreamParser) -> None:
        self._inner = inner

    usage = property(lambda self: self._inner.usage)
    model = property(lambda self: self._inner.model)
    events = property(lambda self: self._inner.events)
    content_events = property(lambda self: self._inner.content_events)
    done = property(lambda self: self._inner.done)
    finished = property(lambda self: self._inner.finished)
    error = property(lambda self: self._inner.error)

    def feed(self, chunk: bytes) -> bytes:
        return self._inner.feed(chunk)

    def close(self) -> bytes:
        return self._inner.close()


class RelayParser:
    """A stream in the caller's own dialect, relayed as it came (a passthrough, see `speaks`),
    with what the relay needs read off its events. Events named in `READ`, and any without an
    `event:` line, are decoded by the subclass's `_read`; events whose name ends with one of
    `CONTENT` count as output without being decoded, so the text deltas cost a byte compare."""

    __slots__ = ("_sse", "usage", "model", "events", "content_events", "done", "finished", "error")
    READ: frozenset[bytes] = frozenset()
    CONTENT: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self._sse = Decoder()
        self.usage: Usage | None = None
        self.model: str | None = None
        self.events = self.content_events = 0
        self.done = self.finished = False
        self.error: UpstreamFailure | None = None

    def feed(self, chunk: bytes) -> bytes:
        blocks = self._sse.feed(chunk)
        for block in blocks:
            if block.data is None:
                continue
            self.events += 1
            kind = block.event
            if kind is None or kind in self.READ:  # no `event:` line: the data says what it is
                self._read(block.data)
            elif kind.endswith(self.CONTENT):
                self.content_events += 1
        return blocks[0].raw if len(blocks) == 1 else b"".join(block.raw for block in blocks)

    def _read(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> bytes:
        return b""


class Adapter(Protocol):
    caps: Capabilities

    def build_request(self, target: Target, request: ChatRequest) -> UpstreamRequest: ...

    def parse_response(self, request: ChatRequest, body: bytes) -> Parsed: ...

    def stream_parser(self, request: ChatRequest) -> StreamParser: ...

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure: ...


def kind_of_status(status: int) -> str:
    """The class of an error answer by its HTTP status alone (adapters refine it from the body)."""
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limit"
    if status == 404:
        return "not_found"
    if status == 503:  # Service Unavailable: overloaded or down for a while, worth retrying later
        return "overloaded"
    if status == 504:  # the provider's own gateway timed out
        return "timeout"
    if status >= 500:
        return "server"
    return "client"


def estimate_tokens(size_bytes: int) -> int:
    """About four bytes of English text per token; the estimate when a provider reports none."""
    return max(size_bytes // 4, 1)
