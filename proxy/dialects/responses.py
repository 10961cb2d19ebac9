"""The Responses dialect (`POST …/responses`): OpenAI's Responses API in front of any provider.

Request → chat: `instructions` leads as a system message; `input` is a string (one user
message) or items: messages (`developer` → system; text and image parts), `function_call` and
`custom_tool_call` (assistant tool calls), their outputs (tool messages; images in a tool's output
follow in a user message). `reasoning` items and item types this module does not know are
dropped: a provider cannot use another's reasoning. Tools (`function`, `custom`, `namespace`) become
chat functions, see `proxy.dialects.responses_tools`. The answer maps each back: a custom tool's
call is a `custom_tool_call`, a namespaced one a `function_call` with its `name` and `namespace`.
`tool_choice`, `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`,
`reasoning.effort` (→ `reasoning_effort`, kept only for providers taking it, see `base.fit`) and
`text.format` (→ `response_format`) are mapped; `store`, `include`, `truncation`, `service_tier`,
`prompt_cache_key`, `client_metadata`, `metadata`, `user` and other fields have no effect.

Refused (a 400 naming `param` before any upstream call, unless a provider that speaks the
Responses API itself serves the request as it came, see `base.fit`): `previous_response_id`,
`conversation`, `background: true`, `prompt`, `item_reference` items, file inputs, and hosted
tools (any tool other than function, custom and namespace: web_search, file_search, …). With
`dialects.responses.hostedTools: drop` the hosted tools are left out of the translation instead,
logged once per type and listed in the record's tags as `dropped_tools:TYPE`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping

import msgspec
import structlog

from proxy.dialects import base
from proxy.dialects import completions as decoding
from proxy.dialects.base import Completion, Context
from proxy.dialects.responses_stream import (
    ECHOED,
    ResponsesStream,
    call_item,
    message_item,
    part,
    response_object,
    usage_json,
)
from proxy.dialects.responses_tools import NO_PARAMETERS, Tool, ToolChoice, flat_name, to_chat_tools, tool_choice
from proxy.errors import InvalidRequest, ProxyError
from proxy.providers.base import Native

NAME = "responses"
log = structlog.get_logger("proxy.dialects.responses")
_logged: set[str] = set()  # hosted tool types already logged as dropped (once per process)


class Part(msgspec.Struct):
    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class Item(msgspec.Struct):
    type: str = "message"  # an easy input message has no type
    role: str | None = None
    content: str | list[Part] | None = None
    call_id: str | None = None
    name: str | None = None
    namespace: str | None = None
    arguments: str | None = None
    input: str | None = None
    output: str | list[Part] | None = None


class Format(msgspec.Struct):
    type: str = "text"
    name: str = "response"
    schema: msgspec.Raw = msgspec.Raw()
    description: str | None = None
    strict: bool | None = None


class Text(msgspec.Struct):
    format: Format | None = None


class Reasoning(msgspec.Struct):
    effort: str | None = None


class Body(msgspec.Struct):
    model: str
    input: str | list[Item] | None = None
    instructions: str | list[Item] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning: Reasoning | None = None
    text: Text | None = None
    stream: bool = False
    previous_response_id: str | None = None
    conversation: msgspec.Raw = msgspec.Raw()
    background: bool | None = None
    prompt: msgspec.Raw = msgspec.Raw()


_body = msgspec.json.Decoder(Body)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_PATH = re.compile(r"at `\$\.?(.*)`$|missing required field `(\w+)`$")


class ResponsesContext(Context):
    def __init__(self, model: str, echo: dict, drop_hosted: bool) -> None:
        self.id = "resp_" + os.urandom(16).hex()
        self.created = int(time.time())
        self.model = model
        self.served: str | None = None  # the model the provider named in its answer
        self.echo = echo  # the caller's parameters, as they came, for the response object
        self.drop_hosted = drop_hosted
        self.dropped: list[str] = []  # hosted tool types left out of the translation
        self.names: dict[str, tuple[str | None, str, str]] = {}  # chat function → (namespace, name, kind)

    def refuse(self, param: str, what: str) -> None:
        """Keep the first thing the chat translation cannot carry, as the request's refusal."""
        if self.refusal is None:
            self.refusal = InvalidRequest(
                f"{what} ({param}) can only be served by a provider that speaks the Responses API itself; "
                "this model has none", param=param)

    def hosted(self, param: str, kind: str, what: str = "") -> None:
        """A tool the chat translation cannot offer: refused, or dropped when so configured."""
        if not self.drop_hosted:
            self.refuse(param, what or f"the hosted tool {kind!r}")
        elif kind not in self.dropped:
            self.dropped.append(kind)
            if kind not in _logged:
                _logged.add(kind)
                log.warning("responses_hosted_tool_dropped", type=kind)


# -- request: Responses → chat -----------------------------------------------------------------
def decode(body: bytes) -> tuple[Body, dict[str, msgspec.Raw]]:
    """The typed body and its top-level fields as they came; a 400 naming the field."""
    try:
        return _body.decode(body), _fields.decode(body)
    except msgspec.ValidationError as exc:
        found = _PATH.search(str(exc))
        param = (found[1] or found[2]) if found else None
        raise InvalidRequest(f"the request body does not fit the Responses API: {exc}", param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None


def to_chat(body: Body, context: ResponsesContext) -> dict:
    """The chat request for a Responses body; what it cannot carry becomes `context.refusal`."""
    _refuse_stateful(body, context)
    tools = to_chat_tools(body.tools or (), context)  # first: the names the input's calls use
    messages = to_chat_messages(body, context)
    if not messages:
        if context.refusal is None:
            raise InvalidRequest("'input' is required", param="input")
        messages = [{"role": "user", "content": ""}]  # never sent: only a passthrough can serve it
    chat: dict = {"model": body.model, "messages": messages}
    effort = body.reasoning and body.reasoning.effort
    if body.max_output_tokens is not None:  # reasoning models take only the newer name
        chat["max_completion_tokens" if effort else "max_tokens"] = body.max_output_tokens
    if effort:
        chat["reasoning_effort"] = effort
        context.reasoning = True
    if body.temperature is not None:
        chat["temperature"] = body.temperature
    if body.top_p is not None:
        chat["top_p"] = body.top_p
    if tools:
        chat["tools"] = tools
        choice = tool_choice(body.tool_choice, context)
        if choice is not None:
            chat["tool_choice"] = choice
        if body.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = body.parallel_tool_calls
    fmt = body.text and body.text.format
    if fmt is not None and fmt.type == "json_schema":
        schema: dict = {"name": fmt.name, "schema": fmt.schema or NO_PARAMETERS}
        if fmt.description:
            schema["description"] = fmt.description
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None and fmt.type == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _refuse_stateful(body: Body, context: ResponsesContext) -> None:
    """What needs the provider's own state or files: only a passthrough can serve it."""
    if body.previous_response_id is not None:
        context.refuse("previous_response_id", "a previous response")
    if body.conversation:
        context.refuse("conversation", "a stored conversation")
    if body.background:
        context.refuse("background", "a background response")
    if body.prompt:
        context.refuse("prompt", "a stored prompt")


def to_chat_messages(body: Body, context: ResponsesContext) -> list[dict]:
    out: list[dict] = []
    if isinstance(body.instructions, str) and body.instructions:
        out.append({"role": "system", "content": body.instructions})
    elif isinstance(body.instructions, list):
        _items(body.instructions, "instructions", context, out)
    if isinstance(body.input, str):
        out.append({"role": "user", "content": body.input})
    elif body.input:
        _items(body.input, "input", context, out)
    return out


def _items(items: list[Item], where: str, context: ResponsesContext, out: list[dict]) -> None:
    images: list[dict] = []  # a tool output's images: a user message once the outputs are done
    for i, item in enumerate(items):
        kind = item.type
        if images and kind not in ("function_call_output", "custom_tool_call_output"):
            out.append({"role": "user", "content": images})
            images = []
        if kind == "message":
            message = _message(item, f"{where}[{i}]", context)
            if message is not None:
                out.append(message)
        elif kind in ("function_call", "custom_tool_call"):
            _call(item, out)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            text, found = _output(item.output, f"{where}[{i}].output", context)
            out.append({"role": "tool", "tool_call_id": item.call_id or "", "content": text})
            images += found
        elif kind == "item_reference":
            context.refuse(f"{where}[{i}]", "an item reference")
        # reasoning items and any other kind: nothing a chat provider can use
    if images:
        out.append({"role": "user", "content": images})


def _message(item: Item, where: str, context: ResponsesContext) -> dict | None:
    role = {"developer": "system"}.get(item.role or "", item.role)
    if role not in ("user", "system", "assistant"):
        raise InvalidRequest(f"{where}.role must be one of user, assistant, system, developer",
                             param=f"{where}.role")
    content = item.content
    if isinstance(content, str) or content is None:
        return {"role": role, "content": content or ""}
    parts = [found for j, piece in enumerate(content) if (found := _part(piece, f"{where}.content[{j}]", context))]
    if role != "user" or all(piece["type"] == "text" for piece in parts):
        return {"role": role, "content": "".join(piece.get("text", "") for piece in parts)}
    return {"role": role, "content": parts}


def _part(piece: Part, where: str, context: ResponsesContext) -> dict | None:
    kind = piece.type
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": piece.text or ""}
    if kind == "refusal":
        return {"type": "text", "text": piece.refusal or ""}
    if kind == "input_image" and piece.image_url:
        image: dict = {"url": piece.image_url}
        if piece.detail and piece.detail != "auto":
            image["detail"] = piece.detail
        return {"type": "image_url", "image_url": image}
    if kind in ("input_file", "input_image"):  # a file, or an image by file id
        context.refuse(where, "a file input")
    return None


def _output(output: str | list[Part] | None, where: str, context: ResponsesContext) -> tuple[str, list[dict]]:
    if isinstance(output, str) or output is None:
        return output or "", []
    parts = [found for j, piece in enumerate(output) if (found := _part(piece, f"{where}[{j}]", context))]
    return "".join(p["text"] for p in parts if p["type"] == "text"), [p for p in parts if p["type"] != "text"]


def _call(item: Item, out: list[dict]) -> None:
    """An earlier turn's tool call, as the assistant message's tool call it was."""
    name = flat_name(item.namespace, item.name or "")
    if item.type == "custom_tool_call":
        arguments = msgspec.json.encode({"input": item.input or ""}).decode()
    else:
        arguments = item.arguments or "{}"
    call = {"id": item.call_id or "", "type": "function", "function": {"name": name, "arguments": arguments}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if not last["content"]:
            last["content"] = None
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


# -- answer: chat → Responses ------------------------------------------------------------------
def from_chat(completion: Completion, context: ResponsesContext) -> dict:
    choice = completion.choices[0] if completion.choices else base.AnswerChoice()
    message = choice.message
    output: list[dict] = []
    parts = [part(kind, text) for kind, text in (("output_text", message.content), ("refusal", message.refusal))
             if text]
    incomplete = choice.finish_reason in ("length", "content_filter")
    if parts:
        output.append(message_item(context, 0, parts, "incomplete" if incomplete else "completed"))
    for call in message.tool_calls or ():
        index = len(output)
        call_id = call.id or f"call_{context.id[5:]}{index:02d}"
        output.append(call_item(context, index, call_id, call.function.name, call.function.arguments))
    context.served = completion.model
    return response_object(context, "completed", output, usage_json(completion.usage, context.prompt_estimate),
                           choice.finish_reason)


# -- the dialect -------------------------------------------------------------------------------
class Dialect:
    name = NAME
    id_header = "X-Request-Id"  # OpenAI's clients read the request id there; errors are chat's shape

    def __init__(self, drop_hosted: bool = False) -> None:
        self.drop_hosted = drop_hosted

    def request(self, body: bytes, headers: Mapping[str, str]):
        typed, fields = decode(body)
        echo = {name: value for name in ECHOED if (value := fields.get(name)) is not None}
        context = ResponsesContext(typed.model, echo, self.drop_hosted)
        chat = to_chat(typed, context)
        request = decoding.parse(msgspec.json.encode(chat))
        request.native = Native(NAME, fields)
        if context.dropped:
            request.tags = [f"dropped_tools:{kind}" for kind in context.dropped]
        return request, context

    def answer(self, body: bytes, context: ResponsesContext) -> bytes:
        return msgspec.json.encode(from_chat(base.completion_decoder.decode(body), context))

    def stream(self, context: ResponsesContext) -> ResponsesStream:
        return ResponsesStream(context)

    def error_body(self, error: ProxyError) -> bytes:
        return error.to_json()


DIALECT = Dialect()
DROPPING = Dialect(drop_hosted=True)  # `dialects.responses.hostedTools: drop`
