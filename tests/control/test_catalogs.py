"""The two catalog endpoints over real loopback HTTP: shapes (checked against JSON schemas of
docs/dialects.md, endpoints), filters, paging, caller-key auth and OpenAI-shaped errors."""

from __future__ import annotations

import aiohttp
import jsonschema
import pytest

from proxy.pipeline.auth import digest

HOSTED = "/ai-optimizer/v1beta/hosted-model-specs"
PROVIDERS = "/v1/llm/openai/supported-providers"
MODELS = ("/openai/v1/models", "/openai/models", "/v1/models", "/models")
CALLER = {"Authorization": "Bearer caller-key-0001"}
KEYS = {"auth": {"keys": [{"id": "caller", "sha256": digest("caller-key-0001")}], "adminKey": "admin-key-0001"}}

_NULLABLE_STRING = {"type": ["string", "null"]}
REGION = {
    "type": "object",
    "required": ["name", "pricePerHour", "cloud", "instanceType", "gpuCount", "gpuName"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "pricePerHour": {"type": "number", "minimum": 0},
        "cloud": {"type": "string", "minLength": 1},
        "instanceType": {"type": "string", "minLength": 1},
        "gpuCount": {"type": "integer", "minimum": 0},
        "gpuName": _NULLABLE_STRING,
    },
}
HOSTED_SPEC = {
    "type": "object",
    "required": ["model", "description", "cpu", "memoryMib", "provider", "tokensPerSecond", "createTime",
                 "quantization", "regions"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "cpu": {"type": "number", "exclusiveMinimum": 0},
        "memoryMib": {"type": "integer", "minimum": 256, "multipleOf": 256},
        "provider": {"enum": ["ollama", "vllm"]},
        "tokensPerSecond": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "createTime": {"type": "string",
                       "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"},
        "quantization": {"enum": ["Q2_K", "Q3_K_M", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
                                  "Q8_0", "F16", "BF16", "F32"]},
        "regions": {"type": "array", "minItems": 1, "items": REGION},
        "parameters": {"type": "integer", "minimum": 1},
        "contextTokens": {"type": "integer", "minimum": 1},
    },
}
PRICING = {
    "type": ["object", "null"],
    "required": ["inputPer1M", "outputPer1M", "cachedInputPer1M"],
    "properties": {"inputPer1M": {"type": "number"}, "outputPer1M": {"type": "number"},
                   "cachedInputPer1M": {"type": ["number", "null"]}},
}
MODALITIES = {"type": "array", "items": {"enum": ["text", "image", "embedding"]}, "uniqueItems": True}
PROVIDER_TYPE = {
    "type": "object",
    "required": ["provider", "supportedProvider", "routable", "modalities", "defaultUrl", "needsUrl",
                 "hostedByDefault", "models"],
    "additionalProperties": False,
    "properties": {
        "provider": {"type": "string", "pattern": "^[a-z_]+$"},
        "supportedProvider": {"type": "string", "pattern": "^[A-Z_]+$"},
        "routable": {"type": "boolean"},
        "modalities": MODALITIES,
        "defaultUrl": _NULLABLE_STRING,
        "needsUrl": {"type": "boolean"},
        "hostedByDefault": {"type": "boolean"},
        "models": {"type": "array", "items": {
            "type": "object",
            "required": ["model", "type", "contextWindow", "modalities", "qualityScore", "pricing",
                         "hostedPricePer1M", "autoRoutable", "served"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string"}, "type": {"enum": ["chat", "embedding"]},
                "contextWindow": {"type": ["integer", "null"], "minimum": 1}, "modalities": MODALITIES,
                "qualityScore": {"type": ["number", "null"], "minimum": 0, "maximum": 1}, "pricing": PRICING,
                "hostedPricePer1M": {"type": ["number", "null"], "minimum": 0},
                "autoRoutable": {"type": "boolean"}, "served": {"type": "boolean"},
            },
        }},
    },
}


def _page_schema(item: dict) -> dict:
    return {"type": "object", "required": ["items", "nextCursor"], "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": item}, "nextCursor": _NULLABLE_STRING}}


ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"]}}}


async def _walk(gw, path: str, limit: int, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        async with gw.get(path, params=query, headers=CALLER) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        jsonschema.validate(body, _page_schema(HOSTED_SPEC if path == HOSTED else PROVIDER_TYPE))
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items


async def test_hosted_specs_page_through_every_spec_in_the_schema(gateway):
    gw = await gateway(KEYS)
    items = await _walk(gw, HOSTED, 7)
    assert len(items) >= 20
    keys = [(i["model"], i["provider"], i["quantization"]) for i in items]
    assert len(set(keys)) == len(keys)
    async with gw.get(HOSTED, headers=CALLER) as r:  # the default limit returns them all here
        assert (await r.json())["items"] == items


@pytest.mark.parametrize(("params", "check"), [
    ({"provider": "vllm"}, lambda i: i["provider"] == "vllm"),
    ({"quantization": "Q4_K_M"}, lambda i: i["quantization"] == "Q4_K_M"),
    ({"cloud": "gcp"}, lambda i: {r["cloud"] for r in i["regions"]} == {"gcp"}),
    ({"region": "eastus"}, lambda i: {r["name"] for r in i["regions"]} == {"eastus"}),
    ({"maxMemoryMib": "4096"}, lambda i: i["memoryMib"] <= 4096),
    ({"provider": "ollama", "cloud": "azure", "maxMemoryMib": "8192"},
     lambda i: i["provider"] == "ollama" and i["memoryMib"] <= 8192 and {r["cloud"] for r in i["regions"]} == {"azure"}),
])
async def test_hosted_spec_filters(gateway, params, check):
    gw = await gateway(KEYS)
    everything = await _walk(gw, HOSTED, 200)
    items = await _walk(gw, HOSTED, 3, **params)
    assert items and len(items) < len(everything)
    assert all(check(i) for i in items)


async def test_config_entries_add_and_override_specs(gateway):
    spec = {"model": "team/llama-ft", "provider": "vllm", "parameters": 8_030_261_248, "quantization": "BF16",
            "createTime": "2025-03-01T00:00:00Z", "tokensPerSecond": 900, "hardware": ["1xL40S"],
            "architecture": {"layers": 32, "kvHeads": 8, "headDim": 128}, "contextTokens": 32768}
    gw = await gateway({**KEYS, "catalog": {"hostedModels": [spec]}})
    found = await _walk(gw, HOSTED, 5, provider="vllm", quantization="bf16", maxMemoryMib="40000", region="us-east-1")
    (item,) = [i for i in found if i["model"] == "team/llama-ft"]
    # 15316.5 MiB of weights + 4096 MiB KV at 32K + 512 + 1531.6 = 21456.1 → 84 × 256
    assert item["memoryMib"] == 21504 and item["tokensPerSecond"] == 900
    jsonschema.validate(item, HOSTED_SPEC)


async def test_supported_providers_shape_and_routability(gateway):
    providers = [{"name": "m", "supportedProvider": "MOCK", "models": ["gpt-4o", "mock-gpt"]}]
    gw = await gateway({**KEYS, "providers": providers})
    items = await _walk(gw, PROVIDERS, 4)
    by_type = {i["supportedProvider"]: i for i in items}
    assert by_type["MOCK"]["routable"] is True and by_type["OPENAI"]["routable"] is False
    mock_models = {m["model"]: m for m in by_type["MOCK"]["models"]}
    assert mock_models["gpt-4o"]["served"] is True and mock_models["gpt-4o"]["pricing"]["inputPer1M"] == 2.5
    openai_models = {m["model"] for m in by_type["OPENAI"]["models"]}
    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"} <= openai_models
    assert "llama3.1:8b" in {m["model"] for m in by_type["OLLAMA"]["models"]}


@pytest.mark.parametrize("path", [HOSTED, PROVIDERS])
async def test_catalogs_need_a_caller_key_or_the_admin_key(gateway, path):
    gw = await gateway(KEYS)
    async with gw.get(path) as r:
        assert r.status == 401
        jsonschema.validate(await r.json(), ERROR)
    async with gw.get(path, headers={"X-API-Key": "wrong-key"}) as r:
        assert r.status == 401
    async with gw.get(path, headers=CALLER) as r:
        assert r.status == 200
    async with gw.get(path, headers={"Authorization": "Bearer admin-key-0001"}) as r:
        assert r.status == 200  # the admin key is no caller key here, and reads them all the same
        assert (await r.json())["items"]


async def test_the_admin_key_from_the_environment_reads_catalogs_and_models(gateway_process, fake_openai):
    """As an operator runs it: ADMIN_API_KEY set, caller keys in the config, the admin key not
    among them. It reads both catalogs and every alias of the model list (all models); a wrong
    key is still a 401 on each, and the caller key's allowance still narrows its list."""
    from tests.conftest import openai_provider

    keys = [{"id": "narrow", "sha256": digest("caller-key-0001"), "models": ["a-model"]}]
    gw = await gateway_process({"auth": {"keys": keys},
                                "providers": [openai_provider(fake_openai, models=("a-model", "b-model"))]},
                               env={"ADMIN_API_KEY": "admin-key-from-env-0001"})
    admin = {"Authorization": "Bearer admin-key-from-env-0001"}
    async with aiohttp.ClientSession() as session:
        for path in (HOSTED, PROVIDERS, *MODELS):
            async with session.get(gw.url + path, headers=admin) as r:
                assert r.status == 200, path
                body = await r.json()
            if path in MODELS:
                assert [m["id"] for m in body["data"]] == ["a-model", "b-model"]
            async with session.get(gw.url + path, headers={"X-API-Key": "admin-key-from-env-0002"}) as r:
                assert r.status == 401, path
        async with session.get(gw.url + "/v1/models", headers=CALLER) as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["a-model"]
        async with session.post(gw.url + "/v1/llm/providers", headers=CALLER, json={"providers": []}) as r:
            assert r.status == 401  # a caller key is still no admin key


@pytest.mark.parametrize(("path", "query", "param"), [
    (HOSTED, "limit=0", "limit"),
    (HOSTED, "limit=201", "limit"),
    (HOSTED, "limit=ten", "limit"),
    (HOSTED, "limit=", "limit"),
    (HOSTED, "cursor=%25%25%25", "cursor"),
    (HOSTED, "maxMemoryMib=-1", "maxMemoryMib"),
    (HOSTED, "quantization=Q9_Z", "quantization"),
    (HOSTED, "provider=vllm&provider=ollama", "provider"),
    (HOSTED, "colour=blue", "colour"),
    (PROVIDERS, "provider=vllm", "provider"),
    (PROVIDERS, "limit=-3", "limit"),
])
async def test_bad_queries_are_openai_shaped_400s(gateway, path, query, param):
    gw = await gateway(KEYS)
    async with gw.get(f"{path}?{query}", headers=CALLER) as r:
        assert r.status == 400
        body = await r.json()
    jsonschema.validate(body, ERROR)
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param
