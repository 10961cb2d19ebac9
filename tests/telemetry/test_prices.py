"""Prices: the bundled table, overrides, provider-prefixed names, cached input."""

from __future__ import annotations

from proxy.telemetry.prices import Price, Prices, bundled


def test_the_bundled_table_loads_and_costs_per_million_tokens():
    table = bundled()
    assert table and all(p.input >= 0 and p.output >= 0 for p in table.values())
    prices = Prices({"m": Price(input=2.0, output=8.0, cached_input=0.5)})
    assert prices.cost("m", 1_000_000, 0) == 2.0
    assert prices.cost("m", 1_000_000, 500_000, cached=400_000) == (600_000 * 2 + 400_000 * 0.5 + 500_000 * 8) / 1e6
    assert prices.cost("provider/m", 1_000_000, 0) == 2.0
    assert prices.cost("unknown", 10, 10) is None and prices.get(None) is None
