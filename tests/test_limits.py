"""Admission: the in-flight cap and the memory watermark (proxy.limits)."""

from __future__ import annotations

import os

import msgspec
import pytest

from proxy import limits
from proxy.config import Limits
from proxy.errors import Unavailable
from proxy.metrics import Metrics

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
    assert 'proxy_admission_rejected_total{reason="in_flight"} 1.0' in text
    assert "proxy_resident_memory_bytes" in text and "proxy_asyncio_tasks" in text


async def test_a_capped_gateway_answers_503_in_openai_shape(gateway, fake_openai):
    gw = await gateway({"limits": {"maxInFlight": 1}})
    gw.gw.metrics.in_flight = 1  # one request already being served
    async with gw.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["error"] == {"message": "the gateway is serving its maximum of 1 requests; retry shortly",
                                             "type": "service_unavailable", "param": None, "code": "overloaded"}
    gw.gw.metrics.in_flight = 0
