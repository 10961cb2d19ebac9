"""Cast AI key verification against a fake Cast AI API on loopback: answers, caching, outages."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from proxy.pipeline.auth import digest
from proxy.pipeline.verify import PATH, caller_id

MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}
GOOD, OTHER, BAD = "castai-key-good-0001", "castai-key-good-0002", "castai-key-bad-0003"


class FakeCastAI:
    """`POST …/api-keys:verify`: 200 with the organization for known keys, 401 for others;
    `status` forces an answer (an outage), `stop()` takes the whole API away."""

    def __init__(self) -> None:
        self.orgs = {GOOD: "org-1", OTHER: "org-2"}
        self.status: int | None = None
        self.delay = 0.0
        self.calls: list[tuple[dict, bytes]] = []
        self.app = web.Application()
        self.app.router.add_post(PATH, self._verify)

    async def _verify(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        await asyncio.sleep(self.delay)
        if self.status is not None:
            return web.json_response({"message": "unavailable"}, status=self.status)
        org = self.orgs.get(request.headers.get("X-API-Key", ""))
        if org is None:
            return web.json_response({"message": "invalid"}, status=401)
        return web.json_response({"organizationId": org})


@pytest.fixture
async def castai(aiohttp_server):
    fake = FakeCastAI()
    fake.server = await aiohttp_server(fake.app)
    fake.url = f"http://127.0.0.1:{fake.server.port}"
    return fake


def config(castai, **verification) -> dict:
    return {"providers": [MOCK], "castai": {"apiUrl": castai.url},
            "auth": {"castaiVerification": True, "verification": verification,
                     "keys": [{"id": "local", "sha256": digest("local-key")}]}}


async def ask(gw, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with gw.post("/v1/chat/completions", headers=headers,
                       json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}) as r:
        return r.status, r.headers, await r.read()


async def test_a_valid_key_is_asked_once_and_cached(gateway, castai):
    gw = await gateway(config(castai))
    assert (await ask(gw, GOOD))[0] == 200
    assert (await ask(gw, GOOD))[0] == 200
    (headers, body), = castai.calls
    assert headers["X-API-Key"] == GOOD and body == b"{}" and headers["Content-Type"] == "application/json"
    records = await gw.records()
    assert {r.api_key_id for r in records} == {caller_id(digest(GOOD))}
    assert GOOD not in repr(records)
    async with gw.get("/openai/v1/models", headers={"X-API-Key": GOOD}) as r:
        assert r.status == 200
    assert (await ask(gw, "local-key"))[0] == 200 and len(castai.calls) == 1  # config keys are never asked


async def test_an_invalid_key_is_a_401_cached_briefly(gateway, castai):
    gw = await gateway(config(castai, negativeTtl=0.2))
    status, _, body = await ask(gw, BAD)
    assert status == 401 and orjson.loads(body)["error"]["code"] == "invalid_api_key"
    assert (await ask(gw, BAD))[0] == 401 and len(castai.calls) == 1
    await asyncio.sleep(0.3)
    assert (await ask(gw, BAD))[0] == 401 and len(castai.calls) == 2
    assert (await ask(gw, None))[0] == 401 and len(castai.calls) == 2  # no key: not asked


async def test_concurrent_requests_with_one_key_ask_once(gateway, castai):
    castai.delay = 0.1
    gw = await gateway(config(castai))
    statuses = await asyncio.gather(*(ask(gw, OTHER) for _ in range(20)))
    assert {s for s, _, _ in statuses} == {200} and len(castai.calls) == 1


@pytest.mark.parametrize("outage", ["status", "down"])
async def test_an_outage_serves_cached_positives_and_refuses_unknown_keys(gateway, castai, outage):
    gw = await gateway(config(castai, positiveTtl=0.1, retryAfter=7))
    assert (await ask(gw, GOOD))[0] == 200
    await asyncio.sleep(0.2)  # the fresh answer is gone; the stale one stays for outages
    if outage == "status":
        castai.status = 502
    else:
        await castai.server.close()
    assert (await ask(gw, GOOD))[0] == 200
    status, headers, body = await ask(gw, OTHER)
    assert status == 503 and headers["Retry-After"] == "7"
    assert orjson.loads(body)["error"]["code"] == "verification_unavailable"


async def test_the_refuse_policy_and_revoked_keys(gateway, castai):
    gw = await gateway(config(castai, positiveTtl=0.1, outage="refuse"))
    assert (await ask(gw, GOOD))[0] == 200
    await asyncio.sleep(0.2)
    castai.status = 500
    assert (await ask(gw, GOOD))[0] == 503
    lenient = await gateway(config(castai, positiveTtl=0.1, negativeTtl=0.1))
    castai.status = None
    assert (await ask(lenient, OTHER))[0] == 200
    del castai.orgs[OTHER]  # revoked
    await asyncio.sleep(0.2)
    assert (await ask(lenient, OTHER))[0] == 401
    await asyncio.sleep(0.2)
    castai.status = 500
    assert (await ask(lenient, OTHER))[0] == 503  # a revoked key is not served from the outage stash


async def test_replicas_share_answers_through_redis_by_hash_only(gateway, castai, redis_url):
    from redis import asyncio as aioredis

    from proxy.state.redis import split_url

    one = await gateway({**config(castai), "storeUrl": redis_url, "secretKey": "shared"})
    two = await gateway({**config(castai), "storeUrl": redis_url, "secretKey": "shared"})
    assert (await ask(one, GOOD))[0] == 200
    assert (await ask(two, GOOD))[0] == 200 and len(castai.calls) == 1
    plain, prefix = split_url(redis_url)
    client = aioredis.from_url(plain)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    values = [await client.get(k) for k in keys if (await client.type(k)) == b"string"]
    await client.aclose()
    assert keys and not any(GOOD.encode() in k for k in keys) and not any(GOOD.encode() in (v or b"") for v in values)
