"""429 and Retry-After (R15), the retry budget in a full outage (R16), the circuit breaker (R17)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import orjson
import pytest
from aiohttp import web

from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour, FakeOpenAI, completion


class Throttled:
    """Answers each distinct prompt 429 first (with the given Retry-After), then 200."""

    def __init__(self, retry_after: str | None) -> None:
        self.retry_after = retry_after
        self.first: dict[str, float] = {}  # prompt -> when its 429 left (monotonic)
        self.first_wall: dict[str, float] = {}
        self.second: dict[str, float] = {}
        self.second_wall: dict[str, float] = {}
        self.count = 0

    async def chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        prompt = body["messages"][0]["content"]
        self.count += 1
        if prompt not in self.first:
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            self.first[prompt], self.first_wall[prompt] = time.monotonic(), time.time()
            return web.json_response({"error": {"message": "slow down", "type": "requests", "param": None,
                                                "code": "rate_limit_exceeded"}}, status=429, headers=headers)
        self.second[prompt], self.second_wall[prompt] = time.monotonic(), time.time()
        return web.json_response(completion(body["model"], Behaviour()))

    async def start(self, aiohttp_server) -> dict:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        server = await aiohttp_server(app)
        return {"name": "t", "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "models": ["m"],
                "url": f"http://127.0.0.1:{server.port}/v1"}


def _body(i: int) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": f"req-{i}"}]}


def _retry_after(resp) -> int:
    value = resp.headers["Retry-After"]
    assert value.isdigit(), value  # always an integer number of seconds
    return int(value)


@pytest.mark.parametrize("value", ["1", "date", "soon"], ids=["seconds", "http-date", "unparseable"])
async def test_r15_a_retry_never_comes_before_retry_after(gateway, aiohttp_server, value):
    date_at = None
    if value == "date":
        date_at = int(time.time()) + 2
        value = email.utils.formatdate(date_at, usegmt=True)
    fake = Throttled(value)
    # 100 trials at once, so the retry budget is opened up for them: this is about timing.
    gw = await gateway({"providers": [await fake.start(aiohttp_server)],
                        "routing": {"retryAfterCap": 3, "retryBudget": {"ratio": 1.0}}})

    async def one(i: int) -> None:
        async with gw.post("/v1/chat/completions", json=_body(i)) as resp:
            assert resp.status == 200, await resp.text()

    await asyncio.gather(*(one(i) for i in range(100)))
    assert len(fake.second) == 100
    for prompt, first in fake.first.items():
        if date_at is not None:
            assert fake.second_wall[prompt] >= date_at  # not before the date it named
        else:  # 1 s asked for, or the first backoff step (1 s) when it could not be read
            assert fake.second[prompt] - first >= 1.0


@pytest.mark.parametrize("value", ["60", "3600"])
async def test_r15_over_the_cap_the_429_comes_back_at_once(gateway, aiohttp_server, value):
    fake = Throttled(value)
    gw = await gateway({"providers": [await fake.start(aiohttp_server)], "routing": {"retryAfterCap": 3}})
    took = []
    for i in range(20):
        started = time.monotonic()
        async with gw.post("/v1/chat/completions", json=_body(i)) as resp:
            took.append(time.monotonic() - started)
            assert resp.status == 429
            assert int(value) - 1 <= _retry_after(resp) <= int(value)
    assert max(took) <= 0.1, max(took)
    assert fake.count == 1  # the rest were answered by the gateway: the provider is cooling down


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "1e400", "soon", "", None])
async def test_r15_unusable_retry_after_values_still_give_an_integer(gateway, aiohttp_server, value):
    fake = Throttled(value)
    gw = await gateway({"providers": [await fake.start(aiohttp_server)]})
    for i in range(5):
        async with gw.post("/v1/chat/completions", json=_body(i)) as resp:
            assert resp.status == 429
            assert _retry_after(resp) >= 1


async def test_r15_a_cooling_provider_is_not_called_before_its_retry_after(gateway, aiohttp_server):
    fake = Throttled("2")
    gw = await gateway({"providers": [await fake.start(aiohttp_server)]})  # no waiting in a request
    async with gw.post("/v1/chat/completions", json=_body(0)) as resp:
        assert resp.status == 429 and _retry_after(resp) == 2
    for i in range(1, 50):  # all answered here, with how long is left
        async with gw.post("/v1/chat/completions", json=_body(i)) as resp:
            assert resp.status == 429 and 1 <= _retry_after(resp) <= 2
            assert (await resp.json())["error"]["code"] == "upstream_rate_limited"
    assert fake.count == 1
    await asyncio.sleep(2.05 - (time.monotonic() - fake.first["req-0"]))
    async with gw.post("/v1/chat/completions", json=_body(0)) as resp:
        assert resp.status == 200
    assert fake.second["req-0"] - fake.first["req-0"] >= 2.0


async def _outage(gw, rps: float, seconds: float, concurrency: int = 50) -> dict[str, float]:
    """Client requests at a steady rate, each with its own prompt; returns prompt -> start time."""
    starts: dict[str, float] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            starts[f"req-{i}"] = time.monotonic()
            async with gw.post("/v1/chat/completions", json=_body(i)) as resp:
                assert resp.status == 503  # the providers' overload, passed on as one

    tasks = []
    began = time.monotonic()
    for n in range(int(rps * seconds)):
        await asyncio.sleep(max(began + n / rps - time.monotonic(), 0))
        tasks.append(asyncio.ensure_future(one(n)))
    await asyncio.gather(*tasks)
    return starts


async def _down(aiohttp_server, n: int) -> list[FakeOpenAI]:
    fakes = [await FakeOpenAI().start(aiohttp_server) for _ in range(n)]
    for fake in fakes:
        fake.default = Behaviour(status=503)
    return fakes


async def test_r16_no_retry_storm_when_every_provider_is_down(gateway, aiohttp_server):
    fakes = await _down(aiohttp_server, 3)
    gw = await gateway({"providers": [openai_provider(f, name=f"p{i}", models=("m",)) for i, f in enumerate(fakes)],
                        "routing": {"retryBudget": {"window": 1.0}}})  # the 10 s default, in short
    seconds, rps = 4.0, 100
    starts = await _outage(gw, rps, seconds)
    attempts: dict[str, int] = {}
    for fake in fakes:
        for seen in fake.requests:
            prompt = seen.body["messages"][0]["content"]
            attempts[prompt] = attempts.get(prompt, 0) + 1
    # Steady state, the requests that started after the first second: at the onset, requests
    # already in flight each fail over once to providers not yet seen failing (≤ concurrency ×
    # (providers − 1)); after it, ≤ 1.2 × the client requests + 3 a second. The budget holds in
    # every 1 s window, so a span is bounded by its windows: their retries may lean on up to one
    # window of earlier requests (0.2 × rps × 1 s) and each window brings its own 3.
    window = 1.0
    t0 = min(starts.values()) + 1.0
    late = [p for p, t in starts.items() if t >= t0]
    span = max(starts.values()) - t0
    upstream_late = sum(attempts.get(p, 0) for p in late)
    assert upstream_late <= 1.2 * len(late) + 0.2 * rps * window + 3 * (span + window), (upstream_late, len(late))
    total = sum(attempts.values())
    assert total <= 1.2 * len(starts) + 3 * seconds + 50 * 2, (total, len(starts))  # onset included
    records = await gw.records()
    assert all(r.attempts >= 1 for r in records)  # never a refusal without an upstream attempt
    assert sum(r.attempts for r in records) == total
    print(f"R16 steady state: {upstream_late} upstream requests for {len(late)} client requests "
          f"({upstream_late / len(late):.2f}×); whole outage {total} for {len(starts)}")


@pytest.mark.slow
async def test_r16_slow_60_seconds_at_200_rps(gateway, aiohttp_server):
    fakes = await _down(aiohttp_server, 3)
    gw = await gateway({"providers": [openai_provider(f, name=f"p{i}", models=("m",)) for i, f in enumerate(fakes)]})
    starts = await _outage(gw, 200, 60, concurrency=200)
    upstream = sum(len(fake.requests) for fake in fakes)
    assert upstream <= 1.2 * len(starts) + 3 * 60 + 200 * 2


class Switch:
    """A provider that fails (500) while `broken`, noting when each request came."""

    def __init__(self) -> None:
        self.broken = True
        self.seen: list[tuple[float, bool]] = []

    async def chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.seen.append((time.monotonic(), self.broken))
        if self.broken:
            return web.json_response({"error": {"message": "down", "type": "server_error", "param": None,
                                                "code": None}}, status=500)
        return web.json_response(completion(body["model"], Behaviour()))

    async def start(self, aiohttp_server, name: str, **extra) -> dict:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        server = await aiohttp_server(app)
        return {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "isHosted": True, "models": ["m"],
                "url": f"http://127.0.0.1:{server.port}/v1", **extra}


async def test_r17_ejection_probes_and_readmission(gateway, aiohttp_server):
    ejection = 1.0
    a, b = Switch(), Switch()
    b.broken = False
    gw = await gateway({"providers": [await a.start(aiohttp_server, "a", weight=1000),
                                      await b.start(aiohttp_server, "b", isHosted=False)],
                        "routing": {"failureThreshold": 5, "ejectionSeconds": ejection}})

    async def send(n: int, until: float = float("inf")) -> None:
        for _ in range(n):
            if time.monotonic() >= until:
                return
            async with gw.post("/v1/chat/completions", json=_body(0)) as resp:
                assert resp.status == 200  # every request served: by b while a is out

    await send(5)
    assert len(a.seen) == 5 and gw.gw.router.is_open("a")  # ejected after 5 consecutive 5xx
    ejected_at = a.seen[-1][0]
    while time.monotonic() < ejected_at + ejection * 0.9:
        # each request checks the clock: a batch running on past the ejection on a slow host would
        # probe `a` while it is still down and eject it again, for a second ejection time
        await send(20, until=ejected_at + ejection * 0.9)
    during = [t for t, _ in a.seen if ejected_at < t < ejected_at + ejection * 0.9]
    assert len(during) <= 0.01 * len(b.seen), during  # ≤ 1 % reach a while it is out
    a.broken = False  # a recovers
    recovered = time.monotonic()
    while not any(t > recovered and not broken for t, broken in a.seen):
        assert time.monotonic() < recovered + 2 * ejection + 1.0, "a was not re-admitted"
        await send(5)
    back = next(t for t, broken in a.seen if t > recovered and not broken)
    assert back - recovered <= ejection + 0.5  # within the ejection time + one check interval
    assert not gw.gw.router.is_open("a")


async def test_r17_panic_mode_every_provider_failing_is_still_tried(gateway, aiohttp_server):
    fakes = await _down(aiohttp_server, 2)
    gw = await gateway({"providers": [openai_provider(f, name=f"p{i}", models=("m",)) for i, f in enumerate(fakes)],
                        "routing": {"failureThreshold": 2, "ejectionSeconds": 60}})
    for _ in range(50):
        async with gw.post("/v1/chat/completions", json=_body(0)) as resp:
            assert resp.status == 503  # the providers' answer, never a local 503: it names one of them
            assert "answered HTTP 503" in (await resp.json())["error"]["message"]
    assert gw.gw.router.is_open("p0") and gw.gw.router.is_open("p1")
    records = await gw.records()
    assert len(records) == 50 and all(r.attempts >= 1 for r in records)
    assert sum(len(f.requests) for f in fakes) >= 50
