"""The local usage store (SQLite, WAL): a sink for records, and the table the usage report reads.

One row per record, every field a column, `INSERT OR IGNORE` on the record id: a batch resent
after a crash changes nothing. For the report, one covering index per grouping (led by the
grouping column, then `ts`, then the figures) lets a report over a million records walk an index
in group order: no sort, no table lookups. `usage_tags` (a row per tag of a record, written only
for rows actually inserted) serves the tag grouping the same way. Records older than the
retention are pruned in the background.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sqlite3
import time

import msgspec
import orjson
import structlog

from proxy.telemetry.record import UsageRecord

log = structlog.get_logger("proxy.telemetry")

FIELDS = UsageRecord.__struct_fields__
_BOOLS = ("stream", "tokens_estimated", "recovered", "cache_hit")
FIGURES = "status, prompt_tokens, completion_tokens, cost_usd, savings_usd, latency_ms, ttft_ms"
GROUP_COLUMNS = {"model": "model", "provider": "provider", "apiKey": "api_key_id", "endpoint": "endpoint"}

_TYPES = {"stream": "INTEGER", "tokens_estimated": "INTEGER", "recovered": "INTEGER", "cache_hit": "INTEGER",
          "prompt_tokens": "INTEGER", "completion_tokens": "INTEGER", "cached_tokens": "INTEGER",
          "reasoning_tokens": "INTEGER", "total_tokens": "INTEGER", "attempts": "INTEGER",
          "latency_ms": "REAL", "ttft_ms": "REAL", "proxy_overhead_ms": "REAL", "cost_usd": "REAL",
          "savings_usd": "REAL", "ts": "REAL NOT NULL", "id": "TEXT NOT NULL UNIQUE"}
_DEFAULTS = {"endpoint": "'chat'"}  # the value rows written before the column existed get
_COLUMNS = ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in FIELDS)
_INDEXES = "\n".join(f"CREATE INDEX IF NOT EXISTS usage_by_{group} ON usage ({column}, ts, {FIGURES});"
                     for group, column in GROUP_COLUMNS.items())
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage (rid INTEGER PRIMARY KEY, {_COLUMNS}, model TEXT);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
{_INDEXES}
CREATE TABLE IF NOT EXISTS usage_tags (
  tag TEXT NOT NULL, ts REAL NOT NULL, rid INTEGER NOT NULL, model TEXT, provider TEXT, api_key_id TEXT,
  status TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, savings_usd REAL,
  latency_ms REAL, ttft_ms REAL, PRIMARY KEY (tag, ts, rid)) WITHOUT ROWID;
DROP TRIGGER IF EXISTS usage_tags_add;
CREATE TRIGGER IF NOT EXISTS usage_tags_remove AFTER DELETE ON usage WHEN OLD.tags <> '[]' BEGIN
  DELETE FROM usage_tags WHERE tag IN (SELECT value FROM json_each(OLD.tags)) AND ts = OLD.ts AND rid = OLD.rid;
END;
PRAGMA user_version = 4;
"""
_ROW = f"({', '.join('?' * (len(FIELDS) + 1))})"
# A batch is written in a few statements, not a statement a row: sqlite3 lets go of the GIL at
# every step, and a step that must take it back from a busy event loop waits for the loop to
# let go (up to the switch interval). A statement a row, the local store fell behind a loaded
# gateway (~3,000 rows/s kept up with) and its lane read every record back from the spool.
# Each statement size is prepared once and kept (by sqlite3's statement cache and here): a size
# for every length of batch would keep one a length, ~60 MB for lengths 1 to 200. So a batch goes
# in pieces of 128 rows, and the rest in at most seven pieces of 64, 32, …, 1: eight statements in
# all (~4,000 bound values in the largest: under SQLite's 32,766; pieces of 32 before 3.32's 999).
_ROWS_PER_INSERT = 128 if sqlite3.sqlite_version_info >= (3, 32) else 32
# Up to 3.x a trigger wrote the tag rows through json_each, row by row; version 4 writes a batch's
# in one statement (20 µs of CPU a row with one tag before, 10 after, this host). A record
# stored already finds its tag rows there: the same keys, ignored.
_TAGS = (f"INSERT OR IGNORE INTO usage_tags SELECT json_extract(t.value, '$[0]'), u.ts, u.rid, u.model, u.provider, "
         f"u.api_key_id, u.{FIGURES.replace(', ', ', u.')} "
         "FROM json_each(?) AS t JOIN usage AS u ON u.id = json_extract(t.value, '$[1]')")
_PRUNE = "DELETE FROM usage WHERE rid IN (SELECT rid FROM usage WHERE ts < ? LIMIT 5000)"


_TAGS_BACK = FIELDS.index("tags") - len(FIELDS)  # where `tags` lies, counted back from a row's last field

# sqlite3 (before Python 3.12) looks for an adapter for every bound value that is not exactly an
# int, float or str, and when it finds none it raises and swallows an AttributeError: 0.36 µs for
# a None, 0.49 for a bool, against 0.09 for an int. A record has four bools and a few Nones, so
# that was a fifth of its row's insert, with the GIL held. Registered (process-wide: every
# sqlite3 connection binds the same values as before, NULL and 0/1), each costs a dict lookup.
sqlite3.register_adapter(type(None), {}.get)  # {}.get(None) is None: a C call, no Python frame
sqlite3.register_adapter(bool, int)


def row(record: UsageRecord) -> tuple:
    return tuple(_values([record]))


def _values(records: list[UsageRecord]) -> list:
    """The rows of `records` in one flat list, as a multi-row INSERT binds them: every field of a
    record, its tags as JSON, then `model`. Built with C-level extends (a comprehension over every
    value of every row cost as much CPU as SQLite's insert of the row)."""
    values: list = []
    extend, append, astuple, dumps = values.extend, values.append, msgspec.structs.astuple, orjson.dumps
    at = _TAGS_BACK
    for record in records:
        extend(astuple(record))
        tags = record.tags
        values[at] = dumps(tags).decode() if tags else "[]"
        append(record.model_served or record.model_requested)
    return values


@functools.cache
def _insert_rows(rows: int) -> str:
    return f"INSERT OR IGNORE INTO usage ({', '.join(FIELDS)}, model) VALUES {', '.join([_ROW] * rows)}"


def insert(db: sqlite3.Connection, records: list[UsageRecord]) -> None:
    """Insert `records` and their tag rows, in the caller's transaction; a record whose id is
    stored already changes nothing."""
    start, left = 0, len(records)
    while left:
        size = _ROWS_PER_INSERT if left >= _ROWS_PER_INSERT else 1 << (left.bit_length() - 1)
        db.execute(_insert_rows(size), _values(records[start:start + size]))
        start, left = start + size, left - size
    tags = [(tag, r.id) for r in records for tag in r.tags]
    if tags:
        db.execute(_TAGS, (orjson.dumps(tags).decode(),))


def from_row(values) -> UsageRecord:
    data = dict(zip(FIELDS, values, strict=False))
    for name in _BOOLS:
        data[name] = bool(data[name])
    data["tags"] = orjson.loads(data["tags"])
    return UsageRecord(**data)


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 10000")  # workers of one gateway share the file
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version < 2:
        _migrate(db)
    elif version < 3:
        _add_columns(db)
    elif version < 4:
        db.executescript(SCHEMA)  # the tag rows' trigger goes: `insert` writes them
    return db


def _add_columns(db: sqlite3.Connection) -> None:
    """Version 3 added `endpoint`: new record fields become columns of an existing table. Under
    one write lock, so workers opening the same file at once add each column once."""
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {r[1] for r in db.execute("PRAGMA table_info(usage)")}
        for name in FIELDS:
            if name not in have:
                default = f" DEFAULT {_DEFAULTS[name]}" if name in _DEFAULTS else ""
                db.execute(f"ALTER TABLE usage ADD COLUMN {name} {_TYPES.get(name, 'TEXT')}{default}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.executescript(SCHEMA)  # the indexes the new columns lead


def _migrate(db: sqlite3.Connection) -> None:
    """The first schema kept each record as a JSON blob: move those rows into the new table."""
    old = [r[1] for r in db.execute("PRAGMA table_info(usage)")]
    if "record" in old:
        db.execute("ALTER TABLE usage RENAME TO usage_v1")
        for index in ("usage_ts",):
            db.execute(f"DROP INDEX IF EXISTS {index}")
    db.executescript(SCHEMA)
    if "record" in old:
        decode = msgspec.json.Decoder(UsageRecord).decode
        records = [decode(blob) for (blob,) in db.execute("SELECT record FROM usage_v1")]
        db.execute("BEGIN")
        insert(db, records)
        db.execute("DROP TABLE usage_v1")
        db.execute("COMMIT")


class UsageStore:
    name = "local"
    # Batches of up to 512 (`telemetry.batchSize` when smaller): the insert shares the gateway's
    # core with the requests. A batch is a few statements (BEGIN, its rows in pieces of 128, their
    # tags, COMMIT), and each costs the store's thread a wait for the GIL when the loop is busy: a
    # statement a row and batches of 128 kept up with ~3,000 records/s, less than a loaded core serves:
    # the lane fell ever further behind and read every record back from the spool. The records
    # come from memory (proxy.telemetry.lane), not decoded here; a batch holds the GIL only to
    # turn records into rows and bind their values (~3 µs a row), and sqlite3 lets go of it while
    # a statement runs.
    batch_size = 512

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = connect(path)
        # One thread owns the connection: writes never block the event loop or each other.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="usage-store")

    def _run(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _write(self, records: list[UsageRecord]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            insert(self._db, records)

    async def send(self, records: list[UsageRecord]) -> None:
        await self._run(self._write, records)

    def _records(self, since: float) -> list[UsageRecord]:
        cursor = self._db.execute(f"SELECT {', '.join(FIELDS)} FROM usage WHERE ts >= ? ORDER BY ts, rid", (since,))
        return [from_row(values) for values in cursor]

    async def records(self, since: float = 0.0) -> list[UsageRecord]:
        return await self._run(self._records, since)

    async def query(self, fn, *args):
        """Run `fn(connection, *args)` on the store's thread (the usage report)."""
        return await self._run(fn, self._db, *args)

    def _prune(self, before: float) -> int:
        removed = 0
        while True:
            with self._db:
                count = self._db.execute(_PRUNE, (before,)).rowcount
            removed += count
            if count < 5000:
                break
        self._db.execute("PRAGMA analysis_limit = 1000")
        self._db.execute("ANALYZE")  # statistics let a narrow window skip-scan the indexes
        return removed

    async def prune(self, retention_days: float) -> int:
        """Delete records older than the retention; returns how many."""
        removed = await self._run(self._prune, time.time() - retention_days * 86400)
        if removed:
            log.info("usage_pruned", records=removed, retention_days=retention_days)
        return removed

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._db.close()
