"""A fake Cast AI API: OTLP/JSON logs ingest (gzip) and the heartbeat, with faults on demand.

    fake.set("healthy" | "refuse" | "hang" | "429" | "413" | "status", status=…, retry_after=…,
             limit=…, times=…)
- healthy: 200 and the batch is kept (`records`, and appended to `out` as JSON lines when given)
- refuse: the listener is closed (connection refused) until the mode changes
- hang: the request is read, then never answered
- 429: 429 with `Retry-After: {retry_after}`
- 413: 413 for batches of more than `limit` records, 200 for the others
- status: any other status (400, 401, 403, 500, 502, 503, 504…)
`times`: the fault applies to that many requests, then the fake is healthy again.

In-process: `await FakeCastAI().start()`. As a separate process (crash tests), it persists every
acknowledged batch before answering and takes its mode over a control port:
    python -m tests.fakes.castai --out FILE --ports-file FILE
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import time

import orjson
from aiohttp import web

INGEST = "/ai-optimizer/v1beta/logs:ingest"
HEARTBEAT = "/ai-optimizer/v1beta/components:heartbeat"


def value_of(any_value: dict):
    """An OTLP AnyValue as a Python value (ints arrive as decimal strings)."""
    if not any_value:
        return None
    (kind, value), = any_value.items()
    if kind == "intValue":
        return int(value)
    if kind == "arrayValue":
        return [value_of(v) for v in value.get("values", [])]
    return value


def decode_logs(body: bytes) -> tuple[dict, list[dict]]:
    """(resource attributes, one dict of attributes per log record) of an ExportLogsServiceRequest."""
    doc = orjson.loads(body)
    (resource_logs,) = doc["resourceLogs"]
    resource = {a["key"]: value_of(a["value"]) for a in resource_logs["resource"]["attributes"]}
    out = []
    for scope in resource_logs["scopeLogs"]:
        for log_record in scope["logRecords"]:
            assert isinstance(log_record["timeUnixNano"], str) and log_record["timeUnixNano"].isdigit()
            assert log_record["body"]["stringValue"]
            out.append({a["key"]: value_of(a["value"]) for a in log_record["attributes"]})
    return resource, out


class FakeCastAI:
    def __init__(self, api_key: str | None = None, out: str | None = None) -> None:
        self.api_key = api_key
        self.out = open(out, "ab") if out else None  # noqa: SIM115 (kept open for the fake's life)
        self.mode, self.status, self.retry_after, self.limit, self.times = "healthy", 200, 1, 1, None
        self.records: list[dict] = []
        self.batches: list[int] = []  # sizes of acknowledged batches
        self.attempts: list[dict] = []  # every ingest request: time, records, answer
        self.heartbeats: list[dict] = []
        self.resource: dict = {}
        self.port = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post(INGEST, self._ingest)
        self.app.router.add_post(HEARTBEAT, self._heartbeat)

    async def start(self, port: int = 0) -> FakeCastAI:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen(port)
        return self

    async def _listen(self, port: int) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.out is not None:
            self.out.close()

    async def set(self, mode: str, *, status: int = 200, retry_after: float = 1, limit: int = 1,
                  times: int | None = None) -> None:
        self.mode, self.status, self.retry_after, self.limit, self.times = mode, status, retry_after, limit, times
        if mode == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
            for connection in self._runner.server.connections:  # kept-alive ones too
                connection.force_close()
        elif mode != "refuse" and self._site is None:
            await self._listen(self.port)

    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    async def _ingest(self, request: web.Request) -> web.Response:
        raw = await request.read()  # aiohttp already inflates a gzip body; the header says it was one
        body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        try:
            resource, records = decode_logs(body)
        except (ValueError, KeyError, AssertionError) as exc:
            return web.json_response({"message": f"bad OTLP: {exc!r}"}, status=400)
        seen = {"at": time.monotonic(), "records": len(records), "mode": self.mode,
                "gzip": request.headers.get("Content-Encoding") == "gzip"}
        self.attempts.append(seen)
        if self.api_key is not None and request.headers.get("X-API-Key") != self.api_key:
            seen["answer"] = 401
            return web.json_response({"message": "invalid API key"}, status=401)
        answer = await self._fault(len(records))
        seen["answer"] = answer.status
        if answer.status == 200:
            self._keep(resource, records)
        return answer

    async def _fault(self, count: int) -> web.Response:
        mode = self.mode
        if self.times is not None:
            self.times -= 1
            if self.times < 0:
                mode = "healthy"
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "429":
            return web.json_response({"message": "slow down"}, status=429,
                                     headers={"Retry-After": str(self.retry_after)})
        if mode == "413" and count > self.limit:
            return web.json_response({"message": "too large"}, status=413)
        if mode == "status":
            return web.json_response({"message": "fake failure"}, status=self.status)
        return web.json_response({})

    def _keep(self, resource: dict, records: list[dict]) -> None:
        self.resource = resource
        self.records.extend(records)
        self.batches.append(len(records))
        if self.out is not None:
            self.out.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            self.out.flush()

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self.heartbeats.append({"key": request.headers.get("X-API-Key"), **(await request.json())})
        return web.json_response({})


async def _serve(args) -> None:
    fake = await FakeCastAI(args.api_key, args.out).start(args.port)

    async def control(request: web.Request) -> web.Response:
        spec = await request.json()
        await fake.set(spec.pop("mode"), **spec)
        return web.json_response({"mode": fake.mode})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"records": len(fake.records), "batches": len(fake.batches),
                                  "attempts": len(fake.attempts)})

    app = web.Application()
    app.router.add_post("/control", control)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = site._server.sockets[0].getsockname()[1]
    tmp = args.ports_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{fake.port} {control_port}\n")
    os.replace(tmp, args.ports_file)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--out")
    parser.add_argument("--ports-file", required=True)
    asyncio.run(_serve(parser.parse_args()))
