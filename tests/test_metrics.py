"""Metrics: plain numbers on the request path, Prometheus text at scrape time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics


def test_fast_series_render_as_prometheus_text():
    m = Metrics()
    m.requests.inc(("chat", "200", "p"))
    m.requests.inc(("chat", "200", "p"))
    m.latency.observe(("chat",), 0.003)
    m.latency.observe(("chat",), 0.2)
    m.latency.observe(("chat",), 999)
    m.in_flight = 2
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    (requests,) = families["proxy_requests"].samples
    assert requests.value == 2.0 and requests.labels == {"route": "chat", "status": "200", "provider": "p"}
    buckets = {s.labels["le"]: s.value for s in families["proxy_request_latency_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.25"] == 2 and buckets["300"] == 2 and buckets["+Inf"] == 3
    total = [s.value for s in families["proxy_request_latency_seconds"].samples if s.name.endswith("_sum")]
    assert abs(total[0] - 999.203) < 1e-9
    assert families["proxy_requests_in_flight"].samples[0].value == 2


def test_registries_are_not_shared_between_apps():
    a, b = Metrics(), Metrics()
    a.requests.inc(("chat", "200", "p"))
    assert a.render() != b.render()
