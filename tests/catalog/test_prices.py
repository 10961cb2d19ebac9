"""Prices: the bundled table, overrides, provider-prefixed names, cached input."""

from __future__ import annotations

from proxy.catalog.prices import Price, Prices, bundled


def test_the_bundled_table_loads_and_costs_per_million_tokens():
    table = bundled()
    assert table and all(p.input >= 0 and p.output >= 0 for p in table.values())
    prices = Prices({"m": Price(input=2.0, output=8.0, cached_input=0.5)})
    assert prices.cost("m", 1_000_000, 0) == 2.0
    assert prices.cost("m", 1_000_000, 500_000, cached=400_000) == (600_000 * 2 + 400_000 * 0.5 + 500_000 * 8) / 1e6
    assert prices.cost("provider/m", 1_000_000, 0) == 2.0
    assert prices.cost("unknown", 10, 10) is None and prices.get(None) is None


def test_a_provider_override_wins_for_that_provider_only():
    prices = Prices({"gpt-4o-mini": Price(input=1.0, output=1.0), "azure-eu/gpt-4o-mini": Price(input=3.0, output=3.0)})
    assert prices.cost("gpt-4o-mini", 1_000_000, 0) == 1.0
    assert prices.cost("gpt-4o-mini", 1_000_000, 0, provider="azure-eu") == 3.0
    assert prices.cost("gpt-4o-mini", 1_000_000, 0, provider="openai") == 1.0


async def test_the_config_prices_the_records(gateway, fake_openai):
    from tests.conftest import openai_provider

    gw = await gateway({"providers": [openai_provider(fake_openai, models=("gpt-4o-mini",))],
                        "prices": {"fake/gpt-4o-mini": {"input": 100.0, "output": 1000.0, "cachedInput": 10.0}}})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with gw.post("/v1/chat/completions", json=body) as r:
        assert r.status == 200
    (record,) = await gw.records()
    # the fake reports 12 prompt tokens (2 cached) and 10 completion tokens
    assert abs(record.cost_usd - (10 * 100.0 + 2 * 10.0 + 10 * 1000.0) / 1e6) < 1e-12


def test_a_bad_price_override_stops_the_start():
    import msgspec
    import pytest

    from proxy.config import Config

    with pytest.raises(msgspec.ValidationError, match=r"prices"):
        msgspec.convert({"prices": {"m": {"input": 1, "output": 1, "cachedinput": 1}}}, type=Config)


def test_a_dated_snapshot_is_priced_as_its_model():
    prices = Prices({"azure-eu/gpt-4o-mini": Price(input=3.0, output=3.0)})
    listed = prices.get("gpt-4o-mini")
    for served in ("gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini-0125"):
        assert prices.get(served) == listed
    assert prices.get("gpt-4o-mini-2024-07-18", "azure-eu") == Price(input=3.0, output=3.0)
    assert prices.get("gemini-1.5-flash-001") == prices.get("gemini-1.5-flash")
    assert prices.get("claude-3-5-haiku-20241022") is not None  # listed with its date: found as is
    assert prices.get("gpt-4o-mini-v2") is None and prices.get("no-such-model-2024-07-18") is None
    assert Prices.same_model("gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    assert Prices.same_model("openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert not Prices.same_model("gpt-4o-2024-08-06", "gpt-4o-mini") and not Prices.same_model(None, "gpt-4o")


async def test_a_provider_answering_with_a_dated_model_is_charged_not_counted_as_savings(gateway, fake_openai):
    """OpenAI answers `gpt-4o-mini` with `"model": "gpt-4o-mini-2024-07-18"`: the record must carry
    the model's price, and no savings (it was served as asked), not a cost of 0."""
    import orjson

    from tests.conftest import openai_provider
    from tests.fakes.openai import Behaviour, completion

    answer = {**completion("gpt-4o-mini-2024-07-18", Behaviour()), "model": "gpt-4o-mini-2024-07-18"}
    fake_openai.on("gpt-4o-mini", Behaviour(body=orjson.dumps(answer)))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("gpt-4o-mini",))]})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with gw.post("/v1/chat/completions", json=body) as r:
        assert r.status == 200
    (record,) = await gw.records()
    assert record.model_served == "gpt-4o-mini-2024-07-18"
    # 12 prompt tokens (2 cached) and 10 completion tokens at the bundled gpt-4o-mini price
    assert abs(record.cost_usd - (10 * 0.15 + 2 * 0.075 + 10 * 0.6) / 1e6) < 1e-12
    assert record.savings_usd == 0.0


def test_a_cross_region_inference_profile_is_priced_as_its_model():
    prices = Prices()
    listed = prices.get("anthropic.claude-sonnet-4-20250514-v1:0")
    assert listed is not None
    for profile in ("us.", "eu.", "apac.", "global."):
        assert prices.get(profile + "anthropic.claude-sonnet-4-20250514-v1:0") == listed
    assert Prices.same_model("us.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4-20250514-v1:0")
    assert prices.get("us.unknown-model") is None  # a prefix alone prices nothing


def test_what_get_found_is_kept_per_model_and_provider_and_bounded(monkeypatch):
    from proxy.catalog import prices as module

    prices = Prices({"azure-eu/gpt-4o-mini": Price(input=3.0, output=3.0)})
    listed, azure = prices.get("gpt-4o-mini"), prices.get("gpt-4o-mini", "azure-eu")
    for _ in range(2):  # the second time from what was kept: the same answers, the provider told apart
        assert prices.get("gpt-4o-mini-2024-07-18") == listed and prices.get("no-such-model") is None
        assert prices.get("gpt-4o-mini-2024-07-18", "azure-eu") == azure != listed
    monkeypatch.setattr(module, "_NAMES_KEPT", 10)
    for i in range(50):  # names a provider made up: what is kept stays bounded
        assert prices.get(f"made-up-{i}") is None
    assert len(prices._found) <= 10 and prices.get("gpt-4o-mini") == listed
