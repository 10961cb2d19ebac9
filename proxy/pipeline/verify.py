"""Cast AI key verification (docs/configuration.md), behind `auth.castaiVerification`.

A caller key the config does not know is sent to ``POST {API_URL}/ai-optimizer/v1beta/
api-keys:verify`` in `X-API-Key`, with the body ``{}``: 200 ``{"organizationId": …}`` is valid,
401/403 invalid, anything else (or no answer) an outage. Answers are cached by the key's
SHA-256, never the key: valid for `positiveTtl` (60 s), invalid for `negativeTtl` (5 s), in
the store's cache, so in Redis mode every replica shares them. One question per key is in
flight at a time in a process; concurrent requests with the same key wait for it.

Outage policy (`auth.verification.outage`): `serveCached` accepts a key verified within
`staleTtl`; otherwise, and with `refuse`, the request gets 503 with `Retry-After`.
A verified caller's id is ``castai-`` + the first 16 hex digits of its key's SHA-256; the
organization id is its name.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import structlog
from aiocache.base import BaseCache

from proxy import __version__
from proxy.config import Config
from proxy.errors import AuthError, Unavailable
from proxy.keys import digest
from proxy.net import egress
from proxy.pipeline.auth import Caller
from proxy.state.base import close_cache

log = structlog.get_logger("proxy.pipeline.verify")

PATH = "/ai-optimizer/v1beta/api-keys:verify"
_MAX_ANSWER = 64 * 1024
_INVALID = b""  # the cached answer for a key Cast AI refused


class Outage(Exception):
    """Cast AI did not say whether the key is valid."""


def caller_id(hashed: str) -> str:
    return "castai-" + hashed[:16]


async def _read(resp) -> bytes:
    parts, size = [], 0
    async for chunk in resp.content.iter_chunked(16384):
        size += len(chunk)
        if size > _MAX_ANSWER:
            raise Outage("an answer larger than 64 KiB")
        parts.append(chunk)
    return b"".join(parts)


class Verifier:
    def __init__(self, cfg: Config, cache: BaseCache) -> None:
        self.url = cfg.castai.api_url.rstrip("/") + PATH
        self.via = egress.options(cfg.egress, self.url)  # forward proxy and TLS, as for every outbound call
        self.policy = cfg.auth.verification
        self.cache = cache
        self.session: aiohttp.ClientSession | None = None
        self._pending: dict[str, asyncio.Future] = {}

    async def start(self) -> None:
        # Its own session: the API URL is the operator's, so the upstream SSRF guard is not for it.
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout), cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": f"ai-enabler-proxy/{__version__}"})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await close_cache(self.cache)

    async def caller(self, key: str) -> Caller:
        """The caller for a key the config does not know; 401 when invalid, 503 in an outage."""
        hashed = digest(key)
        answer = await self._cached("v:" + hashed)
        if answer is None:
            pending = self._pending.get(hashed)
            if pending is None:
                pending = self._pending[hashed] = asyncio.ensure_future(self._verify(hashed, key))
                pending.add_done_callback(lambda _: self._pending.pop(hashed, None))
            answer = await asyncio.shield(pending)
        if answer == _INVALID:
            raise AuthError("invalid API key")
        return Caller(caller_id(hashed), name=answer.decode())

    async def _cached(self, key: str) -> bytes | None:
        try:
            return await self.cache.get(key)
        except Exception as exc:  # a cache outage is a miss, never a refusal
            log.warning("verification_cache_unavailable", error=type(exc).__name__)
            return None

    async def _remember(self, key: str, value: bytes | None, ttl: float) -> None:
        try:
            if value is None:
                await self.cache.delete(key)
            else:
                await self.cache.set(key, value, ttl=float(ttl))
        except Exception as exc:
            log.warning("verification_cache_unavailable", error=type(exc).__name__)

    async def _verify(self, hashed: str, key: str) -> bytes:
        try:
            organization = await self.ask(key)
        except Outage as exc:
            log.warning("verification_outage", reason=str(exc))
            return await self._during_outage(hashed)
        policy = self.policy
        if organization is None:
            await self._remember("v:" + hashed, _INVALID, policy.negative_ttl)
            await self._remember("s:" + hashed, None, 0)  # revoked: not served in a later outage
            return _INVALID
        answer = organization.encode()
        await self._remember("v:" + hashed, answer, policy.positive_ttl)
        await self._remember("s:" + hashed, answer, policy.stale_ttl)
        return answer

    async def _during_outage(self, hashed: str) -> bytes:
        if self.policy.outage == "serveCached":
            stale = await self._cached("s:" + hashed)
            if stale:
                return stale
        raise Unavailable("the Cast AI API could not verify the API key; retry shortly",
                          retry_after=self.policy.retry_after, code="verification_unavailable")

    async def ask(self, key: str) -> str | None:
        """The key's organization id, None when Cast AI refuses it; Outage when it cannot tell."""
        headers = {"X-API-Key": key, "Content-Type": "application/json", "Accept": "application/json"}
        try:
            async with self.session.post(self.url, data=b"{}", headers=headers, allow_redirects=False,
                                         **self.via) as resp:
                if resp.status in (401, 403):
                    return None
                if resp.status != 200:
                    raise Outage(f"HTTP {resp.status}")
                answer = orjson.loads(await _read(resp))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Outage(type(exc).__name__) from None
        except orjson.JSONDecodeError:
            raise Outage("an answer that is not JSON") from None
        organization = answer.get("organizationId") if isinstance(answer, dict) else None
        if not isinstance(organization, str) or not organization:
            raise Outage("an answer without organizationId")
        return organization
