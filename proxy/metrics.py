"""Prometheus metrics, one registry per app; label children cached off the hot path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("proxy_requests", "Requests answered", ["route", "status", "provider"], registry=r)
        self.latency = Histogram("proxy_request_latency_seconds", "Request latency", ["route"],
                                 buckets=_LATENCY, registry=r)
        self.ttft = Histogram("proxy_time_to_first_token_seconds", "Time to the first byte relayed",
                              ["route"], buckets=_LATENCY, registry=r)
        self.in_flight = Gauge("proxy_requests_in_flight", "Requests being served", registry=r)
        self.upstream_in_flight = Gauge("proxy_upstream_in_flight", "Upstream calls open", registry=r)
        self.upstream_errors = Counter("proxy_upstream_errors", "Upstream failures by kind",
                                       ["provider", "kind"], registry=r)
        self.attempts = Counter("proxy_upstream_attempts", "Upstream attempts", ["provider"], registry=r)
        self.tokens = Counter("proxy_tokens", "Tokens by provider and direction", ["provider", "direction"],
                              registry=r)
        self.records_sent = Counter("proxy_usage_records_sent", "Usage records accepted by a sink",
                                    ["sink"], registry=r)
        self.records_dropped = Counter("usage_records_dropped", "Usage records dropped, by reason",
                                       ["reason"], registry=r)
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels):
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
