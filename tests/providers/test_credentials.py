"""The credential source: single flight in a thread, refresh ahead of expiry, failures named."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from proxy.errors import UpstreamCredentials
from proxy.providers import credentials
from proxy.providers.base import Target, UpstreamRequest
from proxy.providers.credentials import CredentialFailed, Source


def counting(lifetime: float | None, delay: float = 0.05):
    calls, threads = [], set()

    def fetch(force: bool):
        threads.add(threading.get_ident())
        time.sleep(delay)  # a blocking library call: it must not stall the loop
        calls.append(force)
        return f"token-{len(calls)}", None if lifetime is None else time.time() + lifetime

    return fetch, calls, threads


async def test_fifty_concurrent_callers_make_one_fetch_off_the_loop():
    fetch, calls, threads = counting(3600)
    source = Source(fetch)
    ticks = 0

    async def ticker():
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.002)
            ticks += 1

    values = await asyncio.gather(*(source.get() for _ in range(50)), ticker())
    assert set(values[:50]) == {"token-1"} and len(calls) == 1
    assert threading.get_ident() not in threads and ticks == 10  # the loop kept running meanwhile


async def test_a_value_inside_the_margin_is_used_while_one_refresh_replaces_it():
    fetch, calls, _ = counting(credentials.REFRESH_MARGIN + 10)
    source = Source(fetch)
    assert await source.get() == "token-1"
    source.expires_at = time.time() + credentials.REFRESH_MARGIN - 1  # now due, still valid
    assert set(await asyncio.gather(*(source.get() for _ in range(20)))) == {"token-1"}
    await asyncio.sleep(0.2)
    assert len(calls) == 2 and await source.get() == "token-2"


async def test_an_expired_value_is_waited_for_and_a_stale_one_replaced_once():
    fetch, calls, _ = counting(3600)
    source = Source(fetch)
    first = await source.get()
    values = await asyncio.gather(*(source.get(stale=first) for _ in range(10)))
    assert set(values) == {"token-2"} and calls == [False, True]


class _Adapter:
    def credential_key(self, target):
        return ("aws",)

    def sign(self, target, upstream_request, value):
        upstream_request.headers["Authorization"] = value


async def test_a_failed_fetch_is_upstream_credentials_naming_the_source_without_the_secret(monkeypatch):
    def fetch(force):
        raise CredentialFailed("web identity token exchange failed")

    def leaky(force):
        raise RuntimeError("token=SECRET-ASSERTION-123 refused")

    upstream_request = UpstreamRequest("POST", "https://x", {}, b"")
    for failing, expect in ((fetch, "web identity token exchange failed"), (leaky, "RuntimeError")):
        monkeypatch.setattr(credentials, "_sources", {("aws",): Source(failing)})
        with pytest.raises(UpstreamCredentials) as caught:
            await credentials.authorize(_Adapter(), Target("p", None, None), upstream_request)
        assert caught.value.status == 502 and caught.value.code == "upstream_credentials"
        assert expect in caught.value.message and "SECRET" not in caught.value.message


def test_a_credentials_spec_reads_the_environment_or_a_file(tmp_path, monkeypatch):
    path = tmp_path / "sa.json"
    path.write_text('{"x": 1}')
    monkeypatch.setenv("SA_JSON", '{"y": 2}')
    assert credentials.read_spec(f"file:{path}") == '{"x": 1}'
    assert credentials.read_spec("env:SA_JSON") == '{"y": 2}'
    assert credentials.is_inline('{"y": 2}') and not credentials.is_inline("env:SA_JSON")
    with pytest.raises(CredentialFailed):
        credentials.read_spec("env:NOT_SET_ANYWHERE_1")


async def test_a_refresh_that_brings_nothing_new_is_not_asked_again_at_every_request():
    # A metadata server hands out the same token until shortly before it expires: a refresh ahead
    # of expiry gets it back, still inside the margin. Each request must not start another one.
    expires = time.time() + credentials.REFRESH_MARGIN - 30
    calls = []

    def fetch(force):
        calls.append(force)
        return "same-token", expires

    source = Source(fetch)
    assert await source.get() == "same-token"
    for _ in range(20):
        assert await source.get() == "same-token"
        await asyncio.sleep(0.01)  # each background refresh lands before the next request
    assert calls == [False, False]  # the first, and one refresh ahead of expiry in RETRY_INTERVAL


async def test_refusals_a_new_credential_does_not_cure_renew_it_once_per_interval(monkeypatch):
    # A model the account may not use answers 403 every time: one renewal, not one exchange per request.
    fetch, calls, _ = counting(3600, delay=0)
    source = Source(fetch)
    value = await source.get()
    for _ in range(10):
        value = await source.get(stale=value)
    assert calls == [False, True] and value == "token-2"
    monkeypatch.setattr(credentials, "RETRY_INTERVAL", 0.0)  # once the interval is over, a refusal renews again
    assert await source.get(stale=value) == "token-3"


async def test_a_credential_source_that_does_not_answer_is_a_502_within_the_wait(monkeypatch):
    fetch, calls, _ = counting(3600, delay=1.0)  # a token endpoint that hangs (the library retries for minutes)
    monkeypatch.setattr(credentials, "_sources", {("aws",): Source(fetch)})
    monkeypatch.setattr(credentials, "WAIT", 0.2)
    started = time.monotonic()
    with pytest.raises(UpstreamCredentials, match="the credential source did not answer in time"):
        await credentials.authorize(_Adapter(), Target("p", None, None), UpstreamRequest("POST", "https://x", {}, b""))
    assert time.monotonic() - started < 0.8


async def test_a_failed_background_fetch_logs_its_kind_never_a_library_message():
    from structlog.testing import capture_logs

    def leaky(force):
        raise RuntimeError("assertion=SECRET-ASSERTION-456 refused")

    source = Source(leaky)
    source.value, source.expires_at = "old", time.time() + credentials.REFRESH_MARGIN - 1  # due, still valid
    with capture_logs() as logs:
        assert await source.get() == "old"
        await asyncio.sleep(0.1)
    assert [e["source"] for e in logs if e["event"] == "credential_fetch_failed"] == ["RuntimeError"]
    assert "SECRET" not in repr(logs)
