"""OpenAI's wire: the adapter every OpenAI-compatible provider is a small delta of.

Bodies and SSE bytes pass through untouched. The stream parser works per upstream read, not
per event: a read goes on whole (cut at its last complete event), its data lines are counted
with one `bytes.count`, and only the events that a byte search finds carrying usage, a finish
reason or an error are decoded; plain content chunks are counted, never decoded.
A caller speaking the Responses API (the `responses` dialect) is passed through to `…/responses`
when the adapter declares it (OpenAI and Azure, not the OpenAI-wire family, whose servers may not
have that endpoint): see `openai_responses`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from proxy.providers import openai_responses
from proxy.providers.base import (
    Capabilities,
    ChatRequest,
    Parsed,
    Target,
    UpstreamFailure,
    UpstreamRequest,
    Usage,
    kind_of_status,
    retry_after_seconds,
    speaks,
)
from proxy.streaming.sse import Framer

# A key whose value is not null (JSON `null` starts with n): only such events are decoded.
_NOTABLE = re.compile(rb'"(?:usage|finish_reason|error)"\s*:\s*[^n\s]')
_DONE = b"[DONE]"
# The same keys as `bytes.find` needles, in the two spacings JSON encoders write. A finish reason
# that is set is a string and usage that is set an object; an error may be either, so what
# follows `"error":` is looked at (`null` is skipped). A key can match only as a key: inside a
# JSON string every quote is escaped.
_COMPACT = (b'"finish_reason":"', b'"usage":{', b'"error":')
_SPACED = (b'"finish_reason": "', b'"usage": {', b'"error": ')


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0


class _UsageView(msgspec.Struct):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    total_tokens: int | None = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None

    def usage(self) -> Usage:
        prompt, completion = self.prompt_tokens or 0, self.completion_tokens or 0
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=self.total_tokens or prompt + completion,
            cached_tokens=(self.prompt_tokens_details and self.prompt_tokens_details.cached_tokens) or 0,
            reasoning_tokens=(self.completion_tokens_details
                              and self.completion_tokens_details.reasoning_tokens) or 0,
        )


class _ErrorView(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _ChoiceView(msgspec.Struct):
    finish_reason: str | None = None


class _ChunkView(msgspec.Struct):
    model: str | None = None
    choices: list[_ChoiceView] = []
    usage: _UsageView | None = None
    error: _ErrorView | str | None = None


class _ResponseView(msgspec.Struct):
    model: str | None = None
    usage: _UsageView | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorView | str | None = None


_chunk = msgspec.json.Decoder(_ChunkView)
_response = msgspec.json.Decoder(_ResponseView)
_error_body = msgspec.json.Decoder(_ErrorBody)


def failure_from(status: int, view: _ErrorView | str | None, retry_after: float | None = None,
                 fallback: str = "") -> UpstreamFailure:
    if isinstance(view, str):
        view = _ErrorView(message=view)
    view = view or _ErrorView()
    code = None if view.code is None else str(view.code)
    return UpstreamFailure(status=status, message=view.message or fallback, kind=kind_of_status(status),
                           retry_after=retry_after, code=code, type=view.type)


def summarise(status: int, body: bytes) -> str:
    """A non-JSON body is described, never reflected."""
    return f"the provider answered HTTP {status} with a body that is not an OpenAI error ({len(body)} bytes)"


class PassthroughParser:
    """Relays OpenAI SSE bytes as they are; drops the usage-only chunk the caller did not ask for.

    Its Python work is per read, not per event: the framer cuts the read at its last complete
    event, the events that matter (a finish reason, usage, an error: a key whose value is not
    null) are found with `bytes.find` and only they are decoded, and data lines are counted with
    one `bytes.count` while the provider's usage is unknown (an abort's estimate counts them;
    from the read that brings the usage on, `events` and `content_events` stop counting). The
    read goes back whole unless the usage chunk is cut out of it. A translated dialect request
    (proxy.dialects) gets this parser too: the dialect's stream decodes each event of what it
    relays, so no per-event decoding is added here.
    """

    __slots__ = ("_framer", "_keys", "_drop_usage", "_drop_lf", "usage", "model", "events", "content_events",
                 "done", "finished", "error", "invalid")

    def __init__(self, drop_usage_chunk: bool) -> None:
        self._framer = Framer()
        self._keys: tuple[bytes, ...] | None = None  # the notable keys as this stream spaces its JSON
        self._drop_usage = drop_usage_chunk
        self._drop_lf = False  # the event dropped last ended in a CR: the LF of its CRLF goes too
        self.usage: Usage | None = None
        self.model: str | None = None
        self.events = 0
        self.content_events = 0
        self.done = False
        self.finished = False
        self.error: UpstreamFailure | None = None
        self.invalid = 0

    def feed(self, chunk: bytes) -> bytes:
        framer = self._framer
        region = framer.feed(chunk)
        if not region:
            return b""
        if framer.eol is None:
            return self._blocks()
        if self._drop_lf:
            self._drop_lf = False
            if region[:1] == b"\n":
                region = region[1:]
                if not region:
                    return b""
        done = region.find(_DONE, -16) != -1 and _ends_done(region)  # only the tail can end the stream
        if done:
            self.done = True
        keys = self._keys or self._spacing(region)
        spans = _notable(region, keys, framer.sep) if keys is not None else None
        if not spans:  # no notable event: the common read (the count inlined, as _count)
            if self.usage is None:
                data = region.count(b"\ndata:") + region.startswith(b"data:")
                self.events += data
                if data > done:
                    self.content_events += data - done
            return region
        relayed, inspected = self._read_notable(region, spans)
        if self.usage is None or self.error is not None:
            self._count(region, done, inspected)
        else:
            # The provider counted the tokens: nothing will be estimated from this read's content
            # events, so they are not counted (a burst carries a whole stream and its usage in one
            # read, and a count is the one pass over all of it); nor are later reads'.
            self.events += inspected
        return relayed

    def _count(self, region: bytes, done: bool, inspected: int) -> None:
        """Count the read's data events, for an abort's estimate; `_inspect` counted the content
        of the `inspected` ones."""
        data = region.count(b"\ndata:") + region.startswith(b"data:")
        self.events += data
        data -= done + inspected
        if data > 0:
            self.content_events += data

    def _read_notable(self, region: bytes, spans: list[tuple[int, int]]) -> tuple[bytes, int]:
        """Decode the notable events; the read without the ones dropped, and how many were decoded."""
        dropped, inspected = [], 0
        for span in spans:
            for event in self._framer.events(region[span[0]:span[1]]):
                inspected += 1
                if not self._inspect(event):
                    dropped.append(span)
        if not dropped:
            return region, inspected
        self._drop_lf = dropped[-1][1] == len(region) and region[-1:] == b"\r"
        return _without(region, dropped), inspected

    def _spacing(self, region: bytes) -> tuple[bytes, ...] | None:
        """The keys to look for, spaced as this stream's encoder spaces them (`"key":` or `"key": `)."""
        colon = region.find(b'":')
        if colon != -1:
            self._keys = _SPACED if region[colon + 2:colon + 3] == b" " else _COMPACT
        return self._keys

    def _blocks(self) -> bytes:
        """The full decoder's blocks, one at a time: a stream framed unlike any provider's."""
        out = []
        for block in self._framer.blocks():
            data = block.data
            if data is not None:
                self.events += 1
                if data == _DONE:
                    self.done = True
                elif _NOTABLE.search(data):
                    if not self._inspect(data):
                        continue
                else:
                    self.content_events += 1
            out.append(block.raw)
        return b"".join(out)

    def _inspect(self, data: bytes) -> bool:
        """Read usage, finish and errors off an event; False when it must not be relayed."""
        try:
            view = _chunk.decode(data)
        except (msgspec.DecodeError, RecursionError):
            self.invalid += 1
            return True
        if view.model and self.model is None:
            self.model = view.model
        if view.error is not None:
            self.error = failure_from(500, view.error, fallback="the provider sent an error event")
            self.error.kind = "server"
            return True
        if view.choices:
            self.content_events += 1
            if any(c.finish_reason for c in view.choices):
                self.finished = True
        if view.usage is not None:
            self.usage = view.usage.usage()
            if not view.choices and self._drop_usage:
                return False
        return True

    def close(self) -> bytes:
        return b""


def _ends_done(region: bytes) -> bool:
    """The last event of the region is `[DONE]` (the terminal event: nothing follows it)."""
    at = region.rfind(b"data:")
    if at == -1 or at and region[at - 1] not in b"\r\n":
        return False
    value = region[at + 5:].rstrip(b"\r\n")
    return (value[1:] if value[:1] == b" " else value) == _DONE


def _notable(region: bytes, keys: tuple[bytes, bytes, bytes], sep: bytes) -> list[tuple[int, int]] | None:
    """Where the read's last finish reason, last usage and last error events start and end.

    Searched from the end: a stream's finish, usage and error come at its end, and the last of
    each is the one that counts (usage is cumulative; one finish or error is enough), so in a
    read holding a whole stream each search stops within its last events. An error is looked
    for after the last finish reason only: one before it did not end the stream.
    """
    finish_key, usage_key, error_key = keys
    spans = []
    finish = region.rfind(finish_key)
    if finish != -1:
        spans.append(_span(region, finish, sep))
    usage = region.rfind(usage_key)
    if usage != -1:
        spans.append(_span(region, usage, sep))
    low = spans[0][0] if finish != -1 else 0
    error = region.rfind(error_key, low)
    while error != -1 and region[error + len(error_key):error + len(error_key) + 1] == b"n":  # `"error": null`
        error = region.rfind(error_key, low, error)
    if error != -1:
        spans.append(_span(region, error, sep))
    if len(spans) > 1:
        spans = sorted(set(spans))
    return spans


def _span(region: bytes, at: int, sep: bytes) -> tuple[int, int]:
    """The event around offset `at`: from after the blank line before it to its own blank line."""
    start, end = region.rfind(sep, 0, at), region.find(sep, at)
    start = 0 if start == -1 else start + len(sep)
    while region[start] in b"\r\n":  # blank lines before it (or the LF of the last read's CRLF) are not its own
        start += 1
    # The last event of a CRLF read may end in the CR of its blank line, the LF in the next read.
    return start, len(region) if end == -1 else end + len(sep)


def _without(region: bytes, spans: list[tuple[int, int]]) -> bytes:
    # Views, not slices: the join is the one copy (a burst's read is a whole stream, ~20 KB).
    view, parts, at = memoryview(region), [], 0
    for start, end in spans:
        parts.append(view[at:start])
        at = end
    parts.append(view[at:])
    return b"".join(parts)


class Adapter:
    """OpenAI itself; the OpenAI-wire family instantiates it with other capabilities."""

    path = "/chat/completions"
    embeddings_path = "/embeddings"

    def __init__(self, caps: Capabilities | None = None, *, stream_usage_option: bool = True,
                 default_path: str = "") -> None:
        self.caps = caps or Capabilities(default_url="https://api.openai.com/v1", embeddings=True, reasoning=True,
                                         dialects=frozenset({"responses"}))
        self.stream_usage_option = stream_usage_option
        self.default_path = default_path  # appended to a bare host URL (e.g. "/v1")

    def base_url(self, target: Target) -> str:
        url = (target.url or self.caps.default_url or "").rstrip("/")
        if self.default_path and url.count("/") == 2:  # scheme://host[:port] with no path
            url += self.default_path
        return url

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def url(self, target: Target, request: ChatRequest) -> str:
        path = self.embeddings_path if request.kind == "embeddings" else self.path
        return self.base_url(target) + path

    def responses_url(self, target: Target) -> str:
        return self.base_url(target) + "/responses"

    def build_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        headers = {**target.headers, "Content-Type": "application/json", **self.auth_headers(target)}
        if request.stream:
            headers["Accept"] = "text/event-stream"
        if speaks(self.caps, request):  # the caller's Responses body as it came, model swapped
            body = msgspec.json.encode({**request.native.fields, "model": request.model})
            return UpstreamRequest("POST", self.responses_url(target), headers, body, request.stream)
        body = request.openai_body(request.model, ask_usage=self.stream_usage_option)
        return UpstreamRequest("POST", self.url(target, request), headers, body, request.stream)

    def parse_response(self, request: ChatRequest, body: bytes) -> Parsed:
        if request is not None and speaks(self.caps, request):
            usage, model = openai_responses.parse(body)
            return Parsed(body=body, usage=usage, model=model)
        view = _response.decode(body)
        return Parsed(body=body, usage=view.usage.usage() if view.usage else None, model=view.model)

    def stream_parser(self, request: ChatRequest) -> PassthroughParser | openai_responses.NativeParser:
        if speaks(self.caps, request):
            return openai_responses.NativeParser()
        return PassthroughParser(drop_usage_chunk=not request.wants_usage)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        try:
            view = _error_body.decode(body).error
        except (msgspec.DecodeError, RecursionError):
            view = None
        if view is None:
            return failure_from(status, None, retry_after, summarise(status, body))
        return failure_from(status, view, retry_after, f"the provider answered HTTP {status}")
