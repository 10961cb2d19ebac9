"""OpenAI's wire: the adapter every OpenAI-compatible provider is a small delta of.

Bodies and SSE bytes pass through untouched. The stream parser looks inside an event only
when a cheap byte scan says it carries usage, a finish reason or an error; plain content
chunks are counted, never decoded. A caller speaking the Responses API (the `responses`
dialect) is passed through to `…/responses` when the adapter declares it (OpenAI and Azure, not
the OpenAI-wire family, whose servers may not have that endpoint): see `openai_responses`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from proxy.providers import openai_responses
from proxy.providers.base import (
    Capabilities,
    Parsed,
    Target,
    UpstreamFailure,
    UpstreamRequest,
    Usage,
    kind_of_status,
    retry_after_seconds,
    speaks,
)
from proxy.streaming.sse import Decoder

# A key whose value is not null (JSON `null` starts with n): only such events are decoded.
_NOTABLE = re.compile(rb'"(?:usage|finish_reason|error)"\s*:\s*[^n\s]')
_DONE = b"[DONE]"


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
    """Relays OpenAI SSE bytes as they are; drops the usage-only chunk the caller did not ask for."""

    __slots__ = ("_decoder", "_drop_usage", "usage", "model", "events", "content_events", "done",
                 "finished", "error", "invalid")

    def __init__(self, drop_usage_chunk: bool) -> None:
        self._decoder = Decoder()
        self._drop_usage = drop_usage_chunk
        self.usage: Usage | None = None
        self.model: str | None = None
        self.events = 0
        self.content_events = 0
        self.done = False
        self.finished = False
        self.error: UpstreamFailure | None = None
        self.invalid = 0

    def feed(self, chunk: bytes) -> bytes:
        blocks = self._decoder.feed(chunk)
        if not blocks:
            return b""
        out = []
        for block in blocks:
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
        return out[0] if len(out) == 1 else b"".join(out)

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

    def url(self, target: Target, request) -> str:
        path = self.embeddings_path if request.kind == "embeddings" else self.path
        return self.base_url(target) + path

    def responses_url(self, target: Target) -> str:
        return self.base_url(target) + "/responses"

    def build_request(self, target: Target, request) -> UpstreamRequest:
        headers = {**target.headers, "Content-Type": "application/json", **self.auth_headers(target)}
        if request.stream:
            headers["Accept"] = "text/event-stream"
        if speaks(self.caps, request):  # the caller's Responses body as it came, model swapped
            body = msgspec.json.encode({**request.native.fields, "model": request.model})
            return UpstreamRequest("POST", self.responses_url(target), headers, body, request.stream)
        body = request.openai_body(request.model, ask_usage=self.stream_usage_option)
        return UpstreamRequest("POST", self.url(target, request), headers, body, request.stream)

    def parse_response(self, request, body: bytes) -> Parsed:
        if request is not None and speaks(self.caps, request):
            usage, model = openai_responses.parse(body)
            return Parsed(body=body, usage=usage, model=model)
        view = _response.decode(body)
        return Parsed(body=body, usage=view.usage.usage() if view.usage else None, model=view.model)

    def stream_parser(self, request) -> PassthroughParser | openai_responses.NativeParser:
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
