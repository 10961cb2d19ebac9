"""Codex's request shape, replayed: its first request (as its client sends it to a `wire_api =
"responses"` provider: `store: false`, `include: ["reasoning.encrypted_content"]`,
`client_metadata`, `reasoning.summary`, a `namespace` tool, `custom` and `function` tools,
`web_search`), streamed, read the way Codex reads it (`response.output_item.done` items, then
`response.completed` with its id and usage), and its second request carrying the tool outputs."""

from __future__ import annotations

import orjson
import pytest

from tests.fakes.openai_responses import call
from tests.pipeline.test_responses_api import chat_turn, fake_responses, make_upstream, scripted_openai  # noqa: F401

GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?'
FIRST = {
    "model": "up-model",
    "instructions": "You are Codex, a coding agent. Work in the user's repository.",
    "input": [
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "<permissions>sandbox: workspace-write</permissions>"}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "<environment_context><cwd>/repo</cwd></environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Read README.md and fix it"}]},
    ],
    "tools": [
        {"type": "function", "name": "exec_command", "description": "Runs a command in a PTY",
         "strict": False, "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                                         "required": ["cmd"], "additionalProperties": False}},
        {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch",
         "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR}},
        {"type": "namespace", "name": "mcp__fs__", "description": "Tools of the MCP server fs",
         "tools": [{"type": "function", "name": "read_file", "description": "Read a file", "strict": False,
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]},
        {"type": "web_search", "external_web_access": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199a7c2-1f7e-7c31-9a55-6a1e4e1c2b10",
    "text": {"verbosity": "medium"},
    "client_metadata": {"x-codex-installation-id": "4f1c", "session_id": "0199a7c2"},
}
HEADERS = {"originator": "codex_cli_rs", "session_id": "0199a7c2-1f7e-7c31-9a55-6a1e4e1c2b10",
           "Accept": "text/event-stream", "Authorization": "Bearer caller-key"}
TURN = [call("call_r", "mcp__fs__read_file", ['{"path": ', '"README.md"}']),
        call("call_p", "apply_patch", ['{"input": "*** Begin Patch\\n', '*** End Patch\\n"}'])]


async def codex_turn(gw, body: dict) -> tuple[list[dict], dict]:
    """Post as Codex does; the items of `response.output_item.done` and the completed response."""
    async with gw.post("/v1/responses", data=orjson.dumps(body), headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    items, completed = [], None
    for frame in raw.strip().split("\n\n"):
        event, data = frame.split("\n", 1)
        payload = orjson.loads(data.removeprefix("data: "))
        assert event == "event: " + payload["type"]
        if payload["type"] == "response.output_item.done":
            items.append(payload["item"])
        elif payload["type"] == "response.completed":
            completed = payload["response"]
    assert completed is not None and completed["id"].startswith("resp_")
    assert completed["usage"]["total_tokens"] > 0
    return items, completed


@pytest.fixture
def up_for(gateway, scripted_openai, fake_responses):  # noqa: F811
    async def make(kind: str, hosted: str = "drop"):
        return await make_upstream(kind, gateway, scripted_openai, fake_responses,
                                   {"dialects": {"responses": {"hostedTools": hosted}}})
    return make


async def test_translated_with_hosted_tools_dropped(up_for):
    up = await up_for("chat")
    up.fake.script = [chat_turn(TURN), chat_turn([{"type": "message", "pieces": ["Fixed."]}])]
    items, _ = await codex_turn(up.gw, FIRST)
    sent = up.bodies[0]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["exec_command", "apply_patch", "mcp__fs__read_file"]
    assert sent["parallel_tool_calls"] is False
    assert "reasoning_effort" not in sent  # this provider does not declare it takes reasoning effort
    assert sent["messages"][0] == {"role": "system", "content": FIRST["instructions"]}
    assert sent["messages"][1]["role"] == "system"  # developer
    assert not {"store", "include", "client_metadata", "prompt_cache_key", "text"} & set(sent)
    read, patch = items
    assert (read["type"], read["name"], read["namespace"], read["call_id"]) == (
        "function_call", "read_file", "mcp__fs__", "call_r")
    assert orjson.loads(read["arguments"]) == {"path": "README.md"}
    assert (patch["type"], patch["name"], patch["call_id"], patch["input"]) == (
        "custom_tool_call", "apply_patch", "call_p", "*** Begin Patch\n*** End Patch\n")
    record = (await up.gw.records())[0]
    assert record.endpoint == "responses" and "dropped_tools:web_search" in record.tags

    second = {**FIRST, "input": FIRST["input"] + [
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-opaque"}, read, patch,
        {"type": "function_call_output", "call_id": "call_r", "output": "# README"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Success. Updated README.md"}]}
    items, completed = await codex_turn(up.gw, second)
    assert [item["type"] for item in items] == ["message"] and completed["output"][0]["content"][0]["text"] == "Fixed."
    messages = up.bodies[1]["messages"]
    assert messages[-3]["tool_calls"] == [
        {"id": "call_r", "type": "function", "function": {"name": "mcp__fs__read_file", "arguments": read["arguments"]}},
        {"id": "call_p", "type": "function", "function": {"name": "apply_patch",
                                                          "arguments": orjson.dumps({"input": patch["input"]}).decode()}}]
    assert messages[-2:] == [{"role": "tool", "tool_call_id": "call_r", "content": "# README"},
                             {"role": "tool", "tool_call_id": "call_p", "content": "Success. Updated README.md"}]


async def test_hosted_tools_are_refused_by_default_before_any_upstream_call(up_for):
    up = await up_for("chat", hosted="reject")
    async with up.gw.post("/v1/responses", json=FIRST, headers=HEADERS) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == "tools[3]" and "web_search" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert up.fake.requests == []


async def test_passed_through_as_it_came(up_for):
    up = await up_for("responses", hosted="reject")  # a passthrough keeps hosted tools whatever the setting
    up.fake.script = [TURN]
    items, completed = await codex_turn(up.gw, FIRST)
    assert up.bodies[0] == FIRST
    assert [item["name"] for item in items] == ["mcp__fs__read_file", "apply_patch"]  # the fake's own names
    assert completed["id"] == "resp_fake0001"


async def test_mock_answers_codex(up_for):
    up = await up_for("mock")
    items, completed = await codex_turn(up.gw, {**FIRST, "model": "mock-gpt"})
    assert [item["type"] for item in items] == ["message"] and "mock model" in items[0]["content"][0]["text"]
    assert completed["status"] == "completed"
