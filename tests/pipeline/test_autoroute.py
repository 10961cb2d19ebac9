"""Cost routing: the scoring table, the header, the candidate set (prices, quality, the caller's
allowance, open circuits, hosted pricing) and, through real HTTP, `auto` end to end with its
usage records and savings."""

from __future__ import annotations

import math

import pytest

from proxy.catalog.prices import Prices
from proxy.errors import InvalidRequest
from proxy.pipeline.auth import digest
from proxy.pipeline.autoroute import HEADER, Candidate, candidates, choose, quality_weight

MESSAGES = [{"role": "user", "content": "Say hello"}]
# Five priced models, each on its own in-process MOCK provider, so circuits open per model.
LADDER = ("gpt-4.1-nano", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini", "o3")


def mock(name: str, *models: str, **extra) -> dict:
    return {"name": name, "supportedProvider": "MOCK", "models": list(models), **extra}


def ladder() -> list[dict]:
    return [mock(f"mock-{i}", model) for i, model in enumerate(LADDER)]


# -- choose: the scoring table -----------------------------------------------------------------
CHEAP, MID, BEST = Candidate("cheap", 0.5, 0.2), Candidate("mid", 0.7, 1.0), Candidate("best", 0.9, 10.0)


@pytest.mark.parametrize(("weight", "expected"), [
    (0.0, "cheap"), (0.3, "cheap"), (0.5, "mid"), (0.55, "mid"), (0.7, "best"), (1.0, "best"),
])
def test_choose_moves_from_cheapest_to_best(weight, expected):
    # q̂: cheap 0, mid 0.5, best 1. p̂ = ln(1+p) scaled: cheap 0, mid (ln 2 − ln 1.2)/(ln 11 − ln 1.2) = 0.2406, best 1.
    # w=0.3:  cheap 0;  mid 0.15 − 0.7 · 0.2406 = −0.0184;  best 0.3 − 0.7 = −0.4  → cheap
    # w=0.5:  cheap 0;  mid 0.25 − 0.5 · 0.2406 = 0.1297;   best 0.5 − 0.5 = 0     → mid
    # w=0.55: cheap 0;  mid 0.275 − 0.45 · 0.2406 = 0.1667; best 0.55 − 0.45 = 0.1 → mid
    # w=0.7:  cheap 0;  mid 0.35 − 0.3 · 0.2406 = 0.2778;   best 0.7 − 0.3 = 0.4   → best
    assert choose([BEST, CHEAP, MID], weight).model == expected


@pytest.mark.parametrize(("pool", "weight", "expected", "why"), [
    ([Candidate("a", 0.5, 1.0), Candidate("b", 0.8, 1.0)], 0.0, "b", "same price: the better"),
    ([Candidate("a", 0.8, 3.0), Candidate("b", 0.8, 1.0)], 1.0, "b", "same quality: the cheaper"),
    ([Candidate("z", 0.6, 2.0), Candidate("y", 0.6, 2.0)], 0.5, "y", "identical: the first by name"),
    ([Candidate("a", 0.2, 0.0), Candidate("b", 1.0, 4.0)], 0.5, "a", "equal scores (0 and 0): the cheaper"),
    ([Candidate("only", 0.1, 9.0)], 0.7, "only", "one candidate"),
])
def test_choose_breaks_ties_deterministically(pool, weight, expected, why):
    assert choose(pool, weight).model == expected, why
    assert choose(list(reversed(pool)), weight).model == expected, why


def test_choose_refuses_an_empty_pool():
    with pytest.raises(ValueError):
        choose([], 0.5)


# -- the header ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [(None, 0.25), ("0", 0.0), ("1", 1.0), (" 0.75 ", 0.75), ("1e-1", 0.1)])
def test_quality_weight_header(value, expected):
    headers = {} if value is None else {HEADER: value}
    assert quality_weight(headers, 0.25) == expected


@pytest.mark.parametrize("value", ["", "high", "1.5", "-0.1", "nan", "inf", "0,5"])
def test_a_bad_quality_weight_is_a_400(value):
    with pytest.raises(InvalidRequest) as caught:
        quality_weight({HEADER: value}, 0.5)
    assert caught.value.status == 400 and caught.value.param == HEADER


# -- candidates ----------------------------------------------------------------------------------
def _names(found: list[Candidate]) -> list[str]:
    return sorted(c.model for c in found)


async def test_candidates_need_a_price_a_quality_and_a_provider(gateway):
    gw = (await gateway({"providers": [mock("m", "gpt-4o", "unpriced-model", "text-embedding-3-small")]})).gw
    assert _names(candidates(gw, None, "chat")) == ["gpt-4o"]  # o3 etc. are priced but unserved
    assert _names(candidates(gw, None, "embeddings")) == ["text-embedding-3-small"]
    (found,) = candidates(gw, None, "chat")
    assert found.price == pytest.approx((3 * 2.5 + 10.0) / 4) and found.quality == 0.8


async def test_candidates_follow_the_callers_allowance_and_an_alias_list(gateway):
    gw = (await gateway({"providers": ladder()})).gw
    assert _names(candidates(gw, frozenset({"o3", "gpt-4o-mini", "gpt-4o"}), "chat")) == ["gpt-4o-mini", "o3"]
    assert _names(candidates(gw, None, "chat", among=("o3", "o4-mini"))) == ["o3", "o4-mini"]
    assert candidates(gw, frozenset({"o3"}), "chat", among=("o4-mini",)) == []


async def test_a_model_whose_every_provider_is_open_is_skipped(gateway):
    providers = [*ladder(), mock("backup-o3", "o3")]
    gw = (await gateway({"providers": providers})).gw
    gw.router.failed("mock-4", retry_after=60)  # o3's first provider: its backup still serves it
    assert "o3" in _names(candidates(gw, None, "chat"))
    gw.router.failed("backup-o3", retry_after=60)
    assert "o3" not in _names(candidates(gw, None, "chat"))
    for i in range(len(LADDER)):
        gw.router.failed(f"mock-{i}", retry_after=60)
    # Nothing closed is left: like the router, fall back to every model rather than none.
    assert _names(candidates(gw, None, "chat")) == sorted(LADDER)


async def test_hosted_providers_are_priced_by_the_hour(gateway):
    spec = {"model": "team-llama", "provider": "vllm", "parameters": 8_000_000_000, "quantization": "Q8_0",
            "createTime": "2025-01-01T00:00:00Z", "tokensPerSecond": 500,
            "regions": [{"name": "dc-1", "pricePerHour": 1.8, "cloud": "onprem", "instanceType": "box"}]}
    config = {"catalog": {"hostedModels": [spec], "qualityScores": {"team-llama": 0.6}},
              "providers": [mock("own", "team-llama", isHosted=True), mock("api", "gpt-4o-mini")]}
    gw = (await gateway(config)).gw
    found = {c.model: c for c in candidates(gw, None, "chat")}
    assert found["team-llama"].price == pytest.approx(1.8 / (500 * 3600) * 1e6)  # 1.00 USD per 1M
    assert found["gpt-4o-mini"].price == pytest.approx((3 * 0.15 + 0.6) / 4)


async def test_a_hosted_model_without_a_quality_score_is_not_a_candidate(gateway):
    spec = {"model": "team-llama", "provider": "vllm", "parameters": 8_000_000_000, "quantization": "Q8_0",
            "createTime": "2025-01-01T00:00:00Z", "tokensPerSecond": 500, "hardware": ["1xL40S"]}
    gw = (await gateway({"catalog": {"hostedModels": [spec]},
                         "providers": [mock("own", "team-llama", isHosted=True)]})).gw
    assert candidates(gw, None, "chat") == []


# -- through HTTP --------------------------------------------------------------------------------
async def _ask(gw, model: str = "auto", headers: dict | None = None, **extra):
    body = {"model": model, "messages": MESSAGES, **extra}
    async with gw.post("/v1/chat/completions", json=body, headers=headers or {}) as r:
        return r.status, (await r.json() if not extra.get("stream") else await r.read())


@pytest.mark.parametrize(("weight", "expected"), [
    (None, "gpt-4.1-mini"),  # the config default, routing.qualityWeight = 0.5
    ("0", "gpt-4.1-nano"), ("0.3", "gpt-4o-mini"), ("0.6", "o4-mini"), ("1", "o3"),
])
async def test_auto_routes_by_the_weight_header(gateway, weight, expected):
    gw = await gateway({"providers": ladder()})
    status, body = await _ask(gw, headers={} if weight is None else {HEADER: weight})
    assert status == 200 and body["model"] == expected
    (record,) = await gw.records()
    assert (record.model_requested, record.model_served) == ("auto", expected)


async def test_the_configured_default_weight_applies_without_the_header(gateway):
    gw = await gateway({"providers": ladder(), "routing": {"qualityWeight": 1.0}})
    assert (await _ask(gw))[1]["model"] == "o3"


async def test_a_bad_header_is_an_openai_shaped_400(gateway):
    gw = await gateway({"providers": ladder()})
    status, body = await _ask(gw, headers={HEADER: "2"})
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == HEADER
    status, _ = await _ask(gw, "gpt-4o-mini", headers={HEADER: "cheap"})
    assert status == 400


async def test_the_header_alone_routes_a_named_model_and_savings_use_that_model(gateway):
    gw = await gateway({"providers": ladder()})
    status, body = await _ask(gw, "o3", headers={HEADER: "0"})
    assert status == 200 and body["model"] == "gpt-4.1-nano"
    (record,) = await gw.records()
    prices = Prices()
    expected = prices.cost("o3", record.prompt_tokens, record.completion_tokens) - prices.cost(
        "gpt-4.1-nano", record.prompt_tokens, record.completion_tokens)
    assert record.model_requested == "o3" and record.savings_usd == pytest.approx(expected)


async def test_a_restricted_caller_only_gets_its_models(gateway):
    keys = [{"id": "narrow", "sha256": digest("narrow-key-0001"), "models": ["gpt-4o-mini", "o4-mini"]}]
    gw = await gateway({"providers": ladder(), "auth": {"keys": keys}})
    auth = {"X-API-Key": "narrow-key-0001"}
    assert (await _ask(gw, headers={**auth, HEADER: "0"}))[1]["model"] == "gpt-4o-mini"
    assert (await _ask(gw, headers={**auth, HEADER: "1"}))[1]["model"] == "o4-mini"
    status, body = await _ask(gw, headers={"X-API-Key": "narrow-key-0001"}, model="o3")
    assert status == 403  # no header: a named model is not rerouted


async def test_an_open_circuit_moves_auto_to_the_next_best(gateway):
    gw = await gateway({"providers": ladder()})
    gw.gw.router.failed("mock-4", retry_after=60)  # o3
    assert (await _ask(gw, headers={HEADER: "1"}))[1]["model"] == "o4-mini"


async def test_no_candidate_is_a_404(gateway):
    keys = [{"id": "narrow", "sha256": digest("narrow-key-0001"), "models": ["unpriced-model"]}]
    gw = await gateway({"providers": [mock("m", "unpriced-model", "o3")], "auth": {"keys": keys}})
    status, body = await _ask(gw, headers={"X-API-Key": "narrow-key-0001"})
    assert status == 404 and body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    (record,) = await gw.records()
    assert record.model_requested == "auto" and record.status == "rejected"


async def test_an_alias_has_its_own_models_and_weight(gateway):
    aliases = [{"name": "fast", "models": ["gpt-4.1-nano", "gpt-4o-mini", "o4-mini"], "qualityWeight": 1.0}]
    gw = await gateway({"providers": ladder(), "catalog": {"autoModels": aliases}})
    assert (await _ask(gw, "fast"))[1]["model"] == "o4-mini"
    assert (await _ask(gw, "fast", headers={HEADER: "0"}))[1]["model"] == "gpt-4.1-nano"


async def test_auto_streams_name_the_served_model(gateway):
    gw = await gateway({"providers": ladder()})
    status, text = await _ask(gw, headers={HEADER: "0"}, stream=True)
    assert status == 200 and b'"model":"gpt-4.1-nano"' in text and text.endswith(b"data: [DONE]\n\n")
    (record,) = await gw.records()
    assert record.model_served == "gpt-4.1-nano" and record.stream is True


async def test_auto_embeddings_pick_among_embedding_models(gateway):
    gw = await gateway({"providers": [mock("m", "text-embedding-3-small", "text-embedding-3-large", "o3")]})
    for weight, expected in (("0", "text-embedding-3-small"), ("1", "text-embedding-3-large")):
        body = {"model": "auto", "input": "hello"}
        async with gw.post("/v1/embeddings", json=body, headers={HEADER: weight}) as r:
            assert r.status == 200 and (await r.json())["model"] == expected


# -- the demo ------------------------------------------------------------------------------------
async def test_demo_auto_moves_from_cheapest_to_best_and_records_savings(gateway):
    """MOCK serves five priced model names; `auto` climbs the ladder as the weight goes 0 → 1.

    Savings compare against the best-quality candidate (o3): what asking for the best would
    have cost at list price, minus what the chosen model cost.
    """
    gw = await gateway({"providers": [mock("mock", *LADDER)]})
    weights = ("0", "0.3", "0.5", "0.6", "1")
    picked = []
    for weight in weights:
        status, body = await _ask(gw, headers={HEADER: weight})
        assert status == 200
        picked.append(body["model"])
    assert picked == list(LADDER)
    records = sorted(await gw.records(), key=lambda r: r.ts)
    prices = Prices()
    print("\nweight  model served   tokens in/out  cost USD     savings USD (vs o3)")
    for weight, record in zip(weights, records, strict=True):
        best = prices.cost("o3", record.prompt_tokens, record.completion_tokens)
        assert record.model_requested == "auto" and record.model_served in LADDER
        assert record.savings_usd == pytest.approx(best - record.cost_usd)
        print(f"{weight:6}  {record.model_served:14} {record.prompt_tokens:4}/{record.completion_tokens:<4}     "
              f"{record.cost_usd:.8f}   {record.savings_usd:.8f}")
    savings = [r.savings_usd for r in records]
    assert savings == sorted(savings, reverse=True) and savings[-1] == 0.0 and savings[0] > 0
    assert not any(math.isnan(s) for s in savings)
