"""Usage over time: buckets against hand-computed sums, window edges, groups, and speed at scale."""

from __future__ import annotations

import random
import time

import pytest

from proxy.control import report, series
from proxy.errors import InvalidRequest
from proxy.telemetry.store import FIELDS, FIGURES, UsageStore, connect, row
from tests.conftest import ADMIN_KEY
from tests.telemetry.helpers import record

HOUR = 3600
T0 = 1_736_000_000 // HOUR * HOUR  # 2025-01-04T14:00:00Z, on the hour


def iso(ts: float) -> str:
    return report.iso(ts)


@pytest.fixture
async def store(tmp_path):
    s = UsageStore(str(tmp_path / "usage.db"))
    yield s
    s.close()


async def run(store, start, end, group_by="model", filter_=None, interval="1h") -> dict:
    query = report.parse(str(start), str(end), group_by, filter_)
    return await store.query(series.run, query, series.parse_interval(interval, query))


def figures(point: dict) -> tuple:
    return (point["requests"], point["errors"], point["inputTokens"], point["outputTokens"],
            round(point["costUsd"], 9), round(point["savingsUsd"], 9))


EMPTY = (0, 0, 0, 0, 0.0, 0.0)
# The window [T0 + 30 min, T0 + 3 h) touches three hourly buckets: T0 (cut), T0 + 1 h (empty), T0 + 2 h.
START, END = T0 + 1800, T0 + 3 * HOUR
EDGES = [
    record(1, ts=START - 0.001, model_served="m1", prompt_tokens=1000),            # before from: out
    record(2, ts=START, model_served="m1", prompt_tokens=10, completion_tokens=1,  # at from: in
           cost_usd=0.1, savings_usd=0.05),
    record(3, ts=T0 + HOUR - 0.5, model_served="m2", status="upstream_error", prompt_tokens=7,
           completion_tokens=0, cost_usd=0.0, savings_usd=0.0),
    record(4, ts=T0 + 2 * HOUR, model_served="m1", prompt_tokens=20, completion_tokens=2, cost_usd=0.2,
           savings_usd=0.0),
    record(5, ts=T0 + 2 * HOUR + 10, model_served="m1", prompt_tokens=30, completion_tokens=3, cost_usd=0.3,
           savings_usd=0.125, status="client_aborted"),
    record(6, ts=END - 0.001, model_served="m2", prompt_tokens=5, completion_tokens=5, cost_usd=1.5,
           savings_usd=0.25),
    record(7, ts=END, model_served="m1", prompt_tokens=1000),                        # at to: out
    record(8, ts=END + 5, model_served="m2", prompt_tokens=1000),                    # after: out
]


async def test_buckets_match_hand_computed_sums_with_empty_buckets_and_half_open_edges(store):
    await store.send(EDGES)
    got = await run(store, START, END)
    assert got["interval"] == "1h"
    assert [s["key"] for s in got["series"]] == ["m2", "m1"]  # by cost, as the report's groups
    by_key = {s["key"]: s["points"] for s in got["series"]}
    for points in by_key.values():
        assert [p["t"] for p in points] == [iso(T0), iso(T0 + HOUR), iso(T0 + 2 * HOUR)]
    assert [figures(p) for p in by_key["m1"]] == [(1, 0, 10, 1, 0.1, 0.05), EMPTY, (2, 0, 50, 5, 0.5, 0.125)]
    assert [figures(p) for p in by_key["m2"]] == [(1, 1, 7, 0, 0.0, 0.0), EMPTY, (1, 0, 5, 5, 1.5, 0.25)]
    assert by_key["m1"][0]["t"] == "2025-01-04T14:00:00Z"


async def test_a_window_on_bucket_edges_has_no_extra_bucket(store):
    await store.send(EDGES)
    got = await run(store, T0 + HOUR, T0 + 2 * HOUR)  # only the empty middle hour
    assert got["series"] == []
    got = await run(store, T0 + 2 * HOUR, END)
    assert {s["key"]: [figures(p) for p in s["points"]] for s in got["series"]} == {
        "m1": [(2, 0, 50, 5, 0.5, 0.125)], "m2": [(1, 0, 5, 5, 1.5, 0.25)]}


async def test_days_are_utc_days_and_an_empty_store_has_no_series(store):
    got = await run(store, T0, T0 + 3 * 86400, interval="1d")
    assert got == {"interval": "1d", "series": []}
    await store.send([record(1, ts=T0 + 86400, model_served="m1")])
    got = await run(store, T0, T0 + 3 * 86400, interval="1d")
    day = T0 // 86400 * 86400
    assert [p["t"] for p in got["series"][0]["points"]] == [iso(day + i * 86400) for i in range(4)]
    assert [p["requests"] for p in got["series"][0]["points"]] == [0, 1, 0, 0]
    assert got["series"][0]["points"][0]["t"].endswith("T00:00:00Z")


async def test_groups_keys_without_a_value_tags_and_filters(store):
    await store.send([
        record(1, ts=T0 + 10, provider=None, status="rejected", tags=[]),
        record(2, ts=T0 + 20, provider="p1", api_key_id="k1", tags=["team:a", "env:prod"]),
        record(3, ts=T0 + HOUR + 5, provider="p2", api_key_id="k2", tags=["team:b"], model_served="m9"),
    ])
    window = (T0, T0 + 2 * HOUR)

    async def keyed(group_by, filter_=None):
        got = await run(store, *window, group_by=group_by, filter_=filter_)
        return {s["key"]: [p["requests"] for p in s["points"]] for s in got["series"]}

    assert await keyed("provider") == {None: [1, 0], "p1": [1, 0], "p2": [0, 1]}
    assert await keyed("apiKey") == {"team-a": [1, 0], "k1": [1, 0], "k2": [0, 1]}
    assert await keyed("tag") == {"team:a": [1, 0], "env:prod": [1, 0], "team:b": [0, 1]}  # untagged: none
    assert await keyed("tag:team") == {"a": [1, 0], "b": [0, 1]}
    assert await keyed("tag:nope") == {}
    assert await keyed("provider", "model=m9") == {"p2": [0, 1]}
    assert await keyed("model", "tag=team:b,tag=team:a") == {"gpt-4o-mini": [1, 0], "m9": [0, 1]}
    errors = (await run(store, *window, group_by="provider"))["series"]
    assert [p["errors"] for s in errors if s["key"] is None for p in s["points"]] == [1, 0]


async def test_every_grouping_sums_to_the_reports_own_figures(store):
    rnd = random.Random(7)
    await store.send([record(i, ts=T0 + rnd.uniform(-HOUR, 7 * HOUR), model_served=rnd.choice("abc"),
                             provider=rnd.choice(["p1", "p2", None]), api_key_id=rnd.choice(["k1", "k2"]),
                             status=rnd.choice(["completed", "completed", "upstream_error"]),
                             prompt_tokens=rnd.randrange(100), completion_tokens=rnd.randrange(50),
                             cost_usd=rnd.random() / 100, savings_usd=rnd.random() / 1000,
                             tags=rnd.sample(["team:a", "team:b", "env:x"], rnd.randrange(3)))
                      for i in range(600)])
    for group_by in ("model", "provider", "apiKey", "tag", "tag:team"):
        query = report.parse(str(T0 + 1234.5), str(T0 + 6 * HOUR - 17), group_by, None)
        got = await store.query(series.run, query, series.parse_interval("15m", query))
        expected = await store.query(report.run, query)
        assert len(got["series"][0]["points"]) == 23  # 14:15 (cut) to 19:45 (cut)
        sums = {s["key"]: [sum(p[f] for p in s["points"]) for f in ("requests", "errors", "inputTokens",
                                                                    "outputTokens", "costUsd", "savingsUsd")]
                for s in got["series"]}
        want = {g["key"]: [g["requests"], g["errors"], g["inputTokens"], g["outputTokens"], g["costUsd"],
                           g["savingsUsd"]] for g in expected["groups"]}
        assert sums.keys() == want.keys(), group_by
        for key, values in want.items():
            assert sums[key] == pytest.approx(values, abs=1e-8), (group_by, key)
        assert [s["key"] for s in got["series"]] == [g["key"] for g in expected["groups"]], group_by


def test_interval_parsing_and_labels():
    day = report.parse("2025-01-01", "2025-01-02", None, None)
    assert series.parse_interval("1m", day) == 60
    assert series.parse_interval(" 5m ", day) == 300
    assert series.parse_interval("90s", day) == 90
    assert series.parse_interval("1d", day) == 86400
    for bad in ("", "0m", "1", "m", "1y", "-1h", "1.5h", "1h30m"):
        with pytest.raises(InvalidRequest) as caught:
            series.parse_interval(bad, day)
        assert caught.value.param == "interval"
    month = report.parse("2025-01-01", "2025-01-31", None, None)
    with pytest.raises(InvalidRequest, match="more than 5000 buckets"):
        series.parse_interval("1m", month)
    assert [series.label(s) for s in (60, 300, 3600, 7200, 86400, 90, 45)] == ["1m", "5m", "1h", "2h", "1d",
                                                                              "90s", "45s"]
    assert series.buckets(report.parse(str(T0 + 1), str(T0 + HOUR), None, None), HOUR) == range(
        T0 // HOUR, T0 // HOUR + 1)


# -- through the gateway -------------------------------------------------------------------------

MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "mock-gpt-500"], "isHosted": True}


async def test_the_usage_endpoint_adds_series_for_real_requests(gateway):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}, "providers": [MOCK]})
    for model, tags in (("mock-gpt", "team:a"), ("mock-gpt", "team:b"), ("mock-gpt-500", "team:a")):
        async with gw.post("/v1/chat/completions", headers={"X-Tags": tags},
                           json={"model": model, "messages": [{"role": "user", "content": "hi"}]}) as r:
            await r.read()
    made = await gw.records()
    headers = {"X-API-Key": ADMIN_KEY}
    async with gw.get("/v1/llm/usage", params={"from": "1h", "interval": "5m", "groupBy": "tag:team"},
                      headers=headers) as r:
        assert r.status == 200
        body = await r.json()
    assert body["interval"] == "5m"
    assert len(body["series"][0]["points"]) in (12, 13)  # a window of 1 h not on a 5 min edge touches 13
    sums = {s["key"]: sum(p["requests"] for p in s["points"]) for s in body["series"]}
    assert sums == {"a": 2, "b": 1}
    assert sum(p["errors"] for s in body["series"] for p in s["points"]) == 1
    assert sum(p["inputTokens"] for s in body["series"] for p in s["points"]) == sum(
        r.prompt_tokens for r in made)
    async with gw.get("/v1/llm/usage", headers=headers) as r:  # without interval: the report alone
        assert "series" not in await r.json()
    async with gw.get("/v1/llm/usage", params={"interval": "1s"}, headers=headers) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "interval"
    async with gw.get("/v1/llm/usage", params={"interval": "1h"}) as r:
        assert r.status == 401


# -- speed: 30 days of records ----------------------------------------------------------------------

def _fill(path: str, count: int, start: float, end: float) -> None:
    """`count` records spread over [start, end): 8 models, 3 providers, 20 keys, half of them tagged."""
    db = connect(path)
    template = list(row(record(0)))
    at = {name: i for i, name in enumerate(FIELDS)}
    rnd = random.Random(3)
    tags = [f'["team:t{i}"]' for i in range(4)]

    def rows(first: int, last: int):
        for i in range(first, last):
            values = template.copy()
            values[at["id"]] = f"r{i}"
            values[at["ts"]] = start + rnd.random() * (end - start)
            values[at["api_key_id"]] = f"k{i % 20}"
            values[at["provider"]] = f"p{i % 3}"
            values[at["status"]] = "upstream_error" if i % 50 == 0 else "completed"
            values[at["tags"]] = tags[i % 4] if i % 2 else "[]"
            values[-1] = f"model-{i % 8}"
            yield values

    for first in range(0, count, 100_000):
        with db:
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO usage ({', '.join(FIELDS)}, model) VALUES "
                           f"({', '.join('?' * (len(FIELDS) + 1))})", rows(first, min(first + 100_000, count)))
    with db:  # the tag rows the store writes with each record (proxy.telemetry.store.insert), in one go
        db.execute("BEGIN")
        db.execute(f"INSERT INTO usage_tags SELECT value, ts, rid, model, provider, api_key_id, {FIGURES} "
                   "FROM usage, json_each(usage.tags) WHERE usage.tags <> '[]'")
    db.close()


def _timed(path: str, count: int) -> dict[str, float]:
    end = float(T0)
    start = end - 30 * 86400
    _fill(path, count, start, end)
    db = connect(path)
    timings = {}
    try:
        for group_by, interval in (("model", "1h"), ("apiKey", "1h"), ("provider", "1d"), ("tag", "1h"),
                                   ("model", "15m")):
            query = report.parse(str(start), str(end), group_by, None)
            began = time.perf_counter()
            got = series.run(db, query, series.parse_interval(interval, query))
            timings[f"{group_by}/{interval}"] = time.perf_counter() - began
            total = sum(p["requests"] for s in got["series"] for p in s["points"])
            assert total == (count // 2 if group_by == "tag" else count)
    finally:
        db.close()
    print(f"\nseries over 30 days of {count:,} records:",
          ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))
    return timings


def test_thirty_days_of_100k_records_in_well_under_a_second(tmp_path):
    timings = _timed(str(tmp_path / "usage.db"), 100_000)
    assert max(timings.values()) < 1.0, timings


@pytest.mark.slow
def test_thirty_days_of_a_million_records_in_under_a_second(tmp_path):
    timings = _timed(str(tmp_path / "usage.db"), 1_000_000)
    assert max(timings.values()) < 1.0, timings
