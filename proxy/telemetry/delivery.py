"""The usage records' way out, assembled from the config: spool, batcher, sinks, heartbeat, retention.

Sinks: the local usage store (always), the Cast AI API (when `API_KEY` is set) and an OTLP/HTTP
collector (when `telemetry.otlpUrl` is set), each with its own lane in the spool.

Every record that does not reach a sink is counted in /metrics:
    aigw_usage_records_dropped_total{reason}     queue_full (memory bound while the disk refuses writes),
                                                 spool_full (drop_oldest at the cap), spool_corrupt
                                                 (damaged frames at recovery), dead_letter_full,
                                                 rejected_by_<sink> (an OTLP partial success),
                                                 unreadable (a record this version cannot decode)
    aigw_usage_records_dead_lettered_total{sink} refused for good, kept in {dataDir}/deadletter/
and around them: aigw_usage_records_sent_total{sink}, aigw_usage_sink_retries_total{sink,reason},
aigw_usage_spool_bytes, aigw_usage_spool_write_errors_total, aigw_usage_spool_corrupt_records_total,
aigw_heartbeats_total{result}.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import structlog

from proxy.config import Config
from proxy.telemetry import castai
from proxy.telemetry.batcher import Batcher
from proxy.telemetry.deadletter import DeadLetter
from proxy.telemetry.otlp import OtlpSink, collector_url
from proxy.telemetry.spool import Spool
from proxy.telemetry.store import UsageStore

log = structlog.get_logger("proxy.telemetry")
PRUNE_EVERY_S = 3600.0


class UsagePipeline:
    def __init__(self, cfg: Config, data: pathlib.Path, metrics) -> None:
        t = cfg.telemetry
        self.cfg = cfg
        self.store = UsageStore(str(data / "usage.db"))
        self.dead_letter = DeadLetter(data / "deadletter", max_bytes=t.dead_letter_max_bytes)
        self.exporters: list[OtlpSink] = []
        if castai.api_key(cfg):
            self.exporters.append(castai.sink(cfg, self.dead_letter, metrics))
        if t.otlp_url:
            self.exporters.append(OtlpSink("otlp", collector_url(t.otlp_url), cfg, headers=t.otlp_headers,
                                           dead_letter=self.dead_letter, metrics=metrics))
        self.batcher = Batcher([self.store, *self.exporters], Spool(data / "spool", max_bytes=t.spool_max_bytes), t,
                               metrics=metrics, cluster_id=cfg.castai.cluster_id)
        self.heartbeat = castai.Heartbeat(cfg, metrics) if castai.api_key(cfg) else None
        self._prune: asyncio.Task | None = None

    async def start(self) -> None:
        for exporter in self.exporters:
            await exporter.start()
        await self.batcher.start()
        if self.heartbeat is not None:
            self.heartbeat.start()
        self._prune = asyncio.get_running_loop().create_task(self._retention(), name="usage-retention")

    async def _retention(self) -> None:
        while True:
            try:
                await self.store.prune(self.cfg.telemetry.retention_days)
            except Exception:  # a failed prune is retried at the next tick, never fatal
                log.exception("usage_prune_failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    async def stop(self, timeout: float | None = None) -> None:
        """Flush for up to `timeout` s (drain.flushSeconds); the rest stays in the spool."""
        if self._prune is not None:
            self._prune.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune
        if self.heartbeat is not None:
            await self.heartbeat.close()
        await self.batcher.close(self.cfg.drain.flush_seconds if timeout is None else timeout)
        for exporter in self.exporters:
            await exporter.close()
        self.store.close()
