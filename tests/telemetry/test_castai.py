"""The Cast AI sink and heartbeat, and how the gateway handles each kind of answer (R36)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import orjson
import pytest
from structlog.testing import capture_logs

from proxy import __version__
from proxy.config import Config
from proxy.metrics.prometheus import Metrics
from proxy.telemetry import castai
from tests.fakes.castai import FakeCastAI
from tests.telemetry.helpers import until

KEY = "castai-key-for-tests-0002"
MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}


@pytest.fixture
async def fake():
    fake = await FakeCastAI(api_key=KEY).start()
    yield fake
    await fake.close()


def _cfg(fake, **telemetry) -> Config:
    return msgspec.convert({"castai": {"apiKey": KEY, "apiUrl": fake.url + "/", "clusterId": "cl-1"},
                            "telemetry": telemetry}, type=Config)


def test_the_sink_posts_to_logs_ingest_with_the_key(monkeypatch):
    monkeypatch.setenv("CASTAI_TEST_KEY", "from-env-1234")
    cfg = msgspec.convert({"castai": {"apiKey": "env:CASTAI_TEST_KEY", "apiUrl": "https://api.example"}}, type=Config)
    sink = castai.sink(cfg)
    assert sink.name == "castai" and sink.url == "https://api.example/ai-optimizer/v1beta/logs:ingest"
    assert sink.headers["X-API-Key"] == "from-env-1234" and sink.headers["Content-Encoding"] == "gzip"


async def test_the_heartbeat_reports_a_running_component(fake):
    metrics = Metrics()
    beat = castai.Heartbeat(_cfg(fake, heartbeatSeconds=0.05), metrics)
    beat.start()
    # Counted once the answer is read: the fake can hold a beat whose answer came after the
    # beat's own timeout (the interval, 50 ms here), which a busy host sometimes makes it.
    await until(lambda: metrics.heartbeats.labels("ok")._value.get() >= 2)
    await beat.close()
    assert len(fake.heartbeats) >= 2
    first = fake.heartbeats[0]
    assert first["key"] == KEY and first["component"] == "ai-enabler-proxy" and first["version"] == __version__
    assert first["clusterId"] == "cl-1" and first["status"] == "RUNNING" and "/" in first["instanceId"]


async def test_a_failed_heartbeat_is_logged_once_and_tried_again(fake):
    metrics = Metrics()
    beat = castai.Heartbeat(_cfg(fake, heartbeatSeconds=60), metrics)
    beat.session = aiohttp.ClientSession()
    await fake.set("refuse")
    with capture_logs() as logs:
        assert not await beat.beat() and not await beat.beat()
        await fake.set("healthy")
        assert await beat.beat()
    assert [e["ok"] for e in logs if e["event"] == "castai_heartbeat"] == [False, True]
    assert metrics.heartbeats.labels("error")._value.get() == 2
    await beat.close()


# -- R36, through a running gateway ----------------------------------------------------------
async def _gateway(gateway, fake, **telemetry):
    telemetry = {"flushMs": 20, "batchSize": 50, "retryInitial": 0.05, "retryMax": 0.2, "exportTimeout": 0.5,
                 **telemetry}
    return await gateway({"providers": [MOCK], "telemetry": telemetry,
                          "castai": {"apiKey": KEY, "apiUrl": fake.url, "clusterId": "cl-1"}})


async def _requests(gw, count: int) -> None:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(count):
        async with gw.post("/v1/chat/completions", json=body) as r:
            assert r.status == 200


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_r36_transient_errors_are_retried_until_taken(gateway, fake, status):
    gw = await _gateway(gateway, fake)
    await fake.set("status", status=status, times=3)
    await _requests(gw, 20)
    await until(lambda: len(set(fake.ids())) == 20)
    failed = [a for a in fake.attempts if a["answer"] != 200]
    assert len(failed) == 3 and gw.gw.metrics.sink_retries.labels("castai", f"http_{status}")._value.get() == 3


async def test_r36_429_waits_for_retry_after(gateway, fake):
    gw = await _gateway(gateway, fake)
    await fake.set("429", retry_after=1, times=1)
    await _requests(gw, 5)
    await until(lambda: len(fake.ids()) == 5)
    first, second = fake.attempts[0], fake.attempts[1]
    assert first["answer"] == 429 and second["at"] - first["at"] >= 1.0


async def test_r36_a_stalled_api_is_timed_out_and_retried(gateway, fake):
    gw = await _gateway(gateway, fake, exportTimeout=0.3)
    await fake.set("hang", times=1)
    await _requests(gw, 5)
    await until(lambda: len(fake.ids()) == 5)
    assert gw.gw.metrics.sink_retries.labels("castai", "timeout")._value.get() == 1


async def test_r36_413_splits_until_single_records(gateway, fake):
    gw = await _gateway(gateway, fake)
    await fake.set("413", limit=1)
    await _requests(gw, 12)
    await until(lambda: len(fake.ids()) == 12)
    assert set(fake.batches) == {1}


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_r36_refusals_go_to_the_dead_letter_file_counted_and_logged(gateway, fake, tmp_path, status):
    gw = await _gateway(gateway, fake)
    await fake.set("status", status=status)
    with capture_logs() as logs:
        await _requests(gw, 30)
        await gw.records()
    dead = tmp_path / "data" / "deadletter" / "castai.jsonl"
    await until(lambda: dead.exists() and len(dead.read_bytes().splitlines()) == 30)
    assert gw.gw.metrics.records_dead_lettered.labels("castai")._value.get() == 30
    errors = [e for e in logs if e["event"] == "sink_refused_batch"]
    assert errors and sum(e["records"] for e in errors) == 30 and errors[0]["log_level"] == "error"
    assert {orjson.loads(line)["status"] for line in dead.read_bytes().splitlines()} == {status}
    assert KEY not in dead.read_text()


async def test_r36_at_most_one_attempt_per_second_during_an_outage(gateway, fake):
    gw = await _gateway(gateway, fake, retryInitial=1.0, retryMax=32.0)  # the production backoff
    await fake.set("status", status=503)
    await _requests(gw, 10)
    started = time.monotonic()
    await asyncio.sleep(2.6)
    attempts = [a for a in fake.attempts if a["at"] >= started - 0.5]
    assert 1 <= len(attempts) <= 3  # over ~3 s: the first attempt, then ≥ 1 s, then ≥ 2 s more
    gaps = [b["at"] - a["at"] for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)]
    assert all(gap >= 1.0 for gap in gaps)
