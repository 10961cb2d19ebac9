"""BEDROCK: Amazon Bedrock's Converse and ConverseStream APIs, translated both ways.

URL: `{url or https://bedrock-runtime.{region}.amazonaws.com}/model/{id}/converse` (or
`/converse-stream`); the model id (a foundation id, an inference profile such as `us.…`, or an
ARN) is one percent-encoded path segment. Auth: an `apiKey` (a Bedrock API key) or
`AWS_BEARER_TOKEN_BEDROCK` as a Bearer token; otherwise SigV4 (service `bedrock`) with botocore's
default chain, applied after the body is final (proxy.providers.credentials, cloud).
Request: the turns are Anthropic's translation (proxy.providers.anthropic: system joined,
same-role turns merged, tool ids kept) rewritten as Converse blocks: text, image (base64 only),
toolUse, toolResult; sampling → `inferenceConfig`; tools → `toolConfig`, also whenever the
history holds tool blocks (Bedrock refuses such a history without one).
Answer: `output.message` → the choice; `stopReason` → finish_reason; usage with prompt caching
(prompt = input + cache read + cache write, cached = cache read).
Stream: `application/vnd.amazon.eventstream` frames (botocore's parser, CRCs checked) whose
events map onto OpenAI chunks; an exception frame is the gateway's error event. JSON mode and
URL images are refused; seed, penalties and `user` are dropped.
Embeddings: InvokeModel (`/model/{id}/invoke`) for Titan and Cohere (proxy.providers.bedrock_embeddings).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

import msgspec

from proxy.errors import InvalidRequest
from proxy.providers import anthropic, base
from proxy.providers import chat_shapes as chat
from proxy.providers.base import Capabilities, ChatRequest, Parsed, Target, UpstreamFailure, UpstreamRequest, Usage
from proxy.providers.bedrock_embeddings import from_bedrock_embeddings, to_bedrock_embeddings
from proxy.providers.chat_shapes import ChatParams, NamedChoice
from proxy.providers.gemini_embeddings import read_embedding_params

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
          "model_context_window_exceeded": "length"}
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
# An exception name (an error answer's `x-amzn-ErrorType`, or a stream's exception frame) → the status
# Bedrock's API reference gives it (what a stream's exception frame, which has none, is taken to mean).
ERROR_STATUS = {"ThrottlingException": 429, "ValidationException": 400, "AccessDeniedException": 403,
                "ResourceNotFoundException": 404, "ModelNotReadyException": 429, "ServiceUnavailableException": 503,
                "ModelTimeoutException": 408, "ModelErrorException": 424, "ModelStreamErrorException": 424,
                "InternalServerException": 500, "ServiceQuotaExceededException": 400,
                "UnrecognizedClientException": 403, "ExpiredTokenException": 403}
# Exceptions whose class does not follow from their status: a model still loading (429) is an
# overload, not the account's rate limit; a model timeout (408) is a timeout, not the caller's
# fault; a model's own failure (424) is the provider's; an account quota (400) is a rate limit. All
# of these fail over; the client, when none is left, gets 503 with Retry-After, 504, 502 or 429.
_KINDS = {"ThrottlingException": "rate_limit", "ServiceQuotaExceededException": "rate_limit",
          "ModelNotReadyException": "overloaded", "ServiceUnavailableException": "overloaded",
          "ModelTimeoutException": "timeout", "ModelErrorException": "server", "ModelStreamErrorException": "server",
          **dict.fromkeys(("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
                           "InvalidSignatureException"), "auth")}
_ANY_OBJECT = {"type": "object"}
BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"


# -- request: OpenAI → Bedrock ------------------------------------------------------------------
def to_bedrock_converse(params: ChatParams) -> dict:
    if params.json_mode:
        raise InvalidRequest("JSON mode is not supported by this provider", param="response_format")
    system, turns = anthropic.to_anthropic_messages(params.messages)
    messages = [{"role": turn["role"], "content": [to_bedrock_block(block) for block in turn["content"]]}
                for turn in turns]
    body: dict = {"messages": messages}
    if system:
        body["system"] = [{"text": system}]
    config = {name: value for name, value in (("maxTokens", params.output_limit), ("temperature", params.temperature),
                                              ("topP", params.top_p)) if value is not None}
    if params.stops:
        config["stopSequences"] = params.stops
    if config:
        body["inferenceConfig"] = config
    tools = to_bedrock_tools(params, messages)
    if tools:
        body["toolConfig"] = tools
    return body


def to_bedrock_block(block: dict) -> dict:
    """One Anthropic content block as the Converse block it stands for."""
    kind = block["type"]
    if kind == "text":
        return {"text": block["text"]}
    if kind == "tool_use":
        return {"toolUse": {"toolUseId": block["id"], "name": block["name"], "input": block["input"]}}
    if kind == "tool_result":
        return {"toolResult": {"toolUseId": block["tool_use_id"], "content": [{"text": block["content"]}]}}
    source = block["source"]
    image_format = _FORMATS.get(source.get("media_type", ""))
    if source["type"] != "base64" or image_format is None:
        raise InvalidRequest("this provider takes images as base64 data URLs of PNG, JPEG, GIF or WebP",
                             param="messages")
    return {"image": {"format": image_format, "source": {"bytes": source["data"]}}}


def to_bedrock_tools(params: ChatParams, messages: list[dict]) -> dict | None:
    specs = [{"toolSpec": {"name": tool.function.name,
                           **({"description": tool.function.description} if tool.function.description else {}),
                           "inputSchema": {"json": chat.present(tool.function.parameters) or _ANY_OBJECT}}}
             for tool in params.tools or ()]
    if not specs:
        used = {block["toolUse"]["name"] for message in messages for block in message["content"] if "toolUse" in block}
        if not used and not any("toolResult" in b for m in messages for b in m["content"]):
            return None
        # Bedrock refuses tool blocks in a history without a toolConfig: the tools they name, any input.
        specs = [{"toolSpec": {"name": name, "inputSchema": {"json": _ANY_OBJECT}}} for name in sorted(used)]
        return {"tools": specs} if specs else None
    out: dict = {"tools": specs}
    given = params.tool_choice
    if isinstance(given, NamedChoice):
        out["toolChoice"] = {"tool": {"name": given.function.name}}
    elif given == "required":
        out["toolChoice"] = {"any": {}}
    elif given == "auto":
        out["toolChoice"] = {"auto": {}}
    elif given not in (None, "none"):  # "none": Converse has no such choice; the tools stay for the history
        raise InvalidRequest(f"tool_choice {given!r} is not one of none, auto, required", param="tool_choice")
    return out


# -- answer: Bedrock → OpenAI -------------------------------------------------------------------
class _Usage(msgspec.Struct, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


class _ToolUse(msgspec.Struct, rename="camel"):
    tool_use_id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw(b"{}")


class _Block(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolUse | None = None


class _Message(msgspec.Struct):
    content: list[_Block] = []


class _Output(msgspec.Struct):
    message: _Message | None = None


class _Response(msgspec.Struct, rename="camel"):
    output: _Output | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ToolDelta(msgspec.Struct):
    input: str = ""


class _Delta(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolDelta | None = None


class _Start(msgspec.Struct, rename="camel"):
    tool_use: _ToolUse | None = None


class _Event(msgspec.Struct, rename="camel"):
    """Every stream event's payload, as one view: each event type fills the fields it has."""

    content_block_index: int = 0
    start: _Start | None = None
    delta: _Delta | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None
    message: str | None = None  # an exception frame's text
    Message: str | None = None  # some exceptions spell it so


_response = msgspec.json.Decoder(_Response)
_event = msgspec.json.Decoder(_Event)


def usage_of(usage: _Usage) -> Usage:
    read = usage.cache_read_input_tokens
    prompt = usage.input_tokens + read + usage.cache_write_input_tokens
    return Usage(prompt_tokens=prompt, completion_tokens=usage.output_tokens,
                 total_tokens=prompt + usage.output_tokens, cached_tokens=read)


def from_bedrock_converse(response: _Response) -> dict:
    text, calls = [], []
    message = response.output.message if response.output is not None else None
    for block in message.content if message is not None else ():
        if block.text:
            text.append(block.text)
        if block.tool_use is not None:
            use = block.tool_use
            calls.append(chat.tool_call(use.tool_use_id, use.name, bytes(use.input).decode()))
    return chat.choice(0, "".join(text), calls, FINISH.get(response.stop_reason or "", "stop"))


def failure_of(error_type: str, message: str, status: int | None = None,
               retry_after: float | None = None) -> UpstreamFailure:
    """A Bedrock exception (`ThrottlingException`, or a stream's `throttlingException`) classified."""
    name = error_type.split(":", 1)[0]
    name = name[:1].upper() + name[1:]
    status = status or ERROR_STATUS.get(name, 500)
    kind = _KINDS.get(name) or base.kind_of_status(status)
    return UpstreamFailure(status=status, message=message or name or f"the provider answered HTTP {status}",
                           kind=kind, retry_after=retry_after, code=name or None, type=name or None)


class StreamParser(chat.TranslatingParser):
    """ConverseStream's eventstream frames in, OpenAI chunk events out."""

    def __init__(self, model: str, wants_usage: bool) -> None:
        super().__init__(model, wants_usage)
        from botocore.eventstream import EventStreamBuffer

        self._frames = EventStreamBuffer()
        self._calls: dict[int, int] = {}  # content block index → tool call position
        self._broken = False

    def feed(self, chunk: bytes) -> bytes:
        from botocore.eventstream import ParserError

        if self._broken:
            return b""
        self._frames.add_data(chunk)
        out = []
        try:
            for frame in self._frames:
                self.events += 1
                out.append(self.on_frame(frame.headers, frame.payload))
        except ParserError:  # a CRC or a length that does not match: nothing after it can be trusted
            self._broken = True
            self.events += 1
            out.append(self.fail(UpstreamFailure(status=502, kind="server", code="upstream_bad_stream",
                                                 type="upstream_error",
                                                 message="the provider's event stream is corrupt")))
        return b"".join(out)

    def on_frame(self, headers: Mapping[str, str], payload: bytes) -> bytes:
        kind = headers.get(":message-type")
        if kind == "error":
            return self.fail(failure_of(headers.get(":error-code", "InternalServerException"),
                                        headers.get(":error-message", "")))
        try:
            view = _event.decode(payload) if payload else _Event()
        except (msgspec.DecodeError, RecursionError):
            self.invalid += 1
            return b""
        if kind == "exception":
            return self.fail(failure_of(headers.get(":exception-type", ""), view.message or view.Message or ""))
        handler = _HANDLERS.get(headers.get(":event-type", ""))
        return handler(self, view) if handler is not None else b""

    def _message_start(self, view: _Event) -> bytes:
        return self.out.delta({"role": "assistant", "content": ""})

    def _block_start(self, view: _Event) -> bytes:
        use = view.start.tool_use if view.start is not None else None
        if use is None:
            return b""
        position = self._calls[view.content_block_index] = len(self._calls)
        self.content_events += 1
        return self.out.tool(position, "", chat.tool_call(use.tool_use_id, use.name, ""))

    def _block_delta(self, view: _Event) -> bytes:
        delta = view.delta or _Delta()
        if delta.text:
            return self.text(delta.text)
        position = self._calls.get(view.content_block_index)
        if delta.tool_use is None or not delta.tool_use.input or position is None:
            return b""
        self.content_events += 1
        return self.out.tool(position, delta.tool_use.input)

    def _message_stop(self, view: _Event) -> bytes:
        self.finished = True
        return self.out.finish(FINISH.get(view.stop_reason or "", "stop"))

    def _metadata(self, view: _Event) -> bytes:
        if view.usage is not None:
            self.usage = usage_of(view.usage)
        return self.end()  # the last event of a stream

    def close(self) -> bytes:
        """A stream cut after its stop event but before its metadata is complete, without usage."""
        if self.finished and not self.done and self.error is None:
            return self.end()
        return b""


_HANDLERS = {"messageStart": StreamParser._message_start, "contentBlockStart": StreamParser._block_start,
             "contentBlockDelta": StreamParser._block_delta, "messageStop": StreamParser._message_stop,
             "metadata": StreamParser._metadata}


class Adapter:
    def __init__(self) -> None:
        self.caps = Capabilities(passthrough=False, needs_region=True, extra="aws", embeddings=True)

    @staticmethod
    def bearer(target: Target) -> str | None:
        return target.api_key or os.environ.get(BEARER_ENV) or None

    def credential_key(self, target: Target) -> tuple | None:
        return None if self.bearer(target) else ("aws",)

    def sign(self, target: Target, upstream_request: UpstreamRequest, frozen) -> None:
        from proxy.providers.cloud import sigv4

        region = target.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        sigv4(upstream_request, frozen, "bedrock", region)

    def build_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        if request.kind == "embeddings":
            body = to_bedrock_embeddings(read_embedding_params(request), request.model)
            method = "invoke"
        else:
            body = to_bedrock_converse(chat.read_params(request, multiple_choices=False))
            method = "converse-stream" if request.stream else "converse"
        base_url = (target.url or f"https://bedrock-runtime.{target.region}.amazonaws.com").rstrip("/")
        headers = {**target.headers, "Content-Type": "application/json"}
        bearer = self.bearer(target)
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if request.stream:
            headers["Accept"] = "application/vnd.amazon.eventstream"
        url = f"{base_url}/model/{quote(request.model, safe='')}/{method}"
        return UpstreamRequest("POST", url, headers, msgspec.json.encode(body), request.stream)

    def parse_response(self, request: ChatRequest, body: bytes) -> Parsed:
        if request.kind == "embeddings":
            return from_bedrock_embeddings(read_embedding_params(request), request.model, body)
        response = _response.decode(body)
        usage = usage_of(response.usage) if response.usage is not None else None
        answer = chat.completion(chat.new_id(), request.model, [from_bedrock_converse(response)], usage)
        return Parsed(body=answer, usage=usage, model=None)

    def stream_parser(self, request: ChatRequest) -> StreamParser:
        return StreamParser(request.model, request.wants_usage)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        try:
            view = _event.decode(body)
            message = view.message or view.Message or ""
        except (msgspec.DecodeError, RecursionError):
            message = f"the provider answered HTTP {status} ({len(body)} bytes)"
        error_type = headers.get("x-amzn-ErrorType") or ""
        return failure_of(error_type, message, status, base.retry_after_seconds(headers.get("Retry-After")))
