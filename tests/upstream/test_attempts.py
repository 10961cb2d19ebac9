"""One request's calls to providers: counted on the provider's health and the in-flight gauge."""

from __future__ import annotations

import time

import msgspec

from proxy.config import ProviderItem, Routing
from proxy.metrics.prometheus import Metrics
from proxy.upstream.attempts import Attempts
from proxy.upstream.registry import Registry
from proxy.upstream.router import Router
from proxy.upstream.vault import Vault


def _router(tmp_path):
    items = [msgspec.convert({"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "url": "http://127.0.0.1:9/v1",
                              "models": ["m"], "apiKey": f"sk-{name}-0123456789"}, ProviderItem) for name in "ab"]
    return Router(Registry(items, Vault("k", tmp_path), None), Routing())


def test_each_attempt_is_in_flight_on_its_provider_until_released(tmp_path):
    router, metrics = _router(tmp_path), Metrics()
    a, b = router.registry.by_name["a"], router.registry.by_name["b"]
    attempts = Attempts("req-1", router, metrics)
    attempts.begin(a)
    assert router.state("a").in_flight == 1 and metrics.upstream_in_flight == 1
    attempts.failed()
    attempts.begin(b)  # the next candidate: the first one is let go
    assert (router.state("a").in_flight, router.state("b").in_flight, metrics.upstream_in_flight) == (0, 1, 1)
    attempts.answered("sk-b-0123456789")
    attempts.release()
    attempts.release()  # safe to repeat: counted down once
    assert (router.state("b").in_flight, metrics.upstream_in_flight) == (0, 0)
    assert (attempts.count, attempts.failures, attempts.provider, attempts.key_last4) == (2, 1, b, "…6789")


def test_upstream_time_runs_from_the_first_call_to_the_last_release(tmp_path):
    router = _router(tmp_path)
    attempts = Attempts("req-2", router, Metrics())
    assert attempts.upstream_seconds() == 0.0  # no provider was called
    attempts.begin(router.registry.by_name["a"])
    time.sleep(0.02)
    attempts.release()
    spent = attempts.upstream_seconds()
    time.sleep(0.02)
    assert 0.02 <= spent == attempts.upstream_seconds() < 1.0  # frozen once released
