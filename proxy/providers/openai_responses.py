"""OpenAI's Responses API as an upstream wire, for callers that speak it themselves.

A request in the `responses` dialect (proxy/dialects/) goes to a provider declaring it as it
came, model swapped; the answer and the events come back untouched. This module reads what the
gateway needs off them: usage (`input_tokens`, cached, `output_tokens`, reasoning), the model,
the end of the stream, and failures. Delta events are counted by the `event:` line, never decoded.
"""

from __future__ import annotations

import msgspec

from proxy.providers.base import RelayParser, UpstreamFailure, Usage, kind_of_status


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0


class _Usage(msgspec.Struct):
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    total_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None

    def usage(self) -> Usage:
        prompt, completion = self.input_tokens or 0, self.output_tokens or 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion,
                     total_tokens=self.total_tokens or prompt + completion,
                     cached_tokens=(self.input_tokens_details and self.input_tokens_details.cached_tokens) or 0,
                     reasoning_tokens=(self.output_tokens_details and self.output_tokens_details.reasoning_tokens) or 0)


class _Error(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _Response(msgspec.Struct):
    model: str | None = None
    usage: _Usage | None = None
    error: _Error | None = None


class _Event(msgspec.Struct):
    type: str = ""
    response: _Response | None = None
    code: str | None = None  # an `error` event's
    message: str | None = None


response_decoder = msgspec.json.Decoder(_Response)
_event = msgspec.json.Decoder(_Event)
_TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})
_READ = _TERMINAL | {b"response.created", b"error"}


def parse(body: bytes) -> tuple[Usage | None, str | None]:
    """Usage and model of a Responses answer body."""
    view = response_decoder.decode(body)
    return (view.usage.usage() if view.usage is not None else None), view.model


def _failure(code: str | None, message: str | None) -> UpstreamFailure:
    status = 429 if code == "rate_limit_exceeded" else 500
    return UpstreamFailure(status=status, message=message or "the provider's response failed",
                           kind=kind_of_status(status), code=code)


class NativeParser(RelayParser):
    """Responses events relayed as they came; usage, model, the end and failures read off them."""

    __slots__ = ()
    READ = _READ
    CONTENT = (b".delta",)

    def _read(self, data: bytes) -> None:
        try:
            view = _event.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return
        response = view.response
        if response is not None and response.model:
            self.model = response.model
        if view.type.endswith(".delta"):
            self.content_events += 1
        elif view.type == "error":
            self.error = _failure(view.code, view.message)
        elif view.type.encode() in _TERMINAL:
            self.done = self.finished = True
            if response is not None and response.usage is not None:
                self.usage = response.usage.usage()
            if view.type == "response.failed":
                failed = (response and response.error) or _Error()
                self.error = _failure(failed.code, failed.message)
