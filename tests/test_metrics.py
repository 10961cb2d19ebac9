"""Metrics registry: per-app, children cached."""

from __future__ import annotations

from proxy.metrics import Metrics


def test_children_are_cached_and_rendered():
    m = Metrics()
    a = m.child(m.requests, "chat", "200", "p")
    assert m.child(m.requests, "chat", "200", "p") is a
    a.inc()
    assert b'proxy_requests_total{provider="p",route="chat",status="200"} 1.0' in m.render()
    assert Metrics().render() != m.render()  # registries are not shared between apps
