"""Cloud credentials without static keys: fetched by the clouds' own libraries, cached, refreshed.

A provider type whose capabilities name an `extra` (or a `keyless_extra`, used when no `apiKey` is
registered) gets its credential here, once the upstream request is final (SigV4 signs the body):

    await authorize(adapter, target, upstream_request)            before each attempt
    await authorize(adapter, target, upstream_request, renew=True) after the provider said 401/403

The adapter stays sans-IO: `adapter.credential_key(target)` names the credential it wants (a
hashable key whose first item is the extra providing it, or None for a static key) and
`adapter.sign(target, upstream_request, value)` applies it. The libraries block (files, HTTP), so a
fetch runs in a thread; callers of one credential share one fetch in flight (single flight); a value
is kept until `margin` seconds before it expires. A fetch that fails raises `UpstreamCredentials`
naming the source, never the secret; so does one that takes longer than `WAIT` seconds (the
libraries' own timeouts and retries can add up to minutes, which a request must not hang for).
A source is asked again at most every `RETRY_INTERVAL` seconds for a value it was just asked for:
a refresh ahead of expiry that brings nothing new (a metadata server hands out the same token
until shortly before it expires), or a refusal a new credential does not cure (a model the
account may not use answers 403 every time), must not turn every request into a token exchange.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import math
import os
import time
from collections.abc import Callable

import structlog

from proxy.errors import UpstreamCredentials

log = structlog.get_logger("proxy.credentials")

# extra → (the module it installs, where this gateway's source for it lives)
EXTRAS = {
    "aws": ("botocore", "proxy.providers.cloud:aws_source"),
    "gcp": ("google.auth", "proxy.providers.cloud:google_source"),
    "azure": ("azure.identity", "proxy.providers.cloud:azure_source"),
}
SPEC_EXTRAS = frozenset({"gcp"})  # the extras whose source reads a provider's `credentials` field
REFRESH_MARGIN = 60.0  # at least this long before expiry a value is replaced
RETRY_INTERVAL = 5.0  # a background refresh, or a renewal after a refusal, at most this often
WAIT = 30.0  # the longest a request waits for a credential


class CredentialFailed(Exception):
    """Raised by a fetch (in its thread): `source` says what failed, in words safe to show."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.source = source


def installed(extra: str) -> bool:
    """Is the library of this extra importable? Found, not imported: this runs on the event loop
    (a registration) and azure.identity takes ~0.15 s to import; fetches import in their thread."""
    try:
        return importlib.util.find_spec(EXTRAS[extra][0]) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked (sys.modules[name] = None)
        return False


def is_inline(value: str | None) -> bool:
    """A credential given as itself (JSON), not as a reference to the environment or a file."""
    return bool(value) and not value.startswith(("env:", "file:"))


def read_spec(value: str) -> str:
    """The credential a `credentials` field names: inline, `env:NAME` or `file:/path` (read each time:
    mounted secrets rotate)."""
    if value.startswith("env:"):
        found = os.environ.get(value[4:])
        if not found:
            raise CredentialFailed(f"the environment variable {value[4:]} is not set")
        return found
    if value.startswith("file:"):
        try:
            with open(value[5:], encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            raise CredentialFailed(f"the credentials file {value[5:]} cannot be read") from None
    return value


class Source:
    """One credential: a blocking `fetch(force) -> (value, expires_at | None)` run in a thread,
    single flight, its value kept until `margin` s before `expires_at` (epoch seconds)."""

    def __init__(self, fetch: Callable[[bool], tuple[object, float | None]], margin: float = REFRESH_MARGIN) -> None:
        self.fetch = fetch
        self.margin = margin
        self.value: object | None = None
        self.expires_at: float | None = None
        self.fetches = 0
        self._flight: asyncio.Future | None = None
        self._refreshed_at = self._renewed_at = -math.inf  # monotonic starts of the last of each kind

    def fresh(self) -> bool:
        return self.value is not None and (self.expires_at is None or time.time() < self.expires_at - self.margin)

    async def get(self, stale: object | None = None) -> object:
        """The current value; a new one when it nears its expiry or is `stale` (refused by the provider).

        Near its expiry but still valid, the value is used while one fetch replaces it in the
        background: a request never waits for a refresh that was not needed yet."""
        value, now = self.value, time.monotonic()
        if stale is not None:
            if value is not None and value is not stale:
                return value  # another request already replaced the refused value
            if value is not None and self._flight is None and now - self._renewed_at < RETRY_INTERVAL:
                return value  # renewed just now: a refusal a new credential does not cure costs no exchange
        elif self.fresh():
            return value
        usable = stale is None and value is not None and self.expires_at is not None and time.time() < self.expires_at - 5
        if self._flight is None and not (usable and now - self._refreshed_at < RETRY_INTERVAL):
            if stale is not None:
                self._renewed_at = now
            elif usable:
                self._refreshed_at = now
            self._flight = asyncio.get_running_loop().run_in_executor(None, self._fetch, stale is not None)
            self._flight.add_done_callback(self._landed)
        if usable:
            return value
        # shield: a caller that gives up does not cancel the fetch the others wait for
        return (await asyncio.shield(self._flight))[0]

    def _fetch(self, force: bool) -> tuple[object, float | None]:
        self.fetches += 1
        return self.fetch(force)

    def _landed(self, flight: asyncio.Future) -> None:
        self._flight = None
        if flight.cancelled():
            return
        failure = flight.exception()
        if failure is not None:  # a library's own error may quote a secret: only its kind is logged
            log.warning("credential_fetch_failed", source=failure.source if isinstance(failure, CredentialFailed)
                        else type(failure).__name__)
            return
        self.value, self.expires_at = flight.result()


_sources: dict[tuple, Source] = {}


def source(key: tuple) -> Source:
    """The one Source of a credential key, made on first use by the extra's factory."""
    found = _sources.get(key)
    if found is None:
        module, _, attr = EXTRAS[key[0]][1].partition(":")
        found = _sources[key] = getattr(importlib.import_module(module), attr)(*key[1:])
    return found


def forget() -> None:
    """Drop every cached credential (the environment they came from changed: tests)."""
    _sources.clear()


async def authorize(adapter, target, upstream_request, renew: bool = False) -> None:
    """Sign `upstream_request` with the credential its adapter wants (nothing for a static key)."""
    key = adapter.credential_key(target)
    if key is None:
        return
    found = source(key)
    try:
        async with asyncio.timeout(WAIT):
            value = await found.get(stale=found.value if renew else None)
    except TimeoutError:
        raise UpstreamCredentials(f"the gateway could not get its {key[0]} credentials: "
                                  "the credential source did not answer in time") from None
    except CredentialFailed as exc:
        raise UpstreamCredentials(f"the gateway could not get its {key[0]} credentials: {exc.source}") from None
    except Exception as exc:  # a library's own error: its text may quote a secret, so only its kind is shown
        raise UpstreamCredentials(f"the gateway could not get its {key[0]} credentials "
                                  f"({type(exc).__name__})") from None
    adapter.sign(target, upstream_request, value)
