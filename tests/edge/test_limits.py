"""Admission: the in-flight cap and the memory watermark (proxy.edge.limits)."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import pytest

from proxy.config import Limits
from proxy.edge import limits
from proxy.errors import Unavailable
from proxy.metrics.prometheus import Metrics

MIB = 1024 * 1024


class FakeRss:
    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.value


def _admission(rss: FakeRss | None = None, **limits_kw) -> tuple[limits.Admission, Metrics]:
    metrics = Metrics()
    return limits.Admission(msgspec.convert(limits_kw, type=Limits), metrics, rss or FakeRss(0)), metrics


def test_nothing_is_capped_by_default():
    admission, metrics = _admission()
    metrics.in_flight = 10_000
    admission.admit(10 * 1024 * MIB)


def test_in_flight_cap_is_a_503_with_retry_after():
    admission, metrics = _admission(maxInFlight=2)
    metrics.in_flight = 2  # this request is already counted
    admission.admit()
    metrics.in_flight = 3
    with pytest.raises(Unavailable) as caught:
        admission.admit()
    assert caught.value.status == 503 and caught.value.headers() == {"Retry-After": "1"}
    assert caught.value.code == "overloaded" and admission.rejected["in_flight"] == 1


def test_memory_watermark_sheds_while_above_and_reads_rss_at_most_every_100_ms(monkeypatch):
    monkeypatch.setattr(limits, "relieve", lambda: None)
    rss = FakeRss(50 * MIB)
    admission, _ = _admission(rss, maxRssMib=100)
    for _ in range(100):
        admission.admit()
    assert rss.reads == 1  # one reading serves every request of the next 100 ms
    rss.value = 150 * MIB
    admission._next_read = 0.0
    with pytest.raises(Unavailable):
        admission.admit()
    assert admission.rejected["memory"] == 1
    rss.value = 50 * MIB
    admission._next_read = 0.0
    admission.admit()  # resumes as soon as a reading is under the mark


def test_large_bodies_count_before_the_next_reading(monkeypatch):
    rss = FakeRss(40 * MIB)
    admission, _ = _admission(rss, maxRssMib=101)
    admission.admit(10 * MIB)  # counts 3 × 10 MiB until its memory shows in a reading
    admission.admit(10 * MIB)
    with pytest.raises(Unavailable):
        admission.admit(10 * MIB)  # 40 + 60 + 30 > 101
    admission.admit(1024)  # small ones still fit
    admission._next_read = 0.0
    with pytest.raises(Unavailable):
        admission.admit(10 * MIB)  # one reading later the earlier bodies still count, once more…
    admission._next_read = 0.0
    admission.admit(10 * MIB)  # …and then only RSS does
    assert admission.pending == 30 * MIB


def test_above_the_mark_memory_is_handed_back_at_most_once_a_second(monkeypatch):
    calls = []
    monkeypatch.setattr(limits, "relieve", lambda: calls.append(1))
    rss = FakeRss(200 * MIB)
    admission, _ = _admission(rss, maxRssMib=100)
    for _ in range(5):
        admission._next_read = 0.0
        with pytest.raises(Unavailable):
            admission.admit()
    assert calls == [1]


def test_rss_reader_reads_this_process():
    reader = limits.RssReader()
    with open("/proc/self/statm") as f:
        expected = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert abs(reader() - expected) < 16 * MIB
    reader.close()
    assert reader() == 0
    assert limits.RssReader("/nonexistent/statm")() == 0


def test_relieve_runs():
    limits.relieve()


def test_install_puts_it_on_the_app_and_its_numbers_on_metrics():
    from aiohttp import web

    app, metrics = web.Application(), Metrics()
    admission = limits.install(app, msgspec.convert({"maxInFlight": 1}, type=Limits), metrics)
    assert app[limits.ADMISSION] is admission
    metrics.in_flight = 5
    with pytest.raises(Unavailable):
        admission.admit()
    text = metrics.render().decode()
    assert 'aigw_admission_rejected_total{reason="in_flight"} 1.0' in text
    assert "aigw_resident_memory_bytes" in text and "aigw_asyncio_tasks" in text


async def test_a_capped_gateway_answers_503_in_openai_shape(gateway, fake_openai):
    gw = await gateway({"limits": {"maxInFlight": 1}})
    gw.gw.metrics.in_flight = 1  # one request already being served
    async with gw.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["error"] == {"message": "the gateway is serving its maximum of 1 requests; retry shortly",
                                             "type": "service_unavailable", "param": None, "code": "overloaded"}
    gw.gw.metrics.in_flight = 0


def test_body_buffer_takes_what_fits_and_a_body_larger_than_it_alone():
    bodies = limits.BodyBuffer(100, wait=1.0)
    assert bodies.take(60) and not bodies.take(50) and bodies.take(40)
    assert bodies.used == 100
    bodies.release(100)
    assert bodies.take(500) and bodies.used == 500  # larger than the whole budget: read alone
    assert not bodies.take(1)
    off = limits.BodyBuffer(0, wait=1.0)
    assert off.take(10**12) and off.take(10**12) and off.used == 0


async def test_body_buffer_waiters_go_in_arrival_order():
    bodies = limits.BodyBuffer(100, wait=2.0)
    assert bodies.take(90)
    order: list[str] = []

    async def wait(name: str, size: int) -> None:
        if not bodies.take(size):
            await bodies.reserve(size)
        order.append(name)

    big = asyncio.ensure_future(wait("big", 60))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(wait("small", 5))  # would fit now, but the big one came first
    await asyncio.sleep(0.01)
    assert order == [] and not bodies.take(5)
    bodies.release(90)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and bodies.used == 65


async def test_body_buffer_wait_ends_in_a_503_that_closes_and_leaks_nothing():
    bodies = limits.BodyBuffer(100, wait=0.1)
    assert bodies.take(100)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await bodies.reserve(10)
    assert 0.1 <= time.monotonic() - started < 0.5
    assert caught.value.retry_after == 1 and caught.value.closes and bodies.rejected == 1
    cancelled = asyncio.ensure_future(bodies.reserve(10))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    bodies.release(100)
    assert bodies.used == 0 and bodies.take(100)  # neither the refused nor the cancelled one holds any


def test_body_buffer_refusals_are_on_metrics():
    from aiohttp import web

    app, metrics = web.Application(), Metrics()
    limits.install(app, msgspec.convert({"maxBodyBuffer": 10}, type=Limits), metrics)
    app[limits.ADMISSION].bodies.rejected = 3
    assert 'aigw_admission_rejected_total{reason="body_buffer"} 3.0' in metrics.render().decode()
