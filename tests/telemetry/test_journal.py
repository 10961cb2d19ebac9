"""The in-flight journal and the admission gate, on the data plane of a running gateway."""

from __future__ import annotations

import asyncio

import msgspec

from proxy.config import Config
from proxy.pipeline.auth import digest
from proxy.telemetry import journal
from proxy.telemetry.spool import Recovery
from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour
from tests.telemetry.helpers import until

MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def test_an_aborted_record_carries_what_the_journal_knew():
    body = msgspec.json.encode(journal.Begin(ts=1735689600.5, route="chat", caller="team-a",
                                             tags="team:a, env:prod"))
    r = journal.aborted("f" * 24, body, "cl-1")
    assert (r.id, r.status, r.error_type, r.api_key_id, r.cluster_id) == \
        ("f" * 24, "aborted_unknown", "gateway_restarted", "team-a", "cl-1")
    assert (r.time, r.ts, r.tags, r.model_requested, r.provider) == \
        ("2025-01-01T00:00:00.500Z", 1735689600.5, ["team:a", "env:prod"], "", None)
    bad = journal.aborted("e" * 24, msgspec.json.encode(journal.Begin(ts=1.0, route="chat", tags="no tag")), None)
    assert bad.tags == []


def test_the_begin_knows_the_caller_the_route_and_the_header_tags():
    cfg = msgspec.convert({"auth": {"keys": [{"id": "team-a", "sha256": digest("sk-team-a")}]}}, type=Config)
    from proxy.pipeline.auth import Authenticator

    class Request(dict):  # aiohttp requests keep per-request items
        path = "/openai/v1/embeddings"
        headers = {"Authorization": "Bearer sk-team-a", "X-Tags": "a:b", "X-LiteLLM-Tags": "c:d"}

    request = Request()
    info = journal.begin_info(request, Authenticator(cfg))
    assert (info.route, info.caller, info.tags) == ("embeddings", "team-a", "a:b,c:d")
    assert request[journal.HEADER_TAGS] == ("a:b", "c:d")  # read once; the pipeline's tags reuse them
    for headers, tags in [({"X-Tags": "a:b"}, "a:b"), ({"X-LiteLLM-Tags": "c:d"}, "c:d"),
                          ({"X-Tags": "", "X-LiteLLM-Tags": "c:d"}, "c:d"), ({"X-Tags": ""}, None), ({}, None)]:
        Request.headers = {"Authorization": "Bearer sk-team-a", **headers}
        assert journal.begin_info(Request(), Authenticator(cfg)).tags == tags, headers
    Request.headers = {"Authorization": "Bearer wrong"}
    assert journal.begin_info(Request(), Authenticator(cfg)).caller is None
    for path in ("/openai/v1/responses", "/v1/responses", "/responses"):  # the Responses API's routes
        Request.path = path
        assert journal.begin_info(Request(), Authenticator(cfg)).route == "responses"


def _scan(gw) -> Recovery:
    recovery = Recovery()
    for path in sorted(gw.gw.batcher.spool.dir.glob("*.seg")):
        recovery.scan(path.read_bytes())
    return recovery


async def test_each_request_is_journalled_and_closed_by_its_record(gateway):
    gw = await gateway({"providers": [MOCK]})
    for path in ("/v1/chat/completions", "/openai/v1/embeddings", "/v1/chat/completions"):
        body = BODY if "chat" in path else {"model": "mock-gpt", "input": "hi"}
        async with gw.post(path, json=body) as r:
            assert r.status == 200
    async with gw.post("/v1/chat/completions", json={"model": "nope", "messages": []}) as r:
        assert r.status in (400, 404)
    async with gw.get("/healthz") as r:  # not the data plane: not journalled
        assert r.status == 200
    records = await gw.records()
    recovery = _scan(gw)
    # A request that ended within the writer's batch needs no BEGIN on disk; none is left open.
    assert len(records) == 4 and len(recovery.begins) <= 4 and recovery.open_begins() == {}


async def test_a_running_request_is_on_disk_until_its_record_closes_it(gateway, fake_openai):
    fake_openai.on("slow", Behaviour(delay_headers=1.0))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("slow",))]})
    pending = asyncio.ensure_future(gw.post("/v1/chat/completions", json={**BODY, "model": "slow"}))
    await until(lambda: len(gw.gw.batcher.writer._open) == 1)
    await gw.gw.batcher.flush()
    assert len(_scan(gw).open_begins()) == 1  # a kill -9 now would report it as aborted_unknown
    async with await pending as r:
        assert r.status == 200
    await gw.records()
    assert _scan(gw).open_begins() == {}


async def test_reject_turns_data_plane_requests_away_with_retry_after(gateway):
    gw = await gateway({"providers": [MOCK], "telemetry": {"whenFull": "reject"}})
    gw.gw.batcher.spool.bytes = gw.gw.batcher.spool.max_bytes
    async with gw.post("/v1/chat/completions", json=BODY) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "5"
        error = (await r.json())["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "usage_recording_unavailable"
    async with gw.get("/openai/v1/models") as r:
        assert r.status == 200
    gw.gw.batcher.spool.bytes = 0
    async with gw.post("/v1/chat/completions", json=BODY) as r:
        assert r.status == 200


async def test_a_messages_request_is_journalled_under_its_endpoint(gateway):
    gw = await gateway({"providers": [MOCK]})
    async with gw.post("/anthropic/v1/messages", json={"max_tokens": 5, **BODY}) as r:
        assert r.status == 200
    async with gw.post("/v1/messages/count_tokens", json=BODY) as r:  # never billed: not journalled
        assert r.status == 200
    records = await gw.records()
    assert [rec.endpoint for rec in records] == ["messages"] and _scan(gw).open_begins() == {}
    body = msgspec.json.encode(journal.Begin(ts=1.0, route="messages"))
    assert journal.aborted("a" * 24, body, None).endpoint == "messages"  # a crash keeps the endpoint too
