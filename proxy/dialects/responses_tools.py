"""The Responses API's tools as chat functions, and `tool_choice` (see `proxy.dialects.responses`).

`function` tools become chat functions as they are; a `custom` tool becomes a function of one
string parameter `input` (its grammar, if any, told in the description), and its call is mapped
back to a `custom_tool_call` by the stream and the answer; `namespace` tools (the way Codex
groups its MCP tools) are flattened into functions named `NAMESPACE__NAME`, or joined directly
when the namespace already ends in `__`, as MCP names do. Each flat name is kept in
`context.names` with (namespace, name, kind), which is how a call is mapped back. Anything else
is a hosted tool: `context.hosted` refuses or drops it.
"""

from __future__ import annotations

import re

import msgspec

from proxy.dialects.base import Context

_CHAT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what chat providers take as a function's name
_CUSTOM_INPUT = msgspec.Raw(b'{"type":"object","properties":{"input":{"type":"string"}},'
                            b'"required":["input"],"additionalProperties":false}')
NO_PARAMETERS = msgspec.Raw(b'{"type":"object","properties":{}}')


class Grammar(msgspec.Struct):
    type: str = "text"
    syntax: str | None = None
    definition: str | None = None


class Tool(msgspec.Struct):
    type: str
    name: str = ""
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None
    format: Grammar | None = None  # a custom tool's input format
    tools: list[Tool] | None = None  # a namespace's


class ToolChoice(msgspec.Struct):
    type: str
    name: str | None = None
    mode: str | None = None


def flat_name(namespace: str | None, name: str) -> str:
    if not namespace:
        return name
    return namespace + name if namespace.endswith("__") else f"{namespace}__{name}"


def to_chat_tools(tools, context: Context, namespace: str | None = None, where: str = "tools") -> list:
    out: list[dict] = []
    for i, tool in enumerate(tools):
        param = f"{where}[{i}]"
        if tool.type == "namespace" and namespace is None:
            out += to_chat_tools(tool.tools or (), context, tool.name, f"{param}.tools")
        elif tool.type in ("function", "custom"):
            name = flat_name(namespace, tool.name)
            if not _CHAT_NAME.fullmatch(name) or name in context.names:
                context.hosted(param, tool.type, f"the tool {name!r} (no chat function can carry its name)")
                continue
            context.names[name] = (namespace, tool.name, tool.type)
            out.append(_function(name, tool))
        else:
            context.hosted(param, tool.type)
    return out


def _function(name: str, tool: Tool) -> dict:
    function: dict = {"name": name}
    description = tool.description or ""
    if tool.type == "custom":
        grammar = tool.format
        if grammar is not None and grammar.type == "grammar" and grammar.definition:
            description += (f"\n\nThe `input` string must follow this {grammar.syntax or ''} grammar:\n"
                            f"{grammar.definition}")
        function["parameters"] = _CUSTOM_INPUT
    else:
        function["parameters"] = tool.parameters or NO_PARAMETERS
        if tool.strict is not None:
            function["strict"] = tool.strict
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def tool_choice(choice: str | ToolChoice | None, context: Context):
    if choice is None or isinstance(choice, str):
        return choice
    if choice.type in ("function", "custom"):
        return {"type": "function", "function": {"name": choice.name or ""}}
    if choice.type == "allowed_tools":
        return choice.mode or "auto"
    context.hosted("tool_choice", choice.type)
    return None
