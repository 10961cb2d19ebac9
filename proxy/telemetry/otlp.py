"""Usage records as OTLP logs over HTTP, JSON-encoded (opentelemetry-proto `ExportLogsServiceRequest`).

The OTLP/JSON rules (opentelemetry-proto docs/specification.md, "JSON Protobuf Encoding"):
lowerCamelCase field names; 64-bit integers (`timeUnixNano`, `intValue`) as decimal strings;
enums as integers (`severityNumber`); trace and span ids, when present, as hex (none are sent).
One log record per usage record: `timeUnixNano` is the request's time, `body` a fixed string,
and the record's fields (docs/records.md, camelCase) are the attributes, each an AnyValue; a field
with no value is an empty AnyValue. The resource names the service, its version and the cluster.

`OtlpSink` posts a batch gzip-compressed and classifies the answer (OTLP/HTTP spec, docs/records.md):
    2xx                  taken (a `partialSuccess` is counted as dropped: it must not be retried)
    413                  the batch is split in halves, down to single records
    408, 429, 5xx        Retryable, with the answer's Retry-After
    other 4xx            refused for good: dead-letter file, metric, one error log
    no answer, timeout   Retryable
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson
import structlog

from proxy import __version__
from proxy.config import Config
from proxy.net import egress
from proxy.net.http import retry_after_seconds
from proxy.telemetry.lane import Retryable
from proxy.telemetry.record import UsageRecord

log = structlog.get_logger("proxy.telemetry")

SERVICE = "ai-enabler-proxy"
SCOPE = {"name": "ai-enabler-proxy.usage", "version": __version__}
BODY = {"stringValue": "llm.usage"}
SEVERITY_INFO = 9
_RETRY = frozenset({408, 429})
_FIELDS = tuple((name, encoded) for name, encoded in zip(UsageRecord.__struct_fields__,
                                                         UsageRecord.__struct_encode_fields__, strict=True)
                if name != "ts")


def any_value(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def attributes(values: Mapping[str, object]) -> list[dict]:
    return [{"key": key, "value": any_value(value)} for key, value in values.items()]


def resource(cluster_id: str | None) -> dict:
    attrs = {"service.name": SERVICE, "service.version": __version__}
    if cluster_id:
        attrs["castai.cluster.id"] = cluster_id
    return {"attributes": attributes(attrs)}


def log_record(record: UsageRecord, observed_ns: str) -> dict:
    attrs = [{"key": encoded, "value": any_value(getattr(record, name))} for name, encoded in _FIELDS]
    return {"timeUnixNano": str(round(record.ts * 1000) * 1_000_000), "observedTimeUnixNano": observed_ns,
            "severityNumber": SEVERITY_INFO, "severityText": "INFO", "eventName": "llm.usage",
            "body": BODY, "attributes": attrs}


def encode(records: list[UsageRecord], resource_: dict) -> bytes:
    """An `ExportLogsServiceRequest` in OTLP/JSON."""
    observed = str(time.time_ns())
    return orjson.dumps({"resourceLogs": [{"resource": resource_, "scopeLogs": [
        {"scope": SCOPE, "logRecords": [log_record(r, observed) for r in records]}]}]})


def _compressed(records: list[UsageRecord], resource_: dict) -> bytes:
    return gzip.compress(encode(records, resource_), compresslevel=5)


class _Partial(msgspec.Struct, rename="camel"):
    rejected_log_records: int | str = 0
    error_message: str = ""


class _Answer(msgspec.Struct, rename="camel"):
    partial_success: _Partial | None = None


_answer = msgspec.json.Decoder(_Answer)


class OtlpSink:
    """Any OTLP/HTTP logs endpoint; the Cast AI sink is one with its URL and key header."""

    def __init__(self, name: str, url: str, cfg: Config = Config(), *, headers: Mapping[str, str] | None = None,
                 dead_letter=None, metrics=None) -> None:
        self.name = name
        self.url = url
        self.via = egress.options(cfg.egress, url)  # forward proxy and TLS, as for every outbound call
        self.headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                        "User-Agent": f"{SERVICE}/{__version__}", **(headers or {})}
        self.resource = resource(cfg.castai.cluster_id)
        self.timeout = cfg.telemetry.export_timeout
        self.dead_letter = dead_letter
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None
        self._encoded: tuple[list, bytes] | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=4, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def send(self, records: list[UsageRecord]) -> None:
        status, retry_after, text = await self._post(await self._body(records))
        if 200 <= status < 300:
            self._partial(text, len(records))
        elif status == 413 and len(records) > 1:
            half = len(records) // 2
            await self.send(records[:half])
            await self.send(records[half:])
        elif status in _RETRY or status >= 500 or not 400 <= status < 500:
            raise Retryable(f"http_{status}", retry_after)
        else:
            await self._refused(records, status, text)
        self._encoded = None  # the batch is handled

    async def _body(self, records: list[UsageRecord]) -> bytes:
        """The gzipped request; a retry of the same batch reuses it rather than encoding again."""
        cached = self._encoded
        if cached is not None and cached[0] is records:
            return cached[1]
        body = await asyncio.to_thread(_compressed, records, self.resource)
        self._encoded = (records, body)
        return body

    async def _post(self, body: bytes) -> tuple[int, float | None, bytes]:
        try:
            async with self.session.post(self.url, data=body, headers=self.headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout), **self.via) as resp:
                text = await resp.content.read(64 * 1024)
                return resp.status, retry_after_seconds(resp.headers.get("Retry-After")), text
        except TimeoutError:
            raise Retryable("timeout") from None
        except aiohttp.ClientConnectorError:
            raise Retryable("connect") from None
        except (aiohttp.ClientError, OSError):
            raise Retryable("connection") from None

    def _partial(self, text: bytes, sent: int) -> None:
        try:
            partial = _answer.decode(text).partial_success if text else None
        except msgspec.DecodeError:
            return
        rejected = int(partial.rejected_log_records or 0) if partial is not None else 0
        if rejected:
            if self.metrics is not None:
                self.metrics.records_dropped.labels(f"rejected_by_{self.name}").inc(min(rejected, sent))
            log.warning("sink_partial_success", sink=self.name, rejected=rejected, message=partial.error_message[:200])

    async def _refused(self, records: list[UsageRecord], status: int, text: bytes) -> None:
        reason = text[:300].decode("utf-8", "replace")
        log.error("sink_refused_batch", sink=self.name, status=status, records=len(records), answer=reason,
                  detail="the records were written to the dead-letter file")
        kept = await self.dead_letter.write(self.name, records, status, reason) if self.dead_letter else 0
        if self.metrics is not None:
            if kept:
                self.metrics.records_dead_lettered.labels(self.name).inc(kept)
            if kept < len(records):
                self.metrics.records_dropped.labels("dead_letter_full").inc(len(records) - kept)


def collector_url(url: str) -> str:
    """A collector's base URL gets the OTLP logs path (`/v1/logs`); a URL with a path is used as given."""
    return url.rstrip("/") + "/v1/logs" if urlsplit(url).path in ("", "/") else url
