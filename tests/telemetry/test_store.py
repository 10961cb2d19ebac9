"""The local usage store: idempotent writes, records back as they went in, retention, migration."""

from __future__ import annotations

import sqlite3
import time

import orjson

from proxy.telemetry import store as store_module
from proxy.telemetry.record import encode
from proxy.telemetry.store import UsageStore
from tests.telemetry.helpers import record


async def test_a_resent_batch_changes_nothing(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    batch = [record(i, tags=["team:a", "env:prod"]) for i in range(5)]
    await store.send(batch)
    await store.send(batch + [record(9, tags=["team:b"])])
    assert [r.id for r in await store.records()] == [*(r.id for r in batch), "rec-00000009"]
    tags = store._db.execute("SELECT tag, rid, ts, model, status FROM usage_tags ORDER BY rid, tag").fetchall()
    rows = store._db.execute("SELECT rid, ts, model, status, tags FROM usage ORDER BY rid").fetchall()
    # tag rows for inserted records only, each carrying its record's row id and figures
    assert tags == [(tag, rid, ts, model, status) for rid, ts, model, status, tagged in rows
                    for tag in sorted(orjson.loads(tagged))]
    assert len(tags) == 10 + 1
    store.close()


def test_a_batch_larger_than_one_statement_gets_every_row_and_tag_row(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_ROWS_PER_INSERT", 7)  # the bound-values limit of an old SQLite, scaled down
    store = UsageStore(str(tmp_path / "u.db"))
    batch = [record(i, tags=[f"team:t{i % 3}"] if i % 2 else []) for i in range(100)]
    store._write(batch)
    assert [r.id for r in store._records(0)] == [r.id for r in batch]
    got = store._db.execute("SELECT u.id, t.tag FROM usage_tags t JOIN usage u ON u.rid = t.rid ORDER BY u.id").fetchall()
    assert got == [(r.id, r.tags[0]) for r in batch if r.tags]
    store.close()


async def test_records_come_back_as_they_went_in(tmp_path):
    store = UsageStore(str(tmp_path / "u.db"))
    r = record(1, stream=True, tokens_estimated=True, ttft_ms=None, error_type="upstream_timeout", cache_hit=True)
    await store.send([r])
    assert await store.records() == [r]
    store.close()


def test_nones_and_bools_are_stored_as_null_and_integers(tmp_path):
    # the adapters that make them cheap to bind must not change what lands in the columns
    store = UsageStore(str(tmp_path / "u.db"))
    store._write([record(1, stream=True, cache_hit=False, ttft_ms=None, error_type=None)])
    got = store._db.execute("SELECT typeof(stream), stream, typeof(cache_hit), cache_hit, typeof(ttft_ms), "
                            "typeof(error_type) FROM usage").fetchone()
    assert got == ("integer", 1, "integer", 0, "null", "null")
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
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 4  # 3 added `endpoint`, 4 dropped a trigger
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
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert store._db.execute("SELECT name FROM sqlite_master WHERE name = 'usage_by_endpoint'").fetchone()
    store.close()
    UsageStore(path).close()  # opening it again changes nothing


def test_a_version_3_store_loses_its_tag_trigger_and_keeps_its_tag_rows(tmp_path):
    path = str(tmp_path / "u.db")
    store = UsageStore(path)
    store._write([record(1, tags=["team:a"])])
    store.close()
    db = sqlite3.connect(path)  # the store as version 3 left it: a trigger wrote the tag rows
    db.execute("CREATE TRIGGER usage_tags_add AFTER INSERT ON usage WHEN NEW.tags <> '[]' BEGIN "
               "INSERT OR IGNORE INTO usage_tags (tag, ts, rid) SELECT value, NEW.ts, NEW.rid FROM json_each(NEW.tags); END")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = UsageStore(path)
    assert store._db.execute("SELECT name FROM sqlite_master WHERE name = 'usage_tags_add'").fetchone() is None
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 4
    store._write([record(2, tags=["team:b"])])
    got = store._db.execute("SELECT tag, model FROM usage_tags ORDER BY tag").fetchall()
    assert got == [("team:a", record(1).model_served), ("team:b", record(2).model_served)]
    store.close()


def test_batches_of_every_length_use_eight_statement_sizes_at_most(tmp_path):
    # a statement a batch length kept one prepared statement per length (~60 MB for 1 to 200)
    store_module._insert_rows.cache_clear()  # what other tests prepared
    store = UsageStore(str(tmp_path / "u.db"))
    n = 0
    for size in range(1, 300):
        store._write([record(n + i) for i in range(size)])
        n += size
    assert store._db.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == n
    assert store_module._insert_rows.cache_info().currsize <= 8
    store.close()
