"""Prometheus metrics, one registry per app, with no locks or allocation on the request path.

The hot-path series (requests, latency, time to first token, tokens, attempts, upstream errors)
are plain dicts of numbers, rendered by a collector through prometheus_client's metric
families at scrape time; gauges read live values. Rarer counters use prometheus_client as is.
"""

from __future__ import annotations

import bisect

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class FastCounter:
    __slots__ = ("name", "doc", "labels", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple, float] = {}

    def inc(self, key: tuple, amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family


class FastHistogram:
    __slots__ = ("name", "doc", "labels", "buckets", "series")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets=_LATENCY) -> None:
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.series: dict[tuple, list] = {}  # key -> [bucket counts..., sum]

    def observe(self, key: tuple, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0] * (len(self.buckets) + 1) + [0.0]
        series[bisect.bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, series in self.series.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, self.buckets), "+Inf"), series[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(key, buckets, series[-1])
        return family


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        for fast in (m.requests, m.latency, m.ttft, m.tokens, m.attempts, m.upstream_errors):
            yield fast.family()
        yield GaugeMetricFamily("proxy_requests_in_flight", "Requests being served", value=m.in_flight)
        yield GaugeMetricFamily("proxy_upstream_in_flight", "Upstream calls open", value=m.upstream_in_flight)


class Metrics:
    def __init__(self) -> None:
        self.requests = FastCounter("proxy_requests", "Requests answered", ("route", "status", "provider"))
        self.latency = FastHistogram("proxy_request_latency_seconds", "Request latency", ("route",))
        self.ttft = FastHistogram("proxy_time_to_first_token_seconds", "Time to the first byte relayed", ("route",))
        self.tokens = FastCounter("proxy_tokens", "Tokens by provider and direction", ("provider", "direction"))
        self.attempts = FastCounter("proxy_upstream_attempts", "Upstream attempts", ("provider",))
        self.upstream_errors = FastCounter("proxy_upstream_errors", "Upstream failures by kind", ("provider", "kind"))
        self.in_flight = 0
        self.upstream_in_flight = 0
        r = self.registry = CollectorRegistry(auto_describe=False)
        r.register(_Collector(self))
        self.records_sent = Counter("proxy_usage_records_sent", "Usage records accepted by a sink",
                                    ["sink"], registry=r)
        self.records_dropped = Counter("usage_records_dropped", "Usage records dropped, by reason",
                                       ["reason"], registry=r)
        self.records_dead_lettered = Counter("usage_records_dead_lettered",
                                             "Usage records a sink refused for good, written to the dead-letter file",
                                             ["sink"], registry=r)
        self.sink_retries = Counter("usage_sink_retries", "Failed exports that will be retried", ["sink", "reason"],
                                    registry=r)
        self.spool_bytes = Gauge("usage_spool_bytes", "Bytes in the usage spool on disk", registry=r)
        self.spool_corrupt = Counter("usage_spool_corrupt_records", "Damaged spool frames skipped at recovery",
                                     registry=r)
        self.spool_write_errors = Counter("usage_spool_write_errors", "Failed writes to the usage spool", registry=r)
        self.heartbeats = Counter("castai_heartbeats", "Heartbeats sent to the Cast AI API", ["result"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
