"""The Messages dialect (`POST …/v1/messages`): Anthropic's client API in front of any provider.

Request → chat: `system` (a string or text blocks) leads as one system message, and a `system`
turn mid-conversation (a beta Claude Code uses) is a system message where it stands; text and image
blocks become content parts; an assistant's `tool_use` blocks its tool calls (`input` as JSON
`arguments`); a user turn's `tool_result` blocks become tool messages placed before that turn's
other content (`is_error` results are marked "Error: "; their images follow in the user
message); `tool_choice` auto/any/tool/none → auto/required/named/none and
`disable_parallel_tool_use` → `parallel_tool_calls: false`; `stop_sequences` → `stop`;
`metadata.user_id` → `user`; `thinking` → `reasoning_effort` (`output_config.effort` when given,
else by the thinking budget; kept only for providers that take it, see `base.fit`). `cache_control`, `top_k`, `service_tier` and fields this module does not
know are left out of the translation. Server tools, `mcp_servers`, `container`, documents and
other blocks a chat request cannot hold are a refusal: served only by a provider that speaks
Messages itself (passthrough), else a 400 naming the field.

Chat → answer: `msg_` id, text and `tool_use` blocks (a `thinking` block first when the caller
asked for thinking and the provider streamed reasoning), `stop_reason` (`tool_use` whenever a
tool call is present), usage with `input_tokens` not counting cached ones. The stream is
`messages_stream.MessagesStream`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

import msgspec
import orjson

from proxy.dialects import base
from proxy.dialects import completions as decoding
from proxy.dialects.base import Completion, Context
from proxy.dialects.messages_stream import MessagesStream, error_type, message_id, stop_reason, usage_json
from proxy.errors import InvalidRequest, ProxyError
from proxy.providers.base import Native
from proxy.providers.chat_shapes import present

NAME = "messages"
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")  # forwarded to a provider speaking Messages
_EFFORT = ((4096, "low"), (16384, "medium"))  # thinking budget below → effort; above: high


class Source(msgspec.Struct):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Block(msgspec.Struct):
    type: str
    text: str | None = None
    source: Source | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw(b"{}")
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


class Turn(msgspec.Struct):
    role: str
    content: str | list[Block]


class Tool(msgspec.Struct):
    name: str = ""
    type: str | None = None  # absent or "custom" for a client tool; server tools are typed
    description: str | None = None
    input_schema: msgspec.Raw = msgspec.Raw()


class ToolChoice(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"] = "auto"  # refused at decode, also where no tool is given
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct):
    type: str = "disabled"
    budget_tokens: int | None = None


class OutputConfig(msgspec.Struct):
    effort: str | None = None  # low | medium | high (a beta): the reasoning effort, when thinking


class Metadata(msgspec.Struct):
    user_id: str | None = None


class Body(msgspec.Struct):
    model: str
    messages: list[Turn]
    max_tokens: int | None = None
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: Metadata | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    mcp_servers: msgspec.Raw = msgspec.Raw()
    container: msgspec.Raw = msgspec.Raw()


_body = msgspec.json.Decoder(Body)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_PATH = re.compile(r"at `\$\.?(.*)`$")


class MessagesContext(Context):
    def __init__(self, model: str, thinking: bool) -> None:
        self.model = model
        self.thinking = thinking  # the caller asked for thinking blocks
        self.reasoning = thinking


# -- request: Messages → chat ---------------------------------------------------------------
def decode(body: bytes) -> tuple[Body, dict[str, msgspec.Raw]]:
    """The typed body and its top-level fields as they came; a 400 naming the field."""
    try:
        return _body.decode(body), _fields.decode(body)
    except msgspec.ValidationError as exc:
        found = _PATH.search(str(exc))
        param = found[1] if found and found[1] else None
        raise InvalidRequest(f"the request body does not fit the Messages API: {exc}", param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None


def to_chat(body: Body, context: MessagesContext, count_only: bool = False) -> dict:
    """The chat request for a Messages body; what it cannot carry becomes `context.refusal`."""
    if body.max_tokens is None and not count_only:
        raise InvalidRequest("'max_tokens' is required", param="max_tokens")
    if body.max_tokens is not None and body.max_tokens < 1:
        raise InvalidRequest("'max_tokens' must be at least 1", param="max_tokens")
    if not body.messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    refuse = _Refusals(context)
    messages = to_chat_messages(body, refuse)
    if not messages and context.refusal is not None:  # never sent (see `base.fit`); a valid chat request still
        messages = [{"role": "user", "content": ""}]
    chat: dict = {"model": body.model, "messages": messages}
    effort = _effort(body.thinking, body.output_config)
    limit = "max_completion_tokens" if effort else "max_tokens"  # reasoning models take only the former
    if body.max_tokens is not None:
        chat[limit] = body.max_tokens
    if effort:
        chat["reasoning_effort"] = effort
    for name, value in (("temperature", body.temperature), ("top_p", body.top_p), ("stop", body.stop_sequences),
                        ("user", body.metadata and body.metadata.user_id)):
        if value is not None:
            chat[name] = value
    chat.update(to_chat_tools(body, refuse))
    if present(body.mcp_servers):
        refuse("mcp_servers", "MCP servers")
    if present(body.container):
        refuse("container", "a code execution container")
    if body.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _effort(thinking: Thinking | None, output: OutputConfig | None) -> str | None:
    if thinking is None or thinking.type == "disabled":
        return None
    if output is not None and output.effort in ("low", "medium", "high"):
        return output.effort
    budget = thinking.budget_tokens or 0
    return next((effort for below, effort in _EFFORT if budget < below), "high") if budget else "medium"


class _Refusals:
    """Keeps the first thing the chat translation cannot carry, as the request's refusal."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def __call__(self, param: str, what: str) -> None:
        if self.context.refusal is None:
            self.context.refusal = InvalidRequest(
                f"{what} ({param}) can only be served by a provider that speaks the Messages API itself; "
                "this model has none", param=param)


def to_chat_messages(body: Body, refuse: _Refusals) -> list[dict]:
    out: list[dict] = []
    system = body.system
    if isinstance(system, list):
        system = _joined(system)
    if system:
        out.append({"role": "system", "content": system})
    for i, turn in enumerate(body.messages):
        if turn.role == "user":
            out += _user(turn.content, f"messages[{i}]", refuse)
        elif turn.role == "assistant":
            out += _assistant(turn.content, f"messages[{i}]", refuse)
        elif turn.role == "system":  # a system turn mid-conversation (Claude Code sends them, behind a beta)
            content = turn.content if isinstance(turn.content, str) else _joined(turn.content)
            out += [{"role": "system", "content": content}] if content else []
        else:
            raise InvalidRequest(f"messages[{i}].role must be 'user', 'assistant' or 'system'",
                                 param=f"messages[{i}].role")
    return out


def _joined(blocks: list[Block]) -> str:
    return "\n\n".join(block.text or "" for block in blocks if block.type == "text")


def _user(content: str | list[Block], where: str, refuse: _Refusals) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools, parts = [], []
    for j, block in enumerate(content):
        if block.type == "tool_result":
            text, images = _result(block, f"{where}.content[{j}]", refuse)
            tools.append({"role": "tool", "tool_call_id": block.tool_use_id or "", "content": text})
            parts += images
        else:
            part = _part(block, f"{where}.content[{j}]", refuse)
            if part is not None:
                parts.append(part)
    if not parts:
        return tools
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return [*tools, {"role": "user", "content": parts}]


def _result(block: Block, where: str, refuse: _Refusals) -> tuple[str, list[dict]]:
    """A tool result's text (chat's tool messages hold text only) and its images, for the user turn."""
    content = block.content
    if isinstance(content, str) or content is None:
        texts, images = [content or ""], []
    else:
        parts = [part for k, inner in enumerate(content) if (part := _part(inner, f"{where}.content[{k}]", refuse))]
        texts = [part["text"] for part in parts if part["type"] == "text"]
        images = [part for part in parts if part["type"] != "text"]
    text = "\n".join(texts)
    return ("Error: " + text if block.is_error else text), images


def _part(block: Block, where: str, refuse: _Refusals) -> dict | None:
    if block.type == "text":
        return {"type": "text", "text": block.text or ""}
    if block.type == "image" and block.source is not None:
        source = block.source
        if source.type == "base64" and source.data is not None:
            return {"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}
        if source.type == "url" and source.url:
            return {"type": "image_url", "image_url": {"url": source.url}}
    if block.type in ("thinking", "redacted_thinking"):
        return None  # the provider's own reasoning, meaningless to another one
    refuse(where, f"a {block.type!r} block")
    return None


def _assistant(content: str | list[Block], where: str, refuse: _Refusals) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}] if content else []
    texts, calls = [], []
    for j, block in enumerate(content):
        if block.type == "tool_use":
            calls.append({"id": block.id or "", "type": "function",
                          "function": {"name": block.name or "", "arguments": bytes(block.input).decode()}})
        elif (part := _part(block, f"{where}.content[{j}]", refuse)) is not None:
            if part["type"] != "text":
                refuse(f"{where}.content[{j}]", "an image in an assistant turn")
            else:
                texts.append(part["text"])
    if not texts and not calls:
        return []
    message: dict = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def to_chat_tools(body: Body, refuse: _Refusals) -> dict:
    tools = []
    for i, tool in enumerate(body.tools or ()):
        if tool.type not in (None, "custom") or not tool.input_schema:
            refuse(f"tools[{i}]", f"the server tool {tool.type or tool.name!r}")
            continue
        function: dict = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    if not tools:
        return {}
    out: dict = {"tools": tools}
    choice = body.tool_choice
    if choice is None:
        return out
    if choice.type == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name or ""}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use and choice.type != "none":
        out["parallel_tool_calls"] = False
    return out


# -- answer: chat → Messages ----------------------------------------------------------------
def tool_input(arguments: str) -> dict:
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}  # never drop what the model wrote


def from_chat(completion: Completion, context: MessagesContext) -> dict:
    choice = completion.choices[0] if completion.choices else base.AnswerChoice()
    message = choice.message
    content: list[dict] = []
    reasoning = message.reasoning_content or message.reasoning
    if reasoning and context.thinking:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.content or message.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in message.tool_calls or ():
        content.append({"type": "tool_use", "id": call.id or "toolu_" + os.urandom(12).hex(),
                        "name": call.function.name, "input": tool_input(call.function.arguments)})
    return {"id": message_id(completion.id), "type": "message", "role": "assistant",
            "model": completion.model or context.model, "content": content,
            "stop_reason": stop_reason(choice.finish_reason, bool(message.tool_calls)), "stop_sequence": None,
            "usage": usage_json(completion.usage, context.prompt_estimate)}


# -- the dialect ----------------------------------------------------------------------------
class Dialect:
    name = NAME
    id_header = "request-id"

    def request(self, body: bytes, headers: Mapping[str, str], operation: str = ""):
        typed, fields = decode(body)
        context = MessagesContext(typed.model, typed.thinking is not None and typed.thinking.type != "disabled")
        chat = to_chat(typed, context, count_only=bool(operation))
        request = decoding.parse(msgspec.json.encode(chat))
        passed = {name: value for name in PASSED_HEADERS if (value := headers.get(name)) is not None}
        request.native = Native(NAME, fields, passed, operation)
        return request, context

    def answer(self, body: bytes, context: MessagesContext) -> bytes:
        return orjson.dumps(from_chat(base.completion_decoder.decode(body), context))

    def stream(self, context: MessagesContext) -> MessagesStream:
        return MessagesStream(context)

    def error_body(self, error: ProxyError) -> bytes:
        return orjson.dumps({"type": "error", "error": {"type": error_type(error.status), "message": error.message}})


DIALECT = Dialect()
