"""OTLP/JSON logs: the encoding rules of opentelemetry-proto, and how a collector's answers are handled."""

from __future__ import annotations

import gzip

import msgspec
import orjson
import pytest

from proxy import __version__
from proxy.config import Config
from proxy.metrics.prometheus import Metrics
from proxy.telemetry import otlp
from proxy.telemetry.deadletter import DeadLetter
from proxy.telemetry.lane import Retryable
from proxy.telemetry.record import UsageRecord
from tests.fakes.castai import INGEST, FakeCastAI, decode_logs
from tests.telemetry.helpers import record


def test_one_log_record_per_usage_record_with_the_otlp_json_rules():
    r = record(7, ts=1735689600.123, error_type=None, ttft_ms=None, tags=["team:a", "env:prod"], stream=True)
    doc = orjson.loads(otlp.encode([r, record(8)], otlp.resource("cluster-1")))
    (resource_logs,) = doc["resourceLogs"]
    assert {a["key"]: a["value"] for a in resource_logs["resource"]["attributes"]} == {
        "service.name": {"stringValue": "ai-enabler-proxy"}, "service.version": {"stringValue": __version__},
        "castai.cluster.id": {"stringValue": "cluster-1"}}
    (scope,) = resource_logs["scopeLogs"]
    assert scope["scope"] == {"name": "ai-enabler-proxy.usage", "version": __version__}
    first = scope["logRecords"][0]
    assert first["timeUnixNano"] == "1735689600123000000"  # fixed64: a decimal string
    assert first["observedTimeUnixNano"].isdigit() and first["severityNumber"] == 9  # enums as integers
    assert first["body"] == {"stringValue": "llm.usage"}
    attrs = {a["key"]: a["value"] for a in first["attributes"]}
    assert list(attrs) == [name for name in UsageRecord.__struct_encode_fields__ if name != "ts"]  # camelCase
    assert attrs["promptTokens"] == {"intValue": "12"}  # int64: a decimal string
    assert attrs["latencyMs"] == {"doubleValue": 12.5} and attrs["stream"] == {"boolValue": True}
    assert attrs["errorType"] == {} and attrs["ttftMs"] == {}  # no value: an empty AnyValue
    assert attrs["tags"] == {"arrayValue": {"values": [{"stringValue": "team:a"}, {"stringValue": "env:prod"}]}}
    assert "traceId" not in first and "spanId" not in first


def test_the_fake_reads_back_exactly_what_was_encoded():
    r = record(1, tags=["a:b"])
    resource, (attrs,) = decode_logs(otlp.encode([r], otlp.resource(None)))
    assert "castai.cluster.id" not in resource
    assert attrs["id"] == r.id and attrs["promptTokens"] == 12 and attrs["tags"] == ["a:b"]


def test_collector_url():
    assert otlp.collector_url("http://otel:4318") == "http://otel:4318/v1/logs"
    assert otlp.collector_url("http://otel:4318/") == "http://otel:4318/v1/logs"
    assert otlp.collector_url("https://x.example/custom/logs") == "https://x.example/custom/logs"


@pytest.fixture
async def fake():
    fake = await FakeCastAI(api_key="k").start()
    yield fake
    await fake.close()


async def _sink(fake, tmp_path, timeout: float = 2.0):
    metrics = Metrics()
    cfg = msgspec.convert({"telemetry": {"exportTimeout": timeout}}, type=Config)
    sink = otlp.OtlpSink("castai", fake.url + INGEST, cfg, headers={"X-API-Key": "k"},
                         dead_letter=DeadLetter(tmp_path), metrics=metrics)
    await sink.start()
    return sink, metrics


async def test_a_batch_is_posted_gzipped_with_the_key(fake, tmp_path):
    sink, _ = await _sink(fake, tmp_path)
    await sink.send([record(i) for i in range(3)])
    assert fake.ids() == ["rec-00000000", "rec-00000001", "rec-00000002"]
    assert fake.attempts[0]["gzip"] is True
    body = otlp._compressed([record(1)], sink.resource)
    assert gzip.decompress(body).startswith(b'{"resourceLogs"')
    await sink.close()


async def test_413_splits_the_batch_down_to_single_records(fake, tmp_path):
    sink, metrics = await _sink(fake, tmp_path)
    await fake.set("413", limit=3)
    await sink.send([record(i) for i in range(10)])
    assert sorted(fake.ids()) == [f"rec-{i:08d}" for i in range(10)]
    assert max(fake.batches) <= 3
    await fake.set("413", limit=0)  # even one record is too large: dead-lettered, never retried
    await sink.send([record(99)])
    assert metrics.records_dead_lettered.labels("castai")._value.get() == 1
    await sink.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_a_refusal_for_good_goes_to_the_dead_letter_file(fake, tmp_path, status):
    sink, metrics = await _sink(fake, tmp_path)
    await fake.set("status", status=status)
    await sink.send([record(i) for i in range(4)])
    lines = [orjson.loads(line) for line in (tmp_path / "castai.jsonl").read_bytes().splitlines()]
    assert len(lines) == 4 == metrics.records_dead_lettered.labels("castai")._value.get()
    assert lines[0]["status"] == status and lines[0]["record"]["id"] == "rec-00000000"
    assert "fake failure" in lines[0]["reason"]
    await sink.close()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_answers_are_retryable(fake, tmp_path, status):
    sink, _ = await _sink(fake, tmp_path)
    await fake.set("status" if status != 429 else "429", status=status, retry_after=7)
    with pytest.raises(Retryable) as caught:
        await sink.send([record(1)])
    assert caught.value.reason == f"http_{status}"
    assert caught.value.retry_after == (7 if status == 429 else None)
    await sink.close()


async def test_no_answer_is_retryable(fake, tmp_path):
    sink, _ = await _sink(fake, tmp_path, timeout=0.3)
    await fake.set("hang")
    with pytest.raises(Retryable, match="timeout"):
        await sink.send([record(1)])
    await fake.set("refuse")
    with pytest.raises(Retryable, match="connect"):
        await sink.send([record(1)])
    await fake.set("healthy")
    await sink.send([record(1)])
    assert fake.ids() == ["rec-00000001"]
    await sink.close()


async def test_a_partial_success_is_counted_as_dropped(tmp_path):
    from aiohttp import web

    async def partial(request):
        return web.json_response({"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "bad attrs"}})

    app = web.Application()
    app.router.add_post("/v1/logs", partial)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    metrics = Metrics()
    sink = otlp.OtlpSink("otlp", otlp.collector_url(f"http://127.0.0.1:{port}"), metrics=metrics)
    await sink.start()
    await sink.send([record(i) for i in range(5)])
    assert metrics.records_dropped.labels("rejected_by_otlp")._value.get() == 2
    await sink.close()
    await runner.cleanup()
