"""The local usage store (SQLite, WAL): a sink for records and the source of the report."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3

import orjson

from proxy.telemetry.record import UsageRecord, decode, encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
  id TEXT PRIMARY KEY, ts REAL NOT NULL, api_key_id TEXT, provider TEXT, provider_type TEXT,
  model_requested TEXT, model_served TEXT, status TEXT, error_type TEXT,
  prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, total_tokens INTEGER,
  cost_usd REAL, savings_usd REAL, latency_ms REAL, ttft_ms REAL, stream INTEGER,
  tags TEXT, record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
"""


class UsageStore:
    name = "local"

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # One thread owns the connection: writes never block the event loop or each other.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="usage-store")

    def _write(self, records: list[UsageRecord]) -> None:
        rows = [(r.id, r.ts, r.api_key_id, r.provider, r.provider_type, r.model_requested,
                 r.model_served, r.status, r.error_type, r.prompt_tokens, r.completion_tokens,
                 r.cached_tokens, r.total_tokens, r.cost_usd, r.savings_usd, r.latency_ms, r.ttft_ms,
                 int(r.stream), orjson.dumps(r.tags).decode(), encode(r)) for r in records]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO usage VALUES (" + ",".join("?" * 20) + ")", rows)

    async def send(self, records: list[UsageRecord]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write, records)

    def _records(self, since: float) -> list[UsageRecord]:
        rows = self._db.execute("SELECT record FROM usage WHERE ts >= ? ORDER BY ts", (since,))
        return [decode(row[0]) for row in rows]

    async def records(self, since: float = 0.0) -> list[UsageRecord]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._records, since)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._db.close()
