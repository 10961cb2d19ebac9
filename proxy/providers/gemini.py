"""GEMINI: `generateContent` and `streamGenerateContent?alt=sse`, translated both ways.

Request: system and developer messages → `systemInstruction`; assistant → `model` contents
(same-role contents merged); tool calls → `functionCall` parts, tool results → `functionResponse`
parts named after the call they answer; images → `inlineData` (data URLs) or `fileData` (http
URLs); sampling → `generationConfig`; JSON mode → `responseMimeType` + `responseJsonSchema`, and
tool parameters → `parametersJsonSchema`: both take JSON Schema as OpenAI callers write it, where
`responseSchema`/`parameters` take an OpenAPI subset that refuses e.g. `additionalProperties`.
Answer: candidates → choices; `functionCall` parts → tool calls with ids from position and name
(`call_<n>_<name>`), finish_reason `tool_calls`; usageMetadata → usage (completion includes
thoughts, as OpenAI counts reasoning). A prompt blocked by safety is a 400 `content_filter`.
Stream: no terminal event; `[DONE]` is written when the stream ends after its finish reason.
Embeddings: one `batchEmbedContents` call, one request per input string (`dimensions` →
`outputDimensionality`); vectors come back in input order, as floats or as OpenAI's base64 of
little-endian float32. Token-array inputs are a 400. Gemini reports no usage for embeddings: it
is estimated from the input text (`estimate_tokens`) and marked estimated.
The key goes in `x-goog-api-key`, never in the URL.
"""
from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import msgspec

from proxy.errors import InvalidRequest
from proxy.providers import base
from proxy.providers import chat_shapes as chat
from proxy.providers.base import Capabilities, ChatRequest, Parsed, Target, UpstreamFailure, UpstreamRequest, Usage
from proxy.providers.chat_shapes import ChatParams, ImagePart, Message, NamedChoice
from proxy.providers.gemini_embeddings import from_gemini_embeddings, read_embedding_params, to_gemini_embeddings

DEFAULT_URL = "https://generativelanguage.googleapis.com/v1beta"
_FILTERED = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_FILTERED, "content_filter")}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# Google's error model: a canonical status, and ErrorInfo reasons for the key itself.
_ACCOUNT_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
                          "ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_TYPE_UNSUPPORTED"})
# Canonical statuses whose class does not follow from the HTTP status alone.
_KINDS = {"RESOURCE_EXHAUSTED": "rate_limit", "UNAVAILABLE": "overloaded", "DEADLINE_EXCEEDED": "timeout",
          "INTERNAL": "server"}
# Gemini 3 refuses a replayed function call without its thought signature; Google documents this
# value for calls whose signature is lost (most OpenAI clients rebuild the assistant message).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")
_object = msgspec.json.Decoder(dict)


# -- request: OpenAI → Gemini -----------------------------------------------------------------
def to_gemini_request(params: ChatParams) -> dict:
    system, contents = to_gemini_contents(params.messages)
    body: dict = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = to_gemini_config(params)
    if config:
        body["generationConfig"] = config
    body.update(to_gemini_tools(params))
    return body


def to_gemini_contents(messages: list[Message]) -> tuple[list[dict], list[dict]]:
    """(system instruction parts, contents), consecutive same-role contents merged."""
    system: list[dict] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results that answer it
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            system += [{"text": text} for text in chat.texts(message, i) if text]
            continue
        role, parts = _parts(message, i, names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _parts(message: Message, i: int, names: dict[str, str]) -> tuple[str, list[dict]]:
    if message.role == "user":
        return "user", [_user_part(part, i) for part in chat.parts(message)
                        if isinstance(part, ImagePart) or part.text]
    if message.role == "assistant":
        parts = [{"text": text} for text in chat.texts(message, i) if text]
        for position, call in enumerate(message.tool_calls or ()):
            names[call.id] = call.function.name
            part = {"functionCall": {"name": call.function.name, "args": chat.arguments(call, i)}}
            signature = call.extra("google", "thought_signature")  # where Google's OpenAI layer puts it
            if signature or position == 0:
                part["thoughtSignature"] = signature or SKIP_SIGNATURE
            parts.append(part)
        return "model", parts
    if message.role == "tool":
        name = names.get(message.tool_call_id or "") or message.name
        if not name:
            raise InvalidRequest(f"messages[{i}].tool_call_id does not match a tool call of an earlier "
                                 "assistant message", param=f"messages[{i}].tool_call_id")
        result = _tool_result("".join(chat.texts(message, i)))
        return "user", [{"functionResponse": {"name": name, "response": result}}]
    raise InvalidRequest(f"messages[{i}]: role {message.role!r} is not supported by this provider; "
                         "use 'tool' messages", param=f"messages[{i}].role")


def _tool_result(text: str) -> dict:
    """A JSON object result goes as it is; anything else as `{"content": text}`."""
    try:
        return _object.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return {"content": text}


def _user_part(part, i: int) -> dict:
    if not isinstance(part, ImagePart):
        return {"text": part.text}
    kind, media_type, data = chat.image_source(part, i)
    if kind == "base64":
        return {"inlineData": {"mimeType": media_type, "data": data}}
    guessed = mimetypes.guess_type(urlsplit(data).path)[0]
    return {"fileData": {"mimeType": guessed or "image/jpeg", "fileUri": data}}


def to_gemini_config(params: ChatParams) -> dict:
    given = {"temperature": params.temperature, "topP": params.top_p, "maxOutputTokens": params.output_limit,
             "candidateCount": params.n, "seed": params.seed, "presencePenalty": params.presence_penalty,
             "frequencyPenalty": params.frequency_penalty}
    config = {name: value for name, value in given.items() if value is not None}
    if params.stops:
        config["stopSequences"] = params.stops
    if params.json_mode:
        config["responseMimeType"] = "application/json"
        schema = params.response_format.json_schema
        if schema is not None and chat.present(schema.schema) is not None:
            config["responseJsonSchema"] = schema.schema
    return config


def to_gemini_tools(params: ChatParams) -> dict:
    if not params.tools:
        return {}
    declarations = []
    for tool in params.tools:
        spec = tool.function
        entry: dict = {"name": spec.name}
        if spec.description:
            entry["description"] = spec.description
        if chat.present(spec.parameters) is not None:
            entry["parametersJsonSchema"] = spec.parameters
        declarations.append(entry)
    out: dict = {"tools": [{"functionDeclarations": declarations}]}
    given = params.tool_choice
    if isinstance(given, NamedChoice):
        out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY",
                                                       "allowedFunctionNames": [given.function.name]}}
    elif given is not None:
        if given not in _MODES:
            raise InvalidRequest(f"tool_choice {given!r} is not one of none, auto, required", param="tool_choice")
        out["toolConfig"] = {"functionCallingConfig": {"mode": _MODES[given]}}
    return out


# -- answer: Gemini → OpenAI ------------------------------------------------------------------
class _FunctionCall(msgspec.Struct):
    name: str
    args: msgspec.Raw = msgspec.Raw(b"{}")
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool = False
    function_call: _FunctionCall | None = None
    thought_signature: str | None = None

    def call(self, position: int, args: str) -> dict:
        """The OpenAI tool call of a functionCall part; its signature rides in `extra_content`."""
        call = self.function_call
        extra = {"google": {"thought_signature": self.thought_signature}} if self.thought_signature else None
        return chat.tool_call(call.id or call_id(call.name, position), call.name, args, extra)


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    total_token_count: int = 0


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None
    block_reason_message: str | None = None


class _Detail(msgspec.Struct, rename="camel"):
    reason: str | None = None
    retry_delay: str | None = None


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_Detail] = []


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: _Error | None = None  # an error event inside a stream


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


_response = msgspec.json.Decoder(_Response)
_error_body = msgspec.json.Decoder(_ErrorBody | list[_ErrorBody])


def usage_of(meta: _UsageMetadata) -> Usage:
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    completion = meta.candidates_token_count + meta.thoughts_token_count
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=meta.total_token_count or prompt + completion,
                 cached_tokens=meta.cached_content_token_count, reasoning_tokens=meta.thoughts_token_count)


def call_id(name: str, position: int) -> str:
    """Gemini's function calls carry no id: one derived from position and name, stable across replays."""
    return f"call_{position}_{name}"


def finish_of(reason: str | None, called: bool) -> str:
    return "tool_calls" if called else FINISH.get(reason or "", "stop")


def from_gemini_candidate(candidate: _Candidate, position: int) -> dict:
    """The OpenAI choice for one candidate."""
    text, calls = [], []
    for part in candidate.content.parts if candidate.content else ():
        if part.thought:
            continue
        if part.text:
            text.append(part.text)
        if part.function_call is not None:
            calls.append(part.call(len(calls), bytes(part.function_call.args).decode()))
    index = position if candidate.index is None else candidate.index
    return chat.choice(index, "".join(text), calls, finish_of(candidate.finish_reason, bool(calls)))


def blocked(response: _Response) -> UpstreamFailure | None:
    """A prompt refused by safety filters: no candidates, a block reason."""
    feedback = response.prompt_feedback
    if response.candidates or feedback is None or not feedback.block_reason:
        return None
    message = f"the provider blocked the prompt ({feedback.block_reason})"
    if feedback.block_reason_message:
        message += f": {feedback.block_reason_message}"
    return UpstreamFailure(status=400, message=message, kind="client", code="content_filter",
                           type="invalid_request_error")


def failure_of(status: int, error: _Error | None, retry_after: float | None = None) -> UpstreamFailure:
    error = error or _Error(message=f"the provider answered HTTP {status}")
    if error.status in _ACCOUNT_STATUSES or any(d.reason in _KEY_REASONS for d in error.details):
        kind = "auth"
    else:
        kind = _KINDS.get(error.status) or base.kind_of_status(status)
    for detail in error.details:
        match = _DELAY.match(detail.retry_delay or "")
        if match and retry_after is None:
            retry_after = float(match.group(1))
    code = error.status.lower() or None
    return UpstreamFailure(status=status, message=error.message or f"the provider answered HTTP {status}",
                           kind=kind, retry_after=retry_after, code=code, type=code)


class StreamParser(chat.TranslatingParser):
    """Gemini `alt=sse` events (each a GenerateContentResponse) in, OpenAI chunk events out."""

    events_decoder = _response

    def __init__(self, model: str, wants_usage: bool) -> None:
        super().__init__(model, wants_usage)
        self._calls: dict[int, int] = {}  # candidate index → tool calls so far
        self._metadata: _UsageMetadata | None = None

    def on_event(self, view: _Response) -> bytes:
        if view.error is not None:
            return self.fail(failure_of(view.error.code or 500, view.error))
        failure = blocked(view)
        if failure is not None:
            return self.fail(failure)
        if self._writer is None:
            self.start(view.response_id, view.model_version)
        out = [self._candidate(candidate, position) for position, candidate in enumerate(view.candidates)]
        if view.usage_metadata is not None:
            self._metadata = view.usage_metadata
        if self.finished and self._metadata is not None:
            self.usage = usage_of(self._metadata)
        return b"".join(out)

    def _candidate(self, candidate: _Candidate, position: int) -> bytes:
        index = position if candidate.index is None else candidate.index
        out = []
        if index not in self._calls:
            self._calls[index] = 0
            out.append(self.out.delta({"role": "assistant", "content": ""}, index))
        for part in candidate.content.parts if candidate.content else ():
            if part.thought:
                continue
            if part.text:
                out.append(self.text(part.text, index))
            if part.function_call is not None:
                n = self._calls[index]
                self._calls[index] = n + 1
                self.content_events += 1
                out.append(self.out.tool(n, "", part.call(n, ""), index))
                out.append(self.out.tool(n, bytes(part.function_call.args).decode(), index=index))
        if candidate.finish_reason:
            self.finished = True
            out.append(self.out.finish(finish_of(candidate.finish_reason, self._calls[index] > 0), index))
        return b"".join(out)

    def close(self) -> bytes:
        """Gemini has no terminal event: a stream that ended after its finish reason is complete."""
        if not self.finished or self.error is not None:
            return b""
        return self.end()


class Adapter:
    model_path = "/models/"
    embedding_model_prefix: str | None = "models/"  # batchEmbedContents: each request names `models/{model}`

    def __init__(self, caps: Capabilities | None = None) -> None:
        self.caps = caps or Capabilities(default_url=DEFAULT_URL, passthrough=False, embeddings=True)

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"x-goog-api-key": target.api_key} if target.api_key else {}

    def url(self, target: Target, request: ChatRequest) -> str:
        # The model is one quoted path segment: '/' and '..' in a name cannot change the path.
        if request.kind == "embeddings":
            method = "batchEmbedContents"
        else:
            method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        base = (target.url or self.caps.default_url or "").rstrip("/")
        return f"{base}{self.model_path}{quote(request.model, safe='')}:{method}"

    def build_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        if request.kind == "embeddings":
            if not self.caps.embeddings:  # Vertex serves embeddings through `:predict`, not this wire
                raise InvalidRequest("this provider serves chat completions only", code="unsupported_endpoint")
            prefix = self.embedding_model_prefix
            named = prefix + request.model if prefix is not None else None
            body = msgspec.json.encode(to_gemini_embeddings(read_embedding_params(request), named))
        else:
            body = msgspec.json.encode(to_gemini_request(chat.read_params(request, multiple_choices=True)))
        headers = {**target.headers, "Content-Type": "application/json", **self.auth_headers(target)}
        if request.stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamRequest("POST", self.url(target, request), headers, body, request.stream)

    def parse_response(self, request: ChatRequest, body: bytes) -> Parsed:
        if request.kind == "embeddings":
            return from_gemini_embeddings(read_embedding_params(request), request.model, body)
        response = _response.decode(body)
        failure = blocked(response)
        if failure is not None:
            raise InvalidRequest(failure.message, code="content_filter", param="messages")
        choices = [from_gemini_candidate(c, position) for position, c in enumerate(response.candidates)]
        usage = usage_of(response.usage_metadata) if response.usage_metadata is not None else None
        ident = response.response_id or chat.new_id()
        answer = chat.completion(ident, response.model_version or request.model, choices, usage)
        return Parsed(body=answer, usage=usage, model=response.model_version)

    def stream_parser(self, request: ChatRequest) -> StreamParser:
        return StreamParser(request.model, request.wants_usage)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        retry_after = base.retry_after_seconds(headers.get("Retry-After"))
        try:
            view = _error_body.decode(body)
        except (msgspec.DecodeError, RecursionError):
            view = None
        if isinstance(view, list):
            view = view[0] if view else None
        return failure_of(status, view.error if view is not None else None, retry_after)
