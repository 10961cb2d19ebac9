"""The response cache: exact match on the normalised request, per caller key (aiocache).

Opt-in twice: the config turns it on (``cache: {enabled: true, ttl: 300}``) and each request
asks for it, with the header ``X-Cache: use`` or the body field ``"cache": true`` (our field:
removed before forwarding, like `tags`). Such answers carry ``X-Cache: hit``, or ``miss`` when
not streamed (a relayed stream's headers are sent before the cache could say).

The key is the SHA-256 of the route (chat or embeddings), the caller's key id (one caller never
sees another's answers), the model routed to (what `auto` chose) and the body as canonical JSON
(keys sorted, no whitespace, numbers re-encoded) without the fields that do not change the
answer: `stream`, `stream_options`, `tags`, `user`, `metadata`, `store`, `cache`. So a stream
and a plain request share an entry: a stored answer is replayed
as OpenAI SSE chunks to a stream (`proxy.pipeline.replay`), and a relayed stream is assembled into the
plain answer before it is stored. Only complete answers (HTTP 200, a finish reason, no error)
up to `maxEntryBytes` are stored; a cache that cannot be reached is a miss.

A hit is recorded with cacheHit=true, costUsd 0 and savingsUsd = what the answer cost when it
was made; it does not count against the caller's tokens or budget.
"""

from __future__ import annotations

import hashlib

import msgspec
import orjson
import structlog
from aiohttp import web

from proxy.config import Cache as CacheConfig
from proxy.dialects.base import Replayed
from proxy.edge import drain
from proxy.pipeline import replay
from proxy.pipeline.relay import HEADERS as STREAM_HEADERS
from proxy.pipeline.relay import SSEResponse
from proxy.providers.base import ChatRequest, ParserStep, StreamParser, Usage
from proxy.state.base import Store, close_cache

log = structlog.get_logger("proxy.pipeline.cache")

IGNORED = frozenset({"stream", "stream_options", "tags", "user", "metadata", "store", "cache"})
_TRUE = frozenset({"use", "true", "1", "yes"})


class Entry(msgspec.Struct, array_like=True):
    body: bytes  # the answer in its non-stream shape
    model: str | None  # the model that served it
    usage: Usage


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


class Tap(ParserStep):
    """A stream parser that keeps a copy of the bytes it hands the relay (up to a limit)."""

    __slots__ = ("parts", "size", "limit")

    def __init__(self, parser: StreamParser, first: bytes, limit: int) -> None:
        super().__init__(parser)
        self.parts: list[bytes] | None = [first] if first else []
        self.size = len(first)
        self.limit = limit

    def feed(self, chunk: bytes) -> bytes:
        return self._keep(self._inner.feed(chunk))

    def close(self) -> bytes:
        return self._keep(self._inner.close())

    def _keep(self, out: bytes) -> bytes:
        if out and self.parts is not None:
            self.size += len(out)
            if self.size > self.limit:
                self.parts = None  # too large to store: stop copying
            else:
                self.parts.append(out)
        return out


class ResponseCache:
    def __init__(self, cfg: CacheConfig, store: Store) -> None:
        self.enabled = cfg.enabled
        self.ttl = float(cfg.ttl)
        self.max_bytes = cfg.max_entry_bytes
        self.store = store
        self.backend = store.cache("responses") if cfg.enabled else None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self.backend is not None:
            await close_cache(self.backend)

    def key(self, headers, request, caller_id: str | None) -> str | None:
        """The request's cache key, or None when the cache is not to be used for it."""
        asked = request.fields.pop("cache", None)  # ours: never forwarded, even when off
        if not self.enabled:
            return None
        if headers.get("X-Cache", "").strip().lower() not in _TRUE and \
                (asked is None or bytes(asked).strip() != b"true"):
            return None
        kept = {name: msgspec.json.decode(raw) for name, raw in request.fields.items() if name not in IGNORED}
        canonical = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
        scope = f"{request.kind}\0{caller_id or ''}\0{request.model}\0".encode()  # the model routed to
        return hashlib.sha256(scope + canonical).hexdigest()

    async def lookup(self, key: str) -> Entry | None:
        """The stored answer, or None on a miss."""
        try:
            raw = await self.backend.get(key)
            return _decode(raw) if raw is not None else None
        except Exception as exc:  # an unreachable or damaged cache is a miss
            log.warning("response_cache_unavailable", error=type(exc).__name__)
            return None

    async def answer(self, http_request: web.Request, entry: Entry, request: ChatRequest, request_id: str,
                     dialect: Replayed | None = None) -> web.StreamResponse:
        """A hit's answer; `dialect` (proxy.dialects.base.Replayed) translates it for a caller of
        another API."""
        headers = {"X-Request-Id": request_id, "X-Cache": "hit"}
        if dialect is not None:
            headers.update(dialect.headers)
        if not request.stream:
            body = entry.body if dialect is None else dialect.answer(entry.body)
            return web.Response(body=body, content_type="application/json", headers=headers)
        out = SSEResponse(status=200, headers={**STREAM_HEADERS, **headers})
        drain.streaming(http_request, out)
        await out.prepare(http_request)
        events = replay.to_chunks(entry.body, request.wants_usage)
        await out.write_eof(events if dialect is None else dialect.stream(events))  # head, events, end: one write
        return out

    def tap(self, opened) -> Tap:
        """Copy a stream as it is relayed, to store it when it completes."""
        tap = opened.parser = Tap(opened.parser, opened.first, self.max_bytes)
        return tap

    def keep(self, key: str, body: bytes, model: str | None, usage: Usage | None) -> None:
        """Store a complete non-stream answer, in the background."""
        if len(body) <= self.max_bytes:
            self._put(key, body, model, usage)

    def keep_stream(self, key: str, tap: Tap, model: str | None, usage: Usage | None) -> None:
        """Store a stream that completed, as the chat completion it adds up to."""
        if tap.parts is None or not (tap.finished or tap.done):
            return
        body = replay.assemble(b"".join(tap.parts), usage)
        if body is not None:
            self._put(key, body, model, usage)

    def _put(self, key: str, body: bytes, model: str | None, usage: Usage | None) -> None:
        entry = _encode(Entry(body, model, usage or Usage()))
        self.store.spawn(self._set(key, entry))

    async def _set(self, key: str, entry: bytes) -> None:
        try:
            await self.backend.set(key, entry, ttl=self.ttl)
        except Exception as exc:
            log.warning("response_cache_unavailable", error=type(exc).__name__)
