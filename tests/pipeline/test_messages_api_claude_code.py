"""The real Claude Code CLI (`@anthropic-ai/claude-code` from npm) against a served gateway.

`claude -p … --output-format json` with ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN pointed at a
gateway process on loopback, as its LLM-gateway guide says, completes a turn on MOCK, and a
tool round trip it starts itself (it reads a file with its Read tool) on a translated OpenAI-wire
provider. The CLI is never downloaded here: `.ci/run` installs it under .venv/claude-code; set
CLAUDE_CODE_BIN to use another. Without it these tests skip.
"""

from __future__ import annotations

import os
import pathlib

import orjson
import pytest
from aiohttp import web

from proxy.pipeline.auth import digest
from tests.clis import find_cli, run_cli
from tests.procs import GatewayProcess

KEY = "claude-code-cli-key-0001"


CLAUDE = find_cli("CLAUDE_CODE_BIN", ".venv/claude-code/node_modules/.bin/claude", "claude")
pytestmark = pytest.mark.skipif(CLAUDE is None, reason="the Claude Code CLI is not installed (.ci/run installs it "
                                                       "under .venv/claude-code; or set CLAUDE_CODE_BIN)")


async def run_claude(gateway_url: str, workdir: pathlib.Path, prompt: str, model: str) -> dict:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "ANTHROPIC_BASE_URL": gateway_url,
           "ANTHROPIC_AUTH_TOKEN": KEY, "ANTHROPIC_API_KEY": "", "ANTHROPIC_MODEL": model,
           "ANTHROPIC_DEFAULT_SONNET_MODEL": model, "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_AUTOUPDATER": "1"}
    _, out, err = await run_cli([CLAUDE, "-p", prompt, "--output-format", "json", "--allowedTools", "Read"],
                                workdir, env)
    assert out, err.decode(errors="replace")[-2000:]
    return orjson.loads(out.splitlines()[-1])


async def _gateway(tmp_path: pathlib.Path, providers: list) -> GatewayProcess:
    gw = GatewayProcess(tmp_path / "gw", {"providers": providers, "auth": {"keys": [{"id": "cc", "sha256": digest(KEY)}]}},
                        log_level="warning")
    await gw.start()
    return gw


async def test_claude_code_completes_a_turn_on_mock(tmp_path):
    gw = await _gateway(tmp_path, [{"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"],
                                    "isHosted": True}])
    try:
        result = await run_claude(gw.url, tmp_path, "say hi", "mock-gpt")
    finally:
        gw.stop()
    assert result["is_error"] is False and result["subtype"] == "success", result
    assert "mock model served by the gateway" in result["result"]
    assert result["usage"]["output_tokens"] > 0


class ToolScript:
    """An OpenAI-wire provider that asks for the Read tool once, then answers from its result."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        results = [m for m in body["messages"] if m["role"] == "tool"]
        if results:
            delta = [{"content": "The file says: " + str(results[-1]["content"]).strip()[-40:]}]
            finish = "stop"
        else:
            args = orjson.dumps({"file_path": str(self.path)}).decode()
            delta = [{"content": "Reading it."},
                     {"tool_calls": [{"index": 0, "id": "call_read_1", "type": "function",
                                      "function": {"name": "Read", "arguments": ""}}]},
                     {"tool_calls": [{"index": 0, "function": {"arguments": args[:10]}}]},
                     {"tool_calls": [{"index": 0, "function": {"arguments": args[10:]}}]}]
            finish = "tool_calls"
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        head = {"id": "chatcmpl-cc", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
        for piece in delta:
            await out.write(b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": piece}]}) + b"\n\n")
        await out.write(b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {},
                                                                       "finish_reason": finish}]}) + b"\n\n")
        usage = {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}
        await out.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n")
        return out


async def test_claude_code_runs_its_own_tool_round_trip_on_a_translated_provider(tmp_path, aiohttp_server):
    notes = tmp_path / "notes.txt"
    notes.write_text("the answer is forty-two\n")
    script = ToolScript(notes)
    server = await aiohttp_server(script.app)
    provider = {"name": "up", "supportedProvider": "OPENAI_COMPATIBLE", "url": f"http://127.0.0.1:{server.port}/v1",
                "apiKey": "sk-up-0001", "models": ["gpt-4o"], "isHosted": True}
    gw = await _gateway(tmp_path, [provider])
    try:
        result = await run_claude(gw.url, tmp_path, "What does notes.txt say?", "gpt-4o")
        records = await gw.records()
    finally:
        gw.stop()
    assert result["is_error"] is False and "forty-two" in result["result"], result
    assert result["num_turns"] >= 2
    turn = [b for b in script.bodies if any(m["role"] == "tool" for m in b["messages"])][0]
    call = next(m for m in turn["messages"] if m.get("tool_calls"))["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("call_read_1", "Read")
    assert orjson.loads(call["function"]["arguments"]) == {"file_path": str(notes)}
    assert [m for m in turn["messages"] if m["role"] == "tool"][0]["tool_call_id"] == "call_read_1"
    assert {r.endpoint for r in records} == {"messages"} and all(r.status == "completed" for r in records)


async def test_claude_code_through_a_passthrough_to_an_anthropic_provider(tmp_path, aiohttp_server):
    from tests.fakes.anthropic import FakeAnthropic, provider, text

    fake = await FakeAnthropic().start(aiohttp_server)
    fake.content = [text("Hi from the provider that speaks Messages.")]
    gw = await _gateway(tmp_path, [provider(fake, models=("claude-sonnet-4-5",))])
    try:
        result = await run_claude(gw.url, tmp_path, "say hi", "claude-sonnet-4-5")
    finally:
        gw.stop()
    assert result["is_error"] is False and result["result"] == "Hi from the provider that speaks Messages.", result
    seen = [r for r in fake.requests if r.path == "/v1/messages"][-1]
    assert "claude-code-20250219" in seen.headers["anthropic-beta"]  # the CLI's betas, forwarded
    assert seen.headers["x-api-key"] == "sk-ant-fake-0001" and "Authorization" not in seen.headers
    assert any(block.get("cache_control") for block in seen.body["system"])  # its body as it came
