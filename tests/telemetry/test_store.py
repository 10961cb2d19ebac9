"""The local usage store: idempotent writes, records back as they went in, retention, migration."""

from __future__ import annotations

import sqlite3
import time

from proxy.telemetry.record import encode
from proxy.telemetry.store import UsageStore
from tests.telemetry.helpers import record


async def test_a_resent_batch_changes_nothing(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    batch = [record(i, tags=["team:a", "env:prod"]) for i in range(5)]
    await store.send(batch)
    await store.send(batch + [record(9)])
    assert [r.id for r in await store.records()] == [*(r.id for r in batch), "rec-00000009"]
    tags = store._db.execute("SELECT COUNT(*) FROM usage_tags").fetchone()[0]
    assert tags == 10 + 1  # the trigger runs for inserted rows only
    store.close()


async def test_records_come_back_as_they_went_in(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    r = record(1, stream=True, tokens_estimated=True, ttft_ms=None, error_type="upstream_timeout", cache_hit=True)
    await store.send([r])
    assert await store.records() == [r]
    store.close()


async def test_retention_prunes_old_records_and_their_tags(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    now = time.time()
    await store.send([record(i, ts=now - 40 * 86400 + i) for i in range(6000)] + [record(9999, ts=now)])
    assert await store.prune(30) == 6000
    assert [r.id for r in await store.records()] == ["rec-00009999"]
    assert store._db.execute("SELECT COUNT(*) FROM usage_tags").fetchone()[0] == 1
    store.close()


def test_a_store_of_the_first_schema_is_migrated(tmp_path):
    path = str(tmp_path / "u.db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE usage (id TEXT PRIMARY KEY, ts REAL NOT NULL, tags TEXT, record BLOB NOT NULL)")
    db.execute("CREATE INDEX usage_ts ON usage (ts)")
    db.execute("INSERT INTO usage VALUES (?, ?, ?, ?)", ("rec-00000001", 1.0, "[]", encode(record(1, ts=1.0))))
    db.commit()
    db.close()
    store = UsageStore(path)
    assert [r.id for r in store._records(0)] == ["rec-00000001"]
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 3  # version 3 added `endpoint`
    store.close()


def test_a_version_2_store_gets_the_endpoint_column_and_its_rows_read_as_chat(tmp_path):
    path = str(tmp_path / "u.db")
    store = UsageStore(path)
    store._write([record(1)])
    store.close()
    db = sqlite3.connect(path)  # the store as version 2 left it: no `endpoint` column, no index on it
    db.execute("DROP INDEX usage_by_endpoint")
    db.execute("ALTER TABLE usage DROP COLUMN endpoint")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = UsageStore(path)
    store._write([record(2, endpoint="messages")])
    assert [(r.id, r.endpoint) for r in store._records(0)] == [("rec-00000001", "chat"), ("rec-00000002", "messages")]
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert store._db.execute("SELECT name FROM sqlite_master WHERE name = 'usage_by_endpoint'").fetchone()
    store.close()
    UsageStore(path).close()  # opening it again changes nothing
