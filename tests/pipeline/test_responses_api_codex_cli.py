"""The real Codex CLI (`@openai/codex`, installed by deploy/tools/get-codex.sh, which .ci/run
runs; CODEX_BIN names another) against the gateway: `codex exec` with a custom provider,
`wire_api = "responses"`. It completes a turn on MOCK, and on a translated OpenAI-wire provider
it runs the tool call the model asks for and sends its output back. Skipped, saying why, where
the CLI is not installed: nothing is downloaded at test time."""

from __future__ import annotations

import os
import pathlib

import orjson
import pytest

from tests.clis import find_cli, run_cli
from tests.conftest import openai_provider
from tests.fakes.openai_responses import call, text
from tests.pipeline.test_responses_api import ScriptedOpenAI, chat_turn

CODEX = find_cli("CODEX_BIN", ".venv/bin/codex", "codex")
pytestmark = pytest.mark.skipif(
    CODEX is None,
    reason="the Codex CLI is not installed: deploy/tools/get-codex.sh installs @openai/codex from npm (.ci/run does)")


@pytest.fixture
async def chat_fake(aiohttp_server) -> ScriptedOpenAI:
    return await ScriptedOpenAI().start(aiohttp_server)


async def codex_exec(gw, model: str, prompt: str, home: pathlib.Path, work: pathlib.Path) -> list[dict]:
    """`codex exec --json PROMPT` against the gateway; the events it printed."""
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'''model = "{model}"
model_provider = "gateway"

[model_providers.gateway]
name = "gateway"
base_url = "{gw.url}/v1"
env_key = "GATEWAY_KEY"
wire_api = "responses"
''')
    env = {**os.environ, "CODEX_HOME": str(home), "GATEWAY_KEY": "caller-key", "HOME": str(home)}
    status, out, err = await run_cli([CODEX, "exec", "--json", "--skip-git-repo-check", "--sandbox",
                                      "danger-full-access", prompt], work, env)
    assert status == 0, err.decode()[-2000:]
    return [orjson.loads(line) for line in out.splitlines() if line.startswith(b"{")]


def messages_of(events: list[dict]) -> list[str]:
    return [e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]


async def test_codex_completes_a_turn_on_mock(gateway, tmp_path):
    gw = await gateway({"providers": [{"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"],
                                       "isHosted": True}],
                        "dialects": {"responses": {"hostedTools": "drop"}}})
    events = await codex_exec(gw, "mock-gpt", "say hello", tmp_path / "home", tmp_path / "work")
    assert any("mock model" in message for message in messages_of(events))
    assert events[-1]["type"] == "turn.completed" and events[-1]["usage"]["output_tokens"] > 0
    records = await gw.records()
    assert [(r.endpoint, r.status) for r in records] == [("responses", "completed")]
    assert "dropped_tools:web_search" in records[0].tags


async def test_codex_runs_the_tool_call_round_trip_on_a_translated_provider(gateway, chat_fake, tmp_path):
    gw = await gateway({"providers": [openai_provider(chat_fake, models=("up-model",))],
                        "dialects": {"responses": {"hostedTools": "drop"}}})
    chat_fake.script = [chat_turn([text("Running it."), call("call_x", "exec_command",
                                                             ['{"cmd": "echo gate', 'way-ok"}'])]),
                        chat_turn([text("The command printed gateway-ok.")])]
    events = await codex_exec(gw, "up-model", "run echo gateway-ok", tmp_path / "home", tmp_path / "work")
    assert "The command printed gateway-ok." in messages_of(events)
    first, second = (seen.body for seen in chat_fake.requests[:2])
    assert "exec_command" in {tool["function"]["name"] for tool in first["tools"]}
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    replies = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in replies] == ["call_x"] and "gateway-ok" in replies[0]["content"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "exec_command"
    assert {r.endpoint for r in await gw.records()} == {"responses"}
