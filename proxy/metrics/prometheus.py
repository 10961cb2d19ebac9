"""Prometheus metrics, one set per app, with no locks or allocation on the request path.

Every name starts with `aigw_` (docs/metrics.md lists them). The per-request series (requests,
tokens, cost, latency, time to first token, upstream attempts and errors) are adds into this
worker's slab (proxy.metrics.share), a memory-mapped array the other workers can read. Rarer
counters and gauges are prometheus_client objects and collectors on `registry`, copied into the
slab every second and at every scrape. A scrape answers the sum over the whole process group.
"""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing
import os

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from proxy import __version__
from proxy.metrics.share import ENV, Group, Slab, View, idle, merge, share_across_workers, usage

__all__ = ["CONTENT_TYPE", "Metrics", "share_across_workers"]
log = structlog.get_logger("proxy.metrics.prometheus")

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PUBLISH_EVERY = 1.0  # seconds between copies of the rarer series into the slab
REQUEST_LABELS = ("model", "provider", "endpoint", "status")
TIMING_LABELS = ("model", "provider", "endpoint")
_REQUEST_FAMILIES = (  # one block of slots per label set, in this order
    ("aigw_requests", "Requests answered"),
    ("aigw_input_tokens", "Prompt tokens"),
    ("aigw_output_tokens", "Completion tokens"),
    ("aigw_cached_tokens", "Prompt tokens the provider served from its cache (part of the input tokens)"),
    ("aigw_cost_usd", "Cost in USD at list prices"),
)
_HIGHEST = frozenset({"aigw_circuit_open"})  # gauges the group reports as the highest, not the sum


class FastCounter:
    __slots__ = ("slab", "fid", "labels", "slots", "values")

    def __init__(self, slab: Slab, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.slab, self.labels = slab, labels
        self.fid = slab.family(name, "counter", doc)
        self.slots: dict[tuple, int] = {}
        self.values = slab.values

    def inc(self, key: tuple, amount: float = 1.0) -> None:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = self.slab.slot(self.fid, tuple(zip(self.labels, key, strict=True)))
        self.values[slot] += amount


class FastHistogram:
    __slots__ = ("slab", "fid", "labels", "buckets", "slots", "values", "sum_at")

    def __init__(self, slab: Slab, name: str, doc: str, labels: tuple[str, ...], buckets=_LATENCY) -> None:
        self.slab, self.labels, self.buckets = slab, labels, buckets
        self.fid = slab.family(name, "histogram", doc, buckets=list(buckets))
        self.slots: dict[tuple, int] = {}
        self.values = slab.values
        self.sum_at = len(buckets) + 1  # the buckets, +Inf, then the sum

    def observe(self, key: tuple, value: float) -> None:
        base = self.slots.get(key)
        if base is None:
            base = self.slots[key] = self.slab.slot(self.fid, tuple(zip(self.labels, key, strict=True)),
                                                    self.sum_at + 1)
        values = self.values
        values[base + bisect.bisect_left(self.buckets, value)] += 1
        values[base + self.sum_at] += value


class RequestCounters:
    """Requests, input, output and cached tokens and cost: five counters with the same labels,
    kept in adjacent slots so a request costs one lookup."""

    __slots__ = ("slab", "fids", "slots", "values")

    def __init__(self, slab: Slab) -> None:
        self.slab = slab
        self.fids = [slab.family(name, "counter", doc) for name, doc in _REQUEST_FAMILIES]
        self.slots: dict[tuple, int] = {}
        self.values = slab.values

    def add(self, key: tuple, input_tokens: int = 0, output_tokens: int = 0, cached: int = 0,
            cost: float = 0.0) -> None:
        base = self.slots.get(key)
        if base is None:
            base = self.slots[key] = self._new(key)
        values = self.values
        values[base] += 1
        if input_tokens or output_tokens:
            values[base + 1] += input_tokens
            values[base + 2] += output_tokens
            if cached:
                values[base + 3] += cached
        if cost:
            values[base + 4] += cost

    def _new(self, key: tuple) -> int:
        labels = tuple(zip(REQUEST_LABELS, key, strict=True))
        base = self.slab.slot(self.fids[0], labels, len(self.fids))
        for i, fid in enumerate(self.fids[1:], 1):  # the other four name slots of the same block
            self.slab.index(fid, labels, base + i if base else 0)
        return base


def _worker_name() -> str:
    """`0`, `1`, … for the supervisor's `worker-N` processes (stable across restarts)."""
    name = multiprocessing.current_process().name
    if name.startswith("worker-"):
        return name[len("worker-"):]
    return "0" if name == "MainProcess" else str(os.getpid())


class _Local(Collector):
    """This worker's gauges, copied into its slab with the rest of `registry`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        yield GaugeMetricFamily("aigw_requests_in_flight", "Requests being served", value=m.in_flight)
        yield GaugeMetricFamily("aigw_upstream_in_flight", "Upstream calls open", value=m.upstream_in_flight)
        circuits = GaugeMetricFamily("aigw_circuit_open", "1 while the provider's circuit is open",
                                     labels=("provider",))
        router = m.router
        if router is not None:
            for name in router.registry.by_name:
                circuits.add_metric((name,), 1.0 if router.is_open(name) else 0.0)
        yield circuits


class Metrics:
    def __init__(self, directory: str | None = None) -> None:
        slab = self.slab = Slab(directory or os.environ.get(ENV) or None, _worker_name())
        self.group = Group(slab)
        self.requests = RequestCounters(slab)
        self.latency = FastHistogram(slab, "aigw_request_duration_seconds", "Time to the whole answer",
                                     TIMING_LABELS)
        self.ttft = FastHistogram(slab, "aigw_time_to_first_token_seconds",
                                  "Streams only: time to the first byte relayed", TIMING_LABELS)
        self.attempts = FastCounter(slab, "aigw_upstream_attempts", "Upstream attempts", ("provider",))
        self.upstream_errors = FastCounter(slab, "aigw_upstream_errors", "Upstream failures by kind",
                                           ("provider", "kind"))
        self.in_flight = 0
        self.upstream_in_flight = 0
        self.router = None  # set by `start`: circuit states
        self._mirrored: dict[tuple, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        r = self.registry = CollectorRegistry(auto_describe=False)
        r.register(_Local(self))
        self.records_sent = Counter("aigw_usage_records_sent", "Usage records accepted by a sink",
                                    ["sink"], registry=r)
        self.records_dropped = Counter("aigw_usage_records_dropped", "Usage records dropped, by reason",
                                       ["reason"], registry=r)
        self.records_dead_lettered = Counter("aigw_usage_records_dead_lettered",
                                             "Usage records a sink refused for good, written to the dead-letter file",
                                             ["sink"], registry=r)
        self.sink_retries = Counter("aigw_usage_sink_retries", "Failed exports that will be retried",
                                    ["sink", "reason"], registry=r)
        self.spool_bytes = Gauge("aigw_usage_spool_bytes", "Bytes in the usage spool on disk", registry=r)
        self.spool_corrupt = Counter("aigw_usage_spool_corrupt_records", "Damaged spool frames skipped at recovery",
                                     registry=r)
        self.spool_write_errors = Counter("aigw_usage_spool_write_errors", "Failed writes to the usage spool",
                                          registry=r)
        self.heartbeats = Counter("aigw_heartbeats", "Heartbeats sent to the Cast AI API", ["result"], registry=r)
        self.admin_changes = Counter("aigw_admin_changes", "Changes made through the admin API", ["action"],
                                     registry=r)

    # -- the request path ------------------------------------------------------------------
    def finished(self, outcome, record, latency: float, registry) -> None:
        """Count one ended request (`outcome`: proxy.pipeline.outcome.Outcome). Only providers and
        models in `registry` become label values; anything else is `other`, so a caller cannot
        grow the series."""
        provider = record.provider
        if provider is None:
            provider = "none"
        elif provider not in registry.by_name:
            provider = "other"
        by_model = registry.by_model
        model = record.model_served
        if model not in by_model:
            model = outcome.model_requested if outcome.model_requested in by_model else "other"
        timing = (model, provider, outcome.endpoint)
        self.requests.add((*timing, str(outcome.http_status)), record.prompt_tokens, record.completion_tokens,
                          record.cached_tokens, record.cost_usd)
        self.latency.observe(timing, latency)
        if outcome.stream and outcome.ttft is not None:
            self.ttft.observe(timing, outcome.ttft)

    # -- the slab --------------------------------------------------------------------------
    def start(self, router=None) -> None:
        """Copy the rarer series into the slab every second, so a peer's scrape sees them."""
        self.router = router
        self.stop()
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        try:
            self.publish()
        except Exception:  # a failing collector must not stop the copies for good
            log.exception("metrics_publish_failed")
        self._timer = asyncio.get_running_loop().call_later(PUBLISH_EVERY, self._tick)

    def publish(self) -> None:
        slab, values, mirrored = self.slab, self.slab.values, self._mirrored
        for family in self.registry.collect():
            kind = family.type
            if kind not in ("counter", "gauge"):
                continue
            fid = slab.family(family.name, kind, family.documentation,
                              "max" if family.name in _HIGHEST else "sum")
            wanted = family.name + "_total" if kind == "counter" else family.name
            for sample in family.samples:
                if sample.name != wanted:
                    continue
                key = (fid, tuple(sorted(sample.labels.items())))
                slot = mirrored.get(key)
                if slot is None:
                    slot = mirrored[key] = slab.slot(fid, key[1])
                values[slot] = sample.value
        slab.write_header()  # with this worker's CPU time, kept for the group's once it is gone

    # -- a scrape --------------------------------------------------------------------------
    def render(self) -> bytes:
        self.publish()
        return generate_latest(_Snapshot(self))


class _Snapshot:
    """What one scrape reports: every slab of the group merged, and the processes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        views = m.group.all()
        own = m.group.own_view
        seen: dict[int, tuple | None] = {id(own): usage(os.getpid())}
        for view in views:
            if view is not own:
                seen[id(view)] = found = usage(view.pid, view.start)
                if found is None and idle(view):  # still in this scrape's figures (its CPU time)
                    m.group.forget(view)
        merged = merge(views, lambda v: v is own or seen[id(v)] is not None)
        for name, (family, series) in merged.items():
            yield _family(name, family, series)
        live = [v for v in views if v is own or seen[id(v)] is not None]
        yield GaugeMetricFamily("aigw_workers", "Worker processes serving", value=len(live))
        build = GaugeMetricFamily("aigw_build_info", "The gateway's version", labels=("version",))
        build.add_metric((__version__,), 1.0)
        yield build
        yield from _processes(m, views, seen)


def _family(name: str, family: tuple, series: dict) -> Metric:
    _, kind, doc, _, buckets = family
    metric = Metric(name, doc, kind)
    for labels, values in series.items():
        tags = dict(labels)
        if kind == "counter":
            metric.add_sample(name + "_total", tags, values[0])
        elif kind == "gauge":
            metric.add_sample(name, tags, values[0])
        else:
            cumulative = 0.0
            for bound, count in zip((*buckets, "+Inf"), values, strict=False):
                cumulative += count
                metric.add_sample(name + "_bucket", {**tags, "le": str(bound)}, cumulative)
            metric.add_sample(name + "_count", tags, cumulative)
            metric.add_sample(name + "_sum", tags, values[-1])
    return metric


def _processes(m: Metrics, views: list[View], seen: dict):
    """process_* per worker (`worker` label), the supervisor, and the group (`worker="all"`).
    The group's CPU counter adds the last CPU time a dead worker published, and never reports
    less than any scrape of the group reported before, so a restart does not make it go back."""
    rss = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes", labels=("worker",))
    cpu = Metric("process_cpu_seconds", "User and system CPU time in seconds", "counter")
    fds = GaugeMetricFamily("process_open_fds", "Open file descriptors", labels=("worker",))
    rows = [(v.worker, seen[id(v)]) for v in views if seen[id(v)] is not None]
    if m.group.directory is not None:
        rows.append(("supervisor", usage(os.getppid())))
    rows = [(name, got) for name, got in rows if got is not None]
    group_cpu = sum(got[1] for _, got in rows) + sum(v.cpu for v in views if seen[id(v)] is None)
    group_cpu = max([group_cpu] + [v.group_cpu for v in views])
    m.slab.group_cpu = group_cpu
    m.slab.write_header()
    if not rows:
        return  # no /proc here
    for name, (resident, seconds, open_fds) in rows:
        rss.add_metric((name,), resident)
        cpu.add_sample("process_cpu_seconds_total", {"worker": name}, seconds)
        fds.add_metric((name,), open_fds)
    rss.add_metric(("all",), sum(got[0] for _, got in rows))
    cpu.add_sample("process_cpu_seconds_total", {"worker": "all"}, group_cpu)
    fds.add_metric(("all",), sum(got[2] for _, got in rows))
    yield from (rss, cpu, fds)
