"""The usage report: parameters, figures against hand-computed sums, the table, and its speed."""

from __future__ import annotations

import datetime
import os
import random
import subprocess
import sys
import time

import orjson
import pytest

from proxy.control import report
from proxy.errors import InvalidRequest
from proxy.telemetry.store import UsageStore
from tests.telemetry.helpers import record

NOW = 1_750_000_000.0


def test_times_in_every_accepted_form():
    assert report.parse_time("now", NOW, "to") == NOW
    assert report.parse_time("24h", NOW, "from") == NOW - 86400
    assert report.parse_time("90m", NOW, "from") == NOW - 5400
    assert report.parse_time("1735689600", NOW, "from") == 1735689600
    assert report.parse_time("2025-01-01T00:00:00Z", NOW, "from") == 1735689600
    assert report.parse_time("2025-01-01T02:00:00+02:00", NOW, "from") == 1735689600
    assert report.parse_time("2025-01-01", NOW, "from") == 1735689600


def test_a_bad_parameter_is_a_400_naming_it():
    for args, param in [(("yesterday", None, None, None), "from"), ((None, "soon", None, None), "to"),
                        (("1h", "2h", None, None), "from"), ((None, None, "colour", None), "groupBy"),
                        ((None, None, None, "colour=red"), "filter"), ((None, None, None, "model"), "filter")]:
        with pytest.raises(InvalidRequest) as caught:
            report.parse(*args, now=NOW)
        assert caught.value.param == param


def test_defaults_and_filters():
    q = report.parse(None, None, None, "model=a, model=b,tag=team:x,status=completed", now=NOW)
    assert (q.start, q.end, q.group_by) == (NOW - 30 * 86400, NOW, "model")
    assert q.filters == {"model": ["a", "b"], "tag": ["team:x"], "status": ["completed"]}


def _dataset(rng: random.Random, count: int, start: float) -> list:
    models, providers, keys = ["gpt-4o", "gpt-4o-mini", "claude", None], ["p1", "p2", None], ["k1", "k2", None]
    statuses = ["completed"] * 6 + ["client_aborted", "upstream_error", "upstream_timeout", "aborted_unknown"]
    tagsets = [[], ["team:a"], ["team:b", "env:prod"], ["team:a", "env:prod"], ["env:dev"]]
    out = []
    for i in range(count):
        served = rng.choice(models)
        out.append(record(i, ts=start + i * 7.3, model_requested=rng.choice(["auto", "gpt-4o"]), model_served=served,
                          provider=rng.choice(providers), api_key_id=rng.choice(keys), status=rng.choice(statuses),
                          prompt_tokens=rng.randrange(0, 5000), completion_tokens=rng.randrange(0, 2000),
                          cost_usd=rng.random() / 100, savings_usd=rng.random() / 1000,
                          latency_ms=rng.uniform(5, 900), ttft_ms=rng.choice([None, rng.uniform(1, 300)]),
                          tags=rng.choice(tagsets)))
    return out


def _expected(records, key) -> dict:
    groups: dict = {}
    for r in records:
        for k in key(r):
            groups.setdefault(k, []).append(r)
    return {k: _figures(rs) for k, rs in groups.items()}


def _figures(rs) -> dict:
    ttfts = [r.ttft_ms for r in rs if r.ttft_ms is not None]
    return {"requests": len(rs), "errors": sum(r.status not in ("completed", "client_aborted") for r in rs),
            "inputTokens": sum(r.prompt_tokens for r in rs), "outputTokens": sum(r.completion_tokens for r in rs),
            "costUsd": sum(r.cost_usd for r in rs), "savingsUsd": sum(r.savings_usd for r in rs),
            "avgLatencyMs": sum(r.latency_ms for r in rs) / len(rs),
            "avgTtftMs": sum(ttfts) / len(ttfts) if ttfts else None}


def _same(got: dict, want: dict) -> None:
    for name, value in want.items():
        if value is None or isinstance(value, int):
            assert got[name] == value, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-3 if name.endswith("Ms") else 1e-8), name


KEYS = {
    "model": lambda r: [r.model_served or r.model_requested],
    "provider": lambda r: [r.provider],
    "apiKey": lambda r: [r.api_key_id],
    "tag": lambda r: r.tags,
    "tag:team": lambda r: [t[5:] for t in r.tags if t.startswith("team:")],
}


@pytest.mark.parametrize("group", list(KEYS))
async def test_figures_match_hand_computed_sums(tmp_path, group):
    store = UsageStore(str(tmp_path / "u.db"))
    records = _dataset(random.Random(8), 2000, NOW - 2000 * 7.3)
    await store.send(records)
    start, end = NOW - 1500 * 7.3, NOW - 200 * 7.3  # a window cutting both ends
    inside = [r for r in records if start <= r.ts < end]
    got = await store.query(report.run, report.parse(str(start), str(end), group, None, now=NOW))
    want = _expected(inside, KEYS[group])
    assert {g["key"] for g in got["groups"]} == set(want)
    for g in got["groups"]:
        _same(g, want[g["key"]])
    _same(got["totals"], _figures(inside))  # totals count requests once, whatever their tags
    costs = [g["costUsd"] for g in got["groups"]]
    assert costs == sorted(costs, reverse=True)
    store.close()


async def test_filters_combine(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    records = _dataset(random.Random(9), 1500, NOW - 1500 * 7.3)
    await store.send(records)
    q = report.parse(str(NOW - 20000), str(NOW), "tag", "provider=p1,provider=p2,tag=env:prod,status=completed",
                     now=NOW)
    got = await store.query(report.run, q)
    inside = [r for r in records if NOW - 20000 <= r.ts < NOW and r.provider in ("p1", "p2")
              and "env:prod" in r.tags and r.status == "completed"]
    want = _expected(inside, KEYS["tag"])
    assert {g["key"] for g in got["groups"]} == set(want)  # tags that ride along with env:prod show too
    for g in got["groups"]:
        _same(g, want[g["key"]])
    _same(got["totals"], _figures(inside))
    store.close()


def test_the_table_lines_up():
    text = report.table({"from": "a", "to": "b", "groupBy": "model", "groups": [
        {"key": "gpt-4o", "requests": 1200, "errors": 3, "inputTokens": 1_234_567, "outputTokens": 1, "costUsd": 12.3,
         "savingsUsd": 0.0, "avgLatencyMs": 120.44, "avgTtftMs": None},
        {"key": None, "requests": 1, "errors": 0, "inputTokens": 0, "outputTokens": 0, "costUsd": 0.0,
         "savingsUsd": 0.0, "avgLatencyMs": 1.0, "avgTtftMs": 2.0}],
        "totals": {"requests": 1201, "errors": 3, "inputTokens": 1_234_567, "outputTokens": 1, "costUsd": 12.3,
                   "savingsUsd": 0.0, "avgLatencyMs": 120.3, "avgTtftMs": 2.0}})
    lines = text.splitlines()
    assert lines[0] == "Usage from a to b, by model"
    rows = [line for line in lines[2:] if not line.startswith("-")]
    assert len({len(line) for line in rows}) == 1  # aligned
    assert rows[1].startswith("gpt-4o") and "1,234,567" in rows[1] and rows[1].rstrip().endswith("-")
    assert rows[2].startswith("(none)") and rows[-1].startswith("TOTAL")


async def _bulk(path: str, count: int) -> float:
    store = UsageStore(path)
    rng = random.Random(1)
    start = time.time() - count * 0.5
    models = [f"model-{i}" for i in range(12)]
    for first in range(0, count, 5000):
        await store.send([record(i, ts=start + i * 0.5, model_served=rng.choice(models),
                                 provider=f"p{i % 4}", api_key_id=f"key-{i % 25}", tags=[f"team:t{i % 8}", "env:prod"],
                                 latency_ms=rng.uniform(5, 500)) for i in range(first, min(first + 5000, count))])
    await store.prune(30)  # the background task's pass: prune and refresh the planner's statistics
    store.close()
    return start


async def _timed_reports(path: str, count: int) -> dict:
    store = UsageStore(path)
    timings = {}
    for group in ("model", "provider", "apiKey", "tag"):
        started = time.perf_counter()
        got = await store.query(report.run, report.parse("30d", None, group, None))
        timings[group] = round(time.perf_counter() - started, 3)
        assert got["totals"]["requests"] == count
    started = time.perf_counter()
    await store.query(report.run, report.parse("30d", None, "model", "tag=team:t3,provider=p1"))
    timings["filtered"] = round(time.perf_counter() - started, 3)
    store.close()
    print("report seconds", count, timings)
    return timings


async def test_a_100k_record_report_is_fast(tmp_path):
    path = str(tmp_path / "u.db")
    await _bulk(path, 100_000)
    timings = await _timed_reports(path, 100_000)
    assert max(timings.values()) < 2.0


@pytest.mark.slow
async def test_a_1m_record_report_takes_under_2_s(tmp_path):
    path = str(tmp_path / "u.db")
    await _bulk(path, 1_000_000)
    timings = await _timed_reports(path, 1_000_000)
    assert max(timings.values()) < 2.0, timings


async def test_the_report_command_reads_the_store_in_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    store = UsageStore(str(data / "usage.db"))
    day = datetime.datetime(2025, 3, 1, tzinfo=datetime.UTC).timestamp()
    await store.send([record(i, ts=day + i, tags=["team:a"], cost_usd=0.25) for i in range(4)])
    store.close()
    config = tmp_path / "c.yaml"
    config.write_text(f"dataDir: {data}\n")
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    args = [sys.executable, "-m", "proxy", "report", "--config", str(config), "--from", "2025-03-01",
            "--to", "2025-03-02", "--group-by", "tag"]
    out = subprocess.run([*args, "--json"], capture_output=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout)
    assert (doc["from"], doc["to"], doc["groupBy"]) == ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z", "tag")
    assert doc["groups"][0]["key"] == "team:a" and doc["totals"]["requests"] == 4 and doc["totals"]["costUsd"] == 1.0
    table = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
    assert "team:a" in table.stdout and "TOTAL" in table.stdout and "1.0000" in table.stdout
    bad = subprocess.run([*args[:-2], "--group-by", "colour"], capture_output=True, text=True, timeout=30, env=env)
    assert bad.returncode == 2 and "groupBy" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "proxy", "report"], capture_output=True, text=True, timeout=30,
                             env={**env, "DATA_DIR": str(tmp_path / "none")})
    assert missing.returncode == 1 and "no usage store" in missing.stderr


async def test_grouped_and_filtered_by_endpoint_also_within_tags(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    await store.send([record(1, ts=NOW - 60, endpoint="messages", prompt_tokens=5, tags=["team:a"]),
                      record(2, ts=NOW - 50, endpoint="messages", prompt_tokens=7, tags=["team:b"]),
                      record(3, ts=NOW - 40, endpoint="chat", prompt_tokens=11, tags=["team:a"]),
                      record(4, ts=NOW - 30, endpoint="embeddings", prompt_tokens=13, tags=[])])
    by_endpoint = await store.query(report.run, report.parse("1h", None, "endpoint", None, now=NOW))
    assert {g["key"]: (g["requests"], g["inputTokens"]) for g in by_endpoint["groups"]} == {
        "messages": (2, 12), "chat": (1, 11), "embeddings": (1, 13)}
    tags = await store.query(report.run, report.parse("1h", None, "tag", "endpoint=messages", now=NOW))
    assert {g["key"]: g["inputTokens"] for g in tags["groups"]} == {"team:a": 5, "team:b": 7}
    assert tags["totals"]["requests"] == 2
    store.close()
