"""The embedded store's limits: sliding minute windows, budgets, spend kept in SQLite."""

from __future__ import annotations

import pytest

from proxy.state.base import Rule
from proxy.state.memory import BUDGET_RETRY_AFTER, EmbeddedStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rpm_is_a_sliding_minute():
    clock = Clock()
    store = EmbeddedStore(clock=clock)
    rule = Rule(rpm=3)
    for _ in range(3):
        assert await store.admit("k", rule) is None
        clock.now += 10
    verdict = await store.admit("k", rule)
    assert verdict.limit == "rpm" and verdict.retry_after == 30 and verdict.used == 3
    clock.now += 30  # the first request leaves the window
    assert await store.admit("k", rule) is None
    assert (await store.admit("k", rule)).limit == "rpm"
    assert await store.admit("other", rule) is None  # per key


async def test_refused_requests_take_no_slot():
    clock = Clock()
    store = EmbeddedStore(clock=clock)
    for _ in range(2):
        await store.admit("k", Rule(rpm=2))
    for _ in range(5):
        assert await store.admit("k", Rule(rpm=2)) is not None
    clock.now += 60
    assert await store.admit("k", Rule(rpm=2)) is None


async def test_tpm_counts_tokens_of_finished_requests():
    clock = Clock()
    store = EmbeddedStore(clock=clock)
    rule = Rule(tpm=100)
    assert await store.admit("k", rule) is None
    await store.charge("k", 60, 0.0)
    clock.now += 20
    assert await store.admit("k", rule) is None
    await store.charge("k", 40, 0.0)
    verdict = await store.admit("k", rule)
    assert verdict.limit == "tpm" and verdict.used == 100 and verdict.retry_after == 40
    clock.now += 41
    assert await store.admit("k", rule) is None  # the first 60 tokens left the window


async def test_budget_and_spend_persist(tmp_path):
    path = str(tmp_path / "state.db")
    store = EmbeddedStore(path)
    await store.start()
    await store.charge("k", 0, 0.75)
    await store.charge("k", 0, 0.25)
    assert await store.spend("k") == pytest.approx(1.0)
    verdict = await store.admit("k", Rule(budget=1.0))
    assert verdict.limit == "budget" and verdict.retry_after == BUDGET_RETRY_AFTER
    assert await store.admit("k", Rule(budget=1.5)) is None
    await store.set_budget("k", 2.0)
    await store.close()
    again = EmbeddedStore(path)
    assert await again.spend("k") == pytest.approx(1.0)
    assert await again.budgets() == {"k": 2.0}
    await again.set_spend("k", 0.0)
    await again.set_budget("k", None)
    assert await again.budgets() == {}
    await again.close()


async def test_set_budget_announces_the_change():
    store = EmbeddedStore()
    seen = []

    async def listener(data):
        seen.append(data)

    store.subscribe("budgets", listener)
    await store.set_budget("k", 3.0)
    assert seen == [{"keyId": "k"}]


async def test_workers_sharing_the_file_see_each_others_budgets_and_spend(tmp_path):
    path = str(tmp_path / "state.db")
    one, two = EmbeddedStore(path), EmbeddedStore(path)
    seen = []

    async def listener(data):
        seen.append(data)

    two.subscribe("budgets", listener)
    await one.set_budget("k", 2.0)
    await one.charge("k", 0, 1.5)
    await two.charge("k", 0, 0.25)
    one._flush()  # (the once-a-second flush)
    await two.look()
    assert seen == [None]  # reload everything: another worker changed the file
    assert await two.budgets() == {"k": 2.0}
    assert await two.spend("k") == pytest.approx(1.75)  # its own unsaved 0.25 kept on top
    await two.charge("k", 0, 0.25)
    assert (await two.admit("k", Rule(budget=2.0))).limit == "budget"  # one budget, both workers' spend
    two._flush()
    await one.look()
    assert await one.spend("k") == pytest.approx(2.0)
    await one.set_spend("k", 0.0)  # the admin API's reset, through the first worker
    await two.look()
    assert await two.spend("k") == 0.0 and await two.admit("k", Rule(budget=2.0)) is None
    assert seen == [None, None]
    await one.close()
    await two.close()
    assert EmbeddedStore(path)._spend == {"k": 0.0}  # the reset survived both workers' final flush


async def test_the_watch_loop_announces_a_watched_files_change_within_a_second(tmp_path):
    import asyncio
    import time

    from proxy.state.sqlite import ProviderRows

    path = str(tmp_path / "registry.db")
    mine, theirs = ProviderRows(path), ProviderRows(path)
    store = EmbeddedStore()
    changed = asyncio.Event()

    async def listener(data):
        changed.set()

    store.subscribe("providers", listener)
    store.watch("providers", mine)
    await store.start()
    await asyncio.sleep(0.3)
    assert not changed.is_set()
    started = time.monotonic()
    theirs.put([("p", b"{}", None)])
    await asyncio.wait_for(changed.wait(), 1.0)
    assert time.monotonic() - started < 0.5
    await store.close()
    mine.close()
    theirs.close()


async def test_spend_a_flush_could_not_write_is_kept_for_the_next_one(tmp_path):
    import sqlite3

    path = str(tmp_path / "state.db")
    store = EmbeddedStore(path)
    store._db._db.execute("PRAGMA busy_timeout = 50")  # (the default 5 s, shortened for the test)
    await store.charge("k", 0, 1.5)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holding the write lock, longer than the wait
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store._flush()
    other.execute("ROLLBACK")
    await store.charge("k", 0, 0.5)
    store._flush()
    assert await store.spend("k") == pytest.approx(2.0)
    await store.close()
    other.close()
    assert EmbeddedStore(path)._spend == {"k": pytest.approx(2.0)}  # none of it lost
