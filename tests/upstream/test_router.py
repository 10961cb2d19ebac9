"""Routing order, pinning, allowances and the circuit breaker, on a registry without HTTP."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config import ProviderItem, Routing
from proxy.errors import ModelNotFound, PermissionDenied
from proxy.upstream.registry import Registry
from proxy.upstream.router import Router
from proxy.upstream.vault import Vault


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _router(tmp_path, *items, clock=None):
    made = [msgspec.convert({"supportedProvider": "OPENAI", "models": ["m"], **i}, type=ProviderItem) for i in items]
    registry = Registry(made, Vault("k", tmp_path), None)
    return Router(registry, Routing(failure_threshold=3, ejection_seconds=10), clock=clock or Clock())


def test_hosted_first_then_least_in_flight_per_weight(tmp_path):
    router = _router(tmp_path, {"name": "cloud"}, {"name": "hosted", "isHosted": True},
                     {"name": "heavy", "weight": 4})
    assert [r.provider.name for r in router.routes("m")][0] == "hosted"
    router.state("hosted").in_flight = 1
    router.state("cloud").in_flight = 2
    router.state("heavy").in_flight = 4  # 4 / 4 = 1 per weight < 2
    assert [r.provider.name for r in router.routes("m")] == ["hosted", "heavy", "cloud"]


def test_open_circuits_go_last_and_a_429_opens_for_its_retry_after(tmp_path):
    clock = Clock()
    router = _router(tmp_path, {"name": "a", "isHosted": True}, {"name": "b"}, clock=clock)
    router.failed("a", retry_after=5)
    assert [r.provider.name for r in router.routes("m")] == ["b", "a"]
    clock.now += 5.1
    assert router.routes("m")[0].provider.name == "a"


def test_consecutive_failures_eject_and_grow(tmp_path):
    clock = Clock()
    router = _router(tmp_path, {"name": "a"}, clock=clock)
    for _ in range(2):
        router.failed("a")
    assert not router.is_open("a")
    router.failed("a")
    assert router.is_open("a") and router.state("a").open_until == 1010.0
    clock.now += 11
    for _ in range(3):
        router.failed("a")
    assert router.state("a").open_until == clock.now + 20  # the second ejection is longer
    router.succeeded("a")
    assert router.state("a").failures == 0 and router.state("a").ejections == 0


def test_pinning_unknown_and_not_allowed(tmp_path):
    router = _router(tmp_path, {"name": "a"}, {"name": "b", "models": ["m", "org/model"]})
    assert [(r.provider.name, r.model) for r in router.routes("b/m")] == [("b", "m")]
    assert router.routes("org/model")[0].model == "org/model"  # a model name with a slash still routes
    with pytest.raises(ModelNotFound):
        router.routes("nope")
    with pytest.raises(ModelNotFound):
        router.routes("a/org/model")
    with pytest.raises(PermissionDenied):
        router.routes("m", allowed=frozenset({"other"}))


def test_opening_a_circuit_is_told_once_per_extension_and_others_can_open_it(tmp_path):
    clock = Clock()
    router = _router(tmp_path, {"name": "a"}, {"name": "b"}, clock=clock)
    told = []
    router.on_open = lambda name, seconds: told.append((name, seconds))
    router.failed("a", retry_after=5)
    router.failed("a", retry_after=2)  # already open longer: nothing new to tell
    for _ in range(3):
        router.failed("b")
    assert told == [("a", 5), ("b", 10)]
    router.open_for("b", 3)  # another replica's shorter opening does not shorten this one
    assert router.state("b").open_until == clock.now + 10
    router.open_for("c", 7)
    assert router.is_open("c") and told == [("a", 5), ("b", 10)]


def test_embeddings_skip_providers_that_cannot_serve_them(tmp_path):
    chat_only = {"name": "chat-only", "supportedProvider": "ANTHROPIC", "isHosted": True}  # first, were it kept
    router = _router(tmp_path / "both", chat_only, {"name": "embeds"})
    assert [r.provider.name for r in router.routes("m", kind="embeddings")] == ["embeds"]
    assert [r.provider.name for r in router.routes("m")] == ["chat-only", "embeds"]
    assert [r.provider.name for r in router.routes("embeds/m", kind="embeddings")] == ["embeds"]
    alone = _router(tmp_path / "alone", chat_only)  # none can: kept, so that its adapter's 400 says why
    assert [r.provider.name for r in alone.routes("m", kind="embeddings")] == ["chat-only"]
