"""Metrics: adds into a memory-mapped slab on the request path, Prometheus text at scrape time,
the sum over every worker's slab whichever worker answers."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import share as metrics_share
from proxy.metrics.prometheus import Metrics
from tests.procs import ROOT


def _families(m: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def _value(families: dict, family: str, sample: str, **labels) -> float | None:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


KEY = ("gpt-4o-mini", "p", "chat", "200")


def test_fast_series_render_as_prometheus_text():
    m = Metrics()
    m.requests.add(KEY, 10, 5, 2, 0.25)
    m.requests.add(KEY)
    m.latency.observe(KEY[:3], 0.003)
    m.latency.observe(KEY[:3], 0.2)
    m.latency.observe(KEY[:3], 999)
    m.in_flight = 2
    families = _families(m)
    (requests,) = families["aigw_requests"].samples
    assert requests.value == 2.0
    assert requests.labels == {"model": "gpt-4o-mini", "provider": "p", "endpoint": "chat", "status": "200"}
    assert _value(families, "aigw_input_tokens", "aigw_input_tokens_total") == 10
    assert _value(families, "aigw_output_tokens", "aigw_output_tokens_total") == 5
    assert _value(families, "aigw_cached_tokens", "aigw_cached_tokens_total") == 2
    assert _value(families, "aigw_cost_usd", "aigw_cost_usd_total") == 0.25
    buckets = {s.labels["le"]: s.value for s in families["aigw_request_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.25"] == 2 and buckets["300"] == 2 and buckets["+Inf"] == 3
    total = _value(families, "aigw_request_duration_seconds", "aigw_request_duration_seconds_sum")
    assert abs(total - 999.203) < 1e-9
    assert families["aigw_requests_in_flight"].samples[0].value == 2


def test_every_gateway_metric_has_the_one_prefix():
    m = Metrics()
    m.requests.add(KEY)
    names = {f.name for f in text_string_to_metric_families(m.render().decode())}
    assert names and all(n.startswith("aigw_") or n.startswith("process_") for n in names), names


def test_process_metrics_for_the_worker_and_the_group():
    families = _families(Metrics())
    rss = _value(families, "process_resident_memory_bytes", "process_resident_memory_bytes", worker="0")
    assert rss > 10_000_000
    assert _value(families, "process_resident_memory_bytes", "process_resident_memory_bytes", worker="all") == rss
    assert _value(families, "process_cpu_seconds", "process_cpu_seconds_total", worker="all") > 0
    assert _value(families, "process_open_fds", "process_open_fds", worker="0") > 3


def test_registries_are_not_shared_between_apps():
    a, b = Metrics(), Metrics()
    a.requests.add(KEY)
    assert a.render() != b.render()


def test_slabs_in_one_directory_are_summed_by_whichever_answers(tmp_path):
    a, b = Metrics(str(tmp_path)), Metrics(str(tmp_path))
    a.requests.add(KEY, 1, 2)
    for _ in range(2):
        b.requests.add(KEY, 1, 2)
    b.latency.observe(KEY[:3], 0.1)
    a.attempts.inc(("p",))
    a.records_dropped.labels("queue_full").inc()  # a prometheus_client counter, copied at publish
    a.in_flight, b.in_flight = 2, 3
    b.publish()  # each second (`start`), and at a scrape: a's own, when a answers
    for scraper in (a, b):
        families = _families(scraper)
        assert _value(families, "aigw_requests", "aigw_requests_total") == 3
        assert _value(families, "aigw_output_tokens", "aigw_output_tokens_total") == 6
        assert _value(families, "aigw_request_duration_seconds", "aigw_request_duration_seconds_count") == 1
        assert _value(families, "aigw_upstream_attempts", "aigw_upstream_attempts_total") == 1
        assert _value(families, "aigw_usage_records_dropped", "aigw_usage_records_dropped_total") == 1
        assert families["aigw_requests_in_flight"].samples[0].value == 5
        assert families["aigw_workers"].samples[0].value == 2


_DEAD_WORKER = textwrap.dedent("""
    import sys
    from proxy.metrics.prometheus import Metrics
    m = Metrics(sys.argv[1])
    for _ in range(7):
        m.requests.add(("gpt-4o-mini", "p", "chat", "200"), 3, 4)
    m.records_sent.labels("local").inc(5)
    m.in_flight = 9
    m.publish()
""")


def test_a_dead_workers_counters_stay_and_its_gauges_go(tmp_path):
    subprocess.run([sys.executable, "-c", _DEAD_WORKER, str(tmp_path)], cwd=ROOT, check=True, timeout=60)
    live = Metrics(str(tmp_path))
    live.requests.add(KEY)
    live.in_flight = 1
    families = _families(live)
    assert _value(families, "aigw_requests", "aigw_requests_total") == 8
    assert _value(families, "aigw_input_tokens", "aigw_input_tokens_total") == 21
    assert _value(families, "aigw_usage_records_sent", "aigw_usage_records_sent_total") == 5
    assert families["aigw_requests_in_flight"].samples[0].value == 1  # not 10: that worker is gone
    assert families["aigw_workers"].samples[0].value == 1
    # its CPU time stays in the group's counter, which never goes back between scrapes
    cpu = _value(families, "process_cpu_seconds", "process_cpu_seconds_total", worker="all")
    own = _value(families, "process_cpu_seconds", "process_cpu_seconds_total", worker="0")
    assert cpu > own
    again = _families(live)
    assert _value(again, "process_cpu_seconds", "process_cpu_seconds_total", worker="all") >= cpu


def test_a_full_slab_stops_naming_new_series_and_keeps_counting_the_rest(monkeypatch):
    monkeypatch.setattr(metrics_share, "SLOTS", 64)
    m = Metrics()
    for i in range(40):  # 5 slots each: the slab fills after a few
        m.requests.add((f"m{i}", "p", "chat", "200"), 1, 1, 1, 1.0)
        m.latency.observe((f"m{i}", "p", "chat"), 0.1)
    m.requests.add(("m0", "p", "chat", "200"), 1, 1, 1, 1.0)
    families = _families(m)
    counted = {s.labels["model"]: s.value for s in families["aigw_requests"].samples}
    assert counted.pop("m0") == 2 and 0 < len(counted) < 39
    assert set(counted.values()) == {1.0}  # what did not fit landed in no other series
    for name in ("aigw_input_tokens", "aigw_output_tokens", "aigw_cached_tokens", "aigw_cost_usd"):
        values = {s.labels["model"]: s.value for s in families[name].samples}
        assert values.pop("m0") == 2 and set(values.values()) == {1.0}, name


def test_only_registered_names_become_label_values_and_ttft_is_for_streams():
    from types import SimpleNamespace as NS

    from proxy.telemetry.record import UsageRecord

    m = Metrics()
    registry = NS(by_name={"main": object()}, by_model={"gpt-4o": (), "gpt-4o-mini": ()})

    def finish(requested: str, served: str | None, provider: str | None, stream: bool) -> None:
        ex = NS(endpoint="chat", http_status=200, stream=stream, ttft=0.05, model_requested=requested)  # an Outcome's fields
        record = UsageRecord(id="x", time="t", cluster_id=None, api_key_id="caller-secret-id", provider=provider,
                             provider_type=None, provider_key_last4=None, model_requested=requested,
                             model_served=served, stream=stream, status="completed", error_type=None,
                             prompt_tokens=3, completion_tokens=4, cost_usd=0.5)
        m.finished(ex, record, 0.1, registry)

    finish("gpt-4o", "gpt-4o-2024-08-06", "main", stream=True)  # the upstream's dated name: the registered one
    finish("made-up-model", "made-up-model", "gone", stream=False)  # a provider deleted since
    finish("gpt-4o-mini", None, None, stream=False)
    text = m.render().decode()
    families = _families(m)
    labels = {(s.labels["model"], s.labels["provider"]) for s in families["aigw_requests"].samples}
    assert labels == {("gpt-4o", "main"), ("other", "other"), ("gpt-4o-mini", "none")}
    assert _value(families, "aigw_time_to_first_token_seconds", "aigw_time_to_first_token_seconds_count") == 1
    assert "caller-secret-id" not in text and "made-up-model" not in text and "2024-08-06" not in text


_IDLE_WORKER = textwrap.dedent("""
    import sys
    from proxy.metrics.prometheus import Metrics
    m = Metrics(sys.argv[1])
    m.in_flight = 3  # a gauge: not a count, and a dead worker's gauges are left out anyway
    m.publish()  # then it dies before it counted anything, as a worker crash-looping at start-up
""")


def test_a_dead_worker_that_counted_nothing_leaves_no_slab_behind(tmp_path):
    # one slab per restart, read at every scrape for good: a crash loop would grow both
    for _ in range(3):
        subprocess.run([sys.executable, "-c", _IDLE_WORKER, str(tmp_path)], cwd=ROOT, check=True, timeout=60)
    idle = {p.name for p in tmp_path.glob("*.slab")}
    subprocess.run([sys.executable, "-c", _DEAD_WORKER, str(tmp_path)], cwd=ROOT, check=True, timeout=60)
    (counted,) = {p.name for p in tmp_path.glob("*.slab")} - idle
    starting = tmp_path / "1-00000000.slab"  # a worker's slab before its header is written
    starting.write_bytes(b"\0" * metrics_share.SIZE)
    live, other = Metrics(str(tmp_path)), Metrics(str(tmp_path))
    assert len(idle) == 3 and len(list(tmp_path.glob("*.slab"))) == 7
    live.requests.add(KEY)
    first = _families(live)
    assert _value(first, "aigw_requests", "aigw_requests_total") == 8
    assert {p.name for p in tmp_path.glob("*.slab")} == {
        starting.name, counted, *(pathlib.Path(m.slab.path).name for m in (live, other))}
    for scraper in (live, other, live):  # the other worker drops what it had mapped of them
        families = _families(scraper)
        assert _value(families, "aigw_requests", "aigw_requests_total") == 8
        assert _value(families, "aigw_input_tokens", "aigw_input_tokens_total") == 21
        cpu = _value(families, "process_cpu_seconds", "process_cpu_seconds_total", worker="all")
        assert cpu >= _value(first, "process_cpu_seconds", "process_cpu_seconds_total", worker="all")
    assert set(other.group.views) == {counted, starting.name, pathlib.Path(live.slab.path).name}


async def test_a_dialect_request_is_counted_and_recorded_under_its_own_endpoint(gateway, fake_openai):
    """A Messages or Responses request runs the chat pipeline; its metrics' `endpoint` label and
    its record's `endpoint` are the dialect's name, not `chat`."""
    import asyncio

    from tests.conftest import openai_provider

    gw = await gateway({"providers": [openai_provider(fake_openai, models=("gpt-4o-mini",))]})
    asks = [("/anthropic/v1/messages", {"max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}),
            ("/v1/responses", {"input": "Hi"}), ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})]
    for path, body in asks:
        for stream in (False, True):
            async with gw.post(path, json={"model": "gpt-4o-mini", "stream": stream, **body}) as answer:
                assert answer.status == 200, await answer.text()
                await answer.read()
    for _ in range(100):
        records = await gw.records()
        if len(records) == 6:
            break
        await asyncio.sleep(0.01)
    assert sorted(r.endpoint for r in records) == ["chat", "chat", "messages", "messages", "responses", "responses"]
    async with gw.get("/metrics") as scraped:
        families = {f.name: f for f in text_string_to_metric_families(await scraped.text())}
    for endpoint in ("messages", "responses", "chat"):
        assert _value(families, "aigw_requests", "aigw_requests_total", endpoint=endpoint, status="200",
                      model="gpt-4o-mini") == 2
        assert _value(families, "aigw_time_to_first_token_seconds", "aigw_time_to_first_token_seconds_count",
                      endpoint=endpoint) == 1
