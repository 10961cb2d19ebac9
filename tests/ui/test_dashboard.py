"""The dashboard in a real browser: a real gateway, real requests through it, then /ui in Chromium.

Screenshots of the main states go to artifacts/ui/ (git-ignored): look at them after a change.
"""

from __future__ import annotations

import datetime
import time

import pytest

from proxy.catalog.prices import Price, Prices
from tests.conftest import ADMIN_KEY
from tests.telemetry.helpers import record
from tests.ui.conftest import in_browser

MOCK = {"name": "mock", "supportedProvider": "MOCK", "apiKey": "sk-mock-provider-key-9876",
        "models": ["mock-gpt", "mock-gpt-mini", "mock-gpt-500"], "isHosted": True}
CONFIG = {"auth": {"adminKey": ADMIN_KEY}, "providers": [MOCK], "cache": {"enabled": True}}
# The mock models are free: list prices for them make cost and (on cache hits) savings visible.
PRICES = {"mock-gpt": Price(input=2500.0, output=10000.0), "mock-gpt-mini": Price(input=150.0, output=600.0)}
ERRORS = ("completed", "client_aborted")


@pytest.fixture
def dashboard(chrome):
    from tests.ui.page import Dashboard

    return lambda gw: Dashboard(chrome, gw.url)


async def _traffic(gw) -> list:
    """A few models, two tags, one cached answer (savings), one stream and one upstream error."""
    gw.gw.prices = Prices(PRICES)
    calls = [("mock-gpt", "team:a", False, True), ("mock-gpt", "team:a", False, True),
             ("mock-gpt", "team:a", False, True), ("mock-gpt-mini", "team:b", False, False),
             ("mock-gpt-mini", "team:b", True, False), ("mock-gpt-500", "team:a", False, False)]
    for n, (model, tag, stream, cached) in enumerate(calls):
        text = "the same question" if cached else f"question {n} " * (n + 1)
        headers = {"X-Tags": tag, **({"X-Cache": "use"} if cached else {})}
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
        async with gw.post("/v1/chat/completions", json=body, headers=headers) as r:
            await r.read()
    return await gw.records()


def _check_totals(page, records) -> None:
    assert page.total("requests") == str(len(records))
    assert page.total("errors") == str(sum(r.status not in ERRORS for r in records)) == "1"
    assert page.total("inputTokens") == str(sum(r.prompt_tokens for r in records))
    assert page.total("outputTokens") == str(sum(r.completion_tokens for r in records))
    assert float(page.total("costUsd")) == pytest.approx(sum(r.cost_usd for r in records), abs=1e-9)
    assert float(page.total("savingsUsd")) == pytest.approx(sum(r.savings_usd for r in records), abs=1e-9)
    assert float(page.total("savingsUsd")) > 0  # the cache hits
    assert page.card("requests") == ("6", "")
    assert page.card("errors")[1] == "16.7% of requests"


def _logged_in(page, records) -> None:
    page.open()
    page.shown("#login")
    page.log_in(ADMIN_KEY)
    page.loaded()
    _check_totals(page, records)
    assert ADMIN_KEY not in page.driver.current_url
    assert page.driver.execute_script("return sessionStorage.getItem('aiEnablerProxy.adminKey')") == ADMIN_KEY
    rows = {r[0]: r for r in page.rows()}
    assert {k: int(v[1]) for k, v in rows.items()} == {"mock-gpt": 3, "mock-gpt-mini": 2, "mock-gpt-500": 1}
    assert rows["mock-gpt-500"][2] == "1"  # errors
    assert len(page.driver.find_elements("css selector", "#chart-requests rect.seg")) >= 3
    assert [r[0] for r in page.rows("#providers")] == ["mock"]
    provider = page.rows("#providers")[0]
    assert provider[3] == "…9876" and "closed" in provider[5] and provider[6] == "0"
    assert "sk-mock-provider-key" not in page.driver.page_source


def _grouped_sorted_and_downloaded(page, records) -> None:
    page.group_by("tag", "tag")
    team_a = [r for r in records if "team:a" in r.tags]
    assert {r[0]: int(r[1]) for r in page.rows()} == {"team:a": len(team_a), "team:b": 2}
    legend = [li.text for li in page.driver.find_elements("css selector", "#legend li")]
    assert sorted(legend) == ["team:a", "team:b"]
    page.sort("requests")
    assert [r[0] for r in page.rows()] == ["team:a", "team:b"]
    page.sort("requests")
    assert [r[0] for r in page.rows()] == ["team:b", "team:a"]
    assert page.find('#groups th[aria-sort="ascending"]').text.startswith("Requests")
    rows = page.download_csv()
    assert rows[0] == ["tag", "requests", "errors", "inputTokens", "outputTokens", "costUsd", "savingsUsd",
                       "avgLatencyMs", "avgTtftMs"]
    assert [r[0] for r in rows[1:]] == ["team:b", "team:a"]  # as sorted on the page
    by_tag = {r[0]: r for r in rows[1:]}
    assert int(by_tag["team:a"][1]) == len(team_a) and int(by_tag["team:a"][2]) == 1
    assert int(by_tag["team:a"][3]) == sum(r.prompt_tokens for r in team_a)
    assert float(by_tag["team:a"][5]) == pytest.approx(sum(r.cost_usd for r in team_a), abs=1e-9)
    page.group_by("provider", "provider")
    assert [r[:2] for r in page.rows()] == [["mock", "4"], ["(none)", "2"]]  # cache hits reach no provider


async def test_the_dashboard_shows_what_the_gateway_recorded(gateway, dashboard):
    began = time.monotonic()
    gw = await gateway(CONFIG)
    records = await _traffic(gw)
    assert len(records) == 6 and sum(r.cache_hit for r in records) == 2
    page = dashboard(gw)
    page.driver.get_log("browser")  # what earlier tests left
    await in_browser(_logged_in, page, records)
    shot = await in_browser(page.screenshot, "dashboard-1280")
    assert shot.stat().st_size > 10_000
    await in_browser(page.viewport, 375, 812, True)
    assert not await in_browser(page.overflows)  # wide tables scroll inside their panel, not the page
    await in_browser(page.screenshot, "dashboard-375", 375, True)
    await in_browser(page.viewport, 1280)
    await in_browser(_grouped_sorted_and_downloaded, page, records)
    problems = [e["message"] for e in page.driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems  # no script error, no CSP violation, no failed fetch
    assert time.monotonic() - began < 30


def _wrong_key(page) -> str:
    page.open()
    page.log_in("not-the-admin-key")
    return page.shown("#login-error").text


def _refresh_fails(page) -> str:
    page.find("#refresh").click()
    return page.shown("#banner").text


async def test_a_wrong_key_and_a_gateway_gone_say_so(gateway, dashboard):
    gw = await gateway(CONFIG)
    page = dashboard(gw)
    page.driver.get_log("browser")
    message = await in_browser(_wrong_key, page)
    assert "refused this admin key" in message and "401" in message
    # Chromium logs the refused call: the console check of the first test does see such things.
    assert any("401" in e["message"] for e in page.driver.get_log("browser"))
    assert page.driver.execute_script("return sessionStorage.getItem('aiEnablerProxy.adminKey')") is None
    await in_browser(page.screenshot, "wrong-key")
    await in_browser(page.log_in, ADMIN_KEY)
    await in_browser(page.loaded)
    await gw.server.close()  # the gateway goes away under an open page
    message = await in_browser(_refresh_fails, page)
    assert f"Cannot reach the gateway at {gw.url}" in message
    assert page.find("#retry").is_displayed()
    await in_browser(page.screenshot, "gateway-down")


def _empty(page) -> tuple:
    page.open()
    page.log_in(ADMIN_KEY)
    page.loaded()
    return page.shown("#empty").text, page.find("#charts-panel").is_displayed()


def _big(page) -> dict:
    page.find("#refresh").click()
    page.loaded()
    cards = {name: page.card(name) for name in ("requests", "inputTokens", "outputTokens", "costUsd")}
    cards["rows"] = page.rows()
    return cards


async def test_empty_state_and_large_numbers(gateway, dashboard):
    gw = await gateway(CONFIG)
    page = dashboard(gw)
    text, charts_shown = await in_browser(_empty, page)
    assert "No requests in this window" in text and not charts_shown
    assert page.total("requests") == "0" and page.card("costUsd")[0] == "$0.00"
    await in_browser(page.screenshot, "empty")
    now = time.time()
    await gw.gw.store.send([record(i, ts=now - 60 * i, prompt_tokens=1_234_567_890, completion_tokens=98_765,
                                   cost_usd=12_345.678, savings_usd=2_000.5, model_served=f"model-{i % 9}",
                                   tags=[]) for i in range(1, 1300)])
    cards = await in_browser(_big, page)
    assert cards["requests"] == ("1.3K", "1,299")
    assert cards["inputTokens"][0] == "1.6T" and cards["inputTokens"][1] == f"{1_234_567_890 * 1299:,}"
    assert cards["costUsd"][0] == "$16M" and cards["costUsd"][1] == "$16,037,035.72"
    assert [li.text for li in page.driver.find_elements("css selector", "#legend li")][-1] == "Other (2)"
    assert cards["rows"][0][1] in ("145", "144") and "," in cards["rows"][0][3]
    await in_browser(page.screenshot, "large-numbers")
    minute = now // 60 * 60  # a custom window is whole minutes, [from, to) like the API's
    start, end = minute - 120 * 60, minute - 30 * 60
    inside = sum(start <= now - 60 * i < end for i in range(1, 1300))
    await in_browser(page.custom_window, _minute(start), _minute(end))
    assert page.total("requests") == str(inside) == "90"


def _minute(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M")


def _formats(driver) -> dict:
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('./ui/format.js').then((f) => done({
          count: f.count(1234567), compact: [f.compact(999), f.compact(12345), f.compact(1234567)],
          usd: [f.usd(0), f.usd(0.00123456), f.usd(1234.5), f.usd(12345678, true)],
          ms: [f.ms(null), f.ms(850.4), f.ms(1250)], pct: [f.percent(1, 3), f.percent(1, 100000)],
          every: [f.every("1m"), f.every("30m"), f.every("1d"), f.every("6h")],
          csv: f.csv([["model", "n"], ["=cmd()", 1], ['a,"b"', null]])}));""")


async def test_number_formats_and_csv_cells(gateway, dashboard):
    gw = await gateway(CONFIG)
    page = dashboard(gw)
    await in_browser(page.driver.get, gw.url + "/ui")
    got = await in_browser(_formats, page.driver)
    assert got["count"] == "1,234,567" and got["compact"] == ["999", "12.3K", "1.2M"]
    assert got["usd"] == ["$0.00", "$0.001235", "$1,234.50", "$12.3M"]
    assert got["ms"] == ["—", "850 ms", "1.25 s"] and got["pct"] == ["33.3%", "<0.1%"]
    assert got["every"] == ["minute", "30 minutes", "day", "6 hours"]
    assert got["csv"] == 'model,n\r\n\'=cmd(),1\r\n"a,""b""",\r\n'  # no formula runs in a spreadsheet
