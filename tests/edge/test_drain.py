"""SIGTERM drain of a real gateway process (R34): readiness first, streams finish, records kept, exit 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.edge.drain import CUT_EVENT
from tests.conftest import openai_provider
from tests.fakes.openai import Behaviour


def _config(tmp_path, fake, **drain) -> dict:
    return {"dataDir": str(tmp_path / "data"),
            "providers": [openai_provider(fake, models=("gpt-4o-mini", "long", "endless"))],
            "telemetry": {"flushMs": 50}, "drain": {"flushSeconds": 2, **drain}}


async def _stream(session, url: str, model: str, first: asyncio.Event | None = None) -> bytes:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    out = b""
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        try:
            async for chunk in r.content.iter_any():
                out += chunk
                if first is not None:
                    first.set()
        except aiohttp.ClientPayloadError:
            pass  # cut at the deadline: the connection closes after the error event
    return out


def _records(tmp_path) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "data" / "usage.db")
    try:
        return db.execute("SELECT status, model_requested, completion_tokens FROM usage").fetchall()
    finally:
        db.close()


async def test_r34_sigterm_readiness_fails_streams_finish_records_kept(tmp_path, fake_openai, gateway_process):
    fake_openai.on("long", Behaviour(delay_chunk=0.15))
    gw = await gateway_process(_config(tmp_path, fake_openai, acceptSeconds=1.0, deadlineSeconds=8))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = [asyncio.Event() for _ in range(20)]
        streams = [asyncio.ensure_future(_stream(session, gw.url, "long", e)) for e in started]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
        signalled = time.monotonic()
        gw.terminate()
        ready = 200
        while ready == 200 and time.monotonic() - signalled < 2:
            async with session.get(gw.url + "/readyz") as r:
                ready = r.status
        assert ready == 503 and time.monotonic() - signalled < 1.0  # readiness fails at once
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "late"}]}
        async with aiohttp.ClientSession() as fresh:  # new connections: still accepted in the window
            for _ in range(5):
                async with fresh.post(gw.url + "/v1/chat/completions", json=body) as r:
                    assert r.status == 200
        await asyncio.sleep(max(signalled + 1.3 - time.monotonic(), 0))
        with pytest.raises(aiohttp.ClientConnectorError):  # then the listener is closed
            async with aiohttp.ClientSession() as fresh, fresh.get(gw.url + "/healthz"):
                pass
        results = await asyncio.gather(*streams)
    assert all(out.endswith(b"data: [DONE]\n\n") for out in results)  # 20/20 streams ran to completion
    assert await gw.wait(25) == 0
    assert time.monotonic() - signalled < 25
    records = _records(tmp_path)
    assert len(records) == 25 and {status for status, _, _ in records} == {"completed"}  # 0 lost


async def test_r34_streams_still_running_at_the_deadline_get_an_error_event(tmp_path, fake_openai, gateway_process):
    fake_openai.on("endless", Behaviour(delay_chunk=0.3, content=["word "] * 200))
    gw = await gateway_process(_config(tmp_path, fake_openai, acceptSeconds=0.3, deadlineSeconds=1.5))
    async with aiohttp.ClientSession() as session:
        started = [asyncio.Event() for _ in range(3)]
        streams = [asyncio.ensure_future(_stream(session, gw.url, "endless", e)) for e in started]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
        signalled = time.monotonic()
        gw.terminate()
        results = await asyncio.wait_for(asyncio.gather(*streams), 10)
    assert all(out.endswith(CUT_EVENT) and b"[DONE]" not in out for out in results)
    assert await gw.wait(25) == 0
    assert time.monotonic() - signalled < 6
    records = _records(tmp_path)
    assert len(records) == 3 and all(status == "client_aborted" and tokens > 0 for status, _, tokens in records)


async def test_sigint_skips_the_accept_window(tmp_path, fake_openai, gateway_process):
    gw = await gateway_process(_config(tmp_path, fake_openai, acceptSeconds=30))
    signalled = time.monotonic()
    gw.proc.send_signal(signal.SIGINT)
    assert await gw.wait(25) == 0
    assert time.monotonic() - signalled < 5


async def test_while_draining_answers_and_streams_close_their_connections(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with gw.post("/v1/chat/completions", json=body) as r:
        assert r.status == 200 and r.headers.get("Connection", "keep-alive").lower() == "keep-alive"
    gw.gw.draining = True  # as Drain.begin sets it on SIGTERM
    async with gw.post("/v1/chat/completions", json=body) as r:
        assert r.status == 200 and r.headers["Connection"].lower() == "close"
    async with gw.post("/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status == 200 and r.headers["Connection"].lower() == "close"
        assert (await r.read()).endswith(b"data: [DONE]\n\n")
    async with gw.post("/v1/chat/completions", json={**body, "model": "nope"}) as r:  # an error answer too
        assert r.status == 404 and r.headers["Connection"].lower() == "close"
    async with gw.get("/healthz") as r:
        assert r.headers["Connection"].lower() == "close"


async def test_the_drain_knows_each_running_handler_and_which_of_them_stream(gateway, fake_openai):
    from proxy.edge.drain import DRAIN

    fake_openai.on("long", Behaviour(delay_chunk=0.2))
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("gpt-4o-mini", "long"))]})
    drain = gw.app[DRAIN]
    body = {"model": "long", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with gw.post("/v1/chat/completions", json=body) as r:
        await r.content.readany()
        assert len(drain.tasks) == 1 and isinstance(next(iter(drain.tasks.values())), web.StreamResponse)
        await r.read()
    await asyncio.sleep(0.05)
    assert drain.tasks == {} and drain._idle.is_set()
