"""The Responses API's tools offered as chat functions (proxy.dialects.responses_tools)."""

from __future__ import annotations

import msgspec

from proxy.dialects.responses import ResponsesContext
from proxy.dialects.responses_tools import Tool, ToolChoice, flat_name, to_chat_tools, tool_choice

_tools = msgspec.json.Decoder(list[Tool])


def _context(drop: bool = False) -> ResponsesContext:
    return ResponsesContext("m", {}, drop)


def test_flat_names_join_a_namespace_once():
    assert flat_name(None, "read") == "read"
    assert flat_name("files", "read") == "files__read"
    assert flat_name("mcp__fs__", "read") == "mcp__fs__read"  # an MCP prefix already ends in `__`


def test_a_namespace_is_flattened_and_each_name_remembered():
    context = _context()
    tools = _tools.decode(b'[{"type":"namespace","name":"fs","tools":[{"type":"function","name":"read",'
                          b'"parameters":{"type":"object"}},{"type":"custom","name":"patch"}]}]')
    out = to_chat_tools(tools, context)
    assert [tool["function"]["name"] for tool in out] == ["fs__read", "fs__patch"]
    assert context.names == {"fs__read": ("fs", "read", "function"), "fs__patch": ("fs", "patch", "custom")}
    assert msgspec.json.decode(msgspec.json.encode(out[1]["function"]["parameters"]))["required"] == ["input"]


def test_a_name_no_chat_function_can_carry_is_refused_naming_the_tool():
    context = _context()
    to_chat_tools(_tools.decode(b'[{"type":"function","name":"has space"}]'), context)
    assert context.refusal is not None and context.refusal.param == "tools[0]"


def test_tool_choice_maps_named_and_allowed_tools():
    context = _context(drop=True)
    assert tool_choice("required", context) == "required"
    assert tool_choice(ToolChoice(type="custom", name="patch"), context) == {
        "type": "function", "function": {"name": "patch"}}
    assert tool_choice(ToolChoice(type="allowed_tools", mode="required"), context) == "required"
    assert tool_choice(ToolChoice(type="web_search"), context) is None and context.dropped == ["web_search"]
