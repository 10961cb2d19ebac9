"""The dead-letter file: records a sink refused for good (HTTP 400/401/403…), kept with the reason.

JSON lines, one per record, under `{dataDir}/deadletter/{sink}.jsonl`:
    {"time": "…", "sink": "castai", "status": 401, "reason": "<the answer, cut>", "record": {…}}
The file stops growing at `max_bytes` (a wrong API key refuses every batch); records beyond
it are counted as dropped instead.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib

import msgspec
import orjson

from proxy.telemetry.record import UsageRecord


class DeadLetter:
    def __init__(self, directory: pathlib.Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def path(self, sink: str) -> pathlib.Path:
        return self.directory / f"{sink}.jsonl"

    async def write(self, sink: str, records: list[UsageRecord], status: int, reason: str) -> int:
        """Append the records; returns how many fitted under the cap."""
        return await asyncio.to_thread(self._write, sink, records, status, reason)

    def _write(self, sink: str, records: list[UsageRecord], status: int, reason: str) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(sink)
        size = path.stat().st_size if path.exists() else 0
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = []
        for record in records:
            line = orjson.dumps({"time": now, "sink": sink, "status": status, "reason": reason,
                                 "record": msgspec.to_builtins(record)}) + b"\n"
            if size + len(line) > self.max_bytes:
                break
            size += len(line)
            lines.append(line)
        if lines:
            with path.open("ab") as out:
                out.write(b"".join(lines))
        return len(lines)
