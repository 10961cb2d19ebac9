"""One request's calls to providers, as dispatch makes them: how many, which provider answered
last, when the first began and the last ended. Dispatch writes it; the pipeline reads it once,
when the request ends, to build the request's outcome."""

from __future__ import annotations

import time

from proxy.keys import last4
from proxy.upstream.registry import Provider
from proxy.upstream.router import Health, Router


class Attempts:
    __slots__ = ("request_id", "router", "metrics", "count", "failures", "provider", "key_last4", "started", "ended", "_health")

    def __init__(self, request_id: str, router: Router, metrics) -> None:
        self.request_id = request_id  # for the log lines of its attempts
        self.router = router
        self.metrics = metrics  # its `upstream_in_flight` gauge counts calls being made
        self.count = 0
        self.failures = 0  # attempts that failed over to another
        self.provider: Provider | None = None  # the provider called last
        self.key_last4: str | None = None  # of the key that provider answered with
        self.started: float | None = None
        self.ended: float | None = None
        self._health: Health | None = None

    def begin(self, provider: Provider) -> None:
        self.release()
        self.count += 1
        self.provider = provider
        self._health = health = self.router.state(provider.name)
        health.in_flight += 1  # what least-busy routing reads
        self.metrics.upstream_in_flight += 1
        if self.started is None:
            self.started = time.monotonic()

    def failed(self) -> None:
        self.failures += 1

    def answered(self, key: str | None) -> None:
        self.key_last4 = last4(key) if key else None

    def release(self) -> None:
        """The provider is no longer being called for this request (safe to repeat)."""
        if self._health is not None:
            self._health.in_flight -= 1
            self._health = None
            self.metrics.upstream_in_flight -= 1
            self.ended = time.monotonic()

    def upstream_seconds(self) -> float:
        """Time spent waiting on providers, from the first call to the last answer read."""
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started
