"""The in-flight journal, and telemetry's admission gate, on the data plane (opened and closed
around each request by the app's one middleware, proxy.app).

Journal: a chat or embeddings request is journalled when it arrives (a BEGIN frame, written by
the same spool writer as the records, so no request waits for it) and closed by its usage record
(or an END frame). After a crash every request that began and never closed is reported as
`aborted_unknown`: it may have reached the provider and been charged, and nothing else will
report it. The journal does not read the body, so such a record carries the caller, the
route and the header tags (`X-Tags`, `X-LiteLLM-Tags`), and an empty model.

Gate (no request without its record, docs/reliability.md): with `telemetry.whenFull: reject`, new requests get 503 with
Retry-After while their record could not be kept: the spool at its cap, or the disk refusing
writes.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import time

import msgspec
from aiohttp import web

from proxy.errors import ProxyError, Unavailable
from proxy.telemetry import tags as tagging
from proxy.telemetry.record import UsageRecord, stamp

_RECORDED = ("/chat/completions", "/embeddings", "/messages", "/responses")
_RETRY_AFTER_S = 5


_PREFIX = os.urandom(6).hex()  # one per process: slots stay unique across restarts
_COUNTER = itertools.count(1)


class Slot:
    """One journalled request; closed by its record or by the end of its handler."""

    __slots__ = ("id", "closed")

    def __init__(self) -> None:
        self.id = f"{_PREFIX}{next(_COUNTER):012x}"  # segments.SLOT_BYTES wide
        self.closed = False


CURRENT: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("usage_slot", default=None)


class Begin(msgspec.Struct, omit_defaults=True):
    ts: float
    route: str
    caller: str | None = None
    tags: str | None = None


_begin = msgspec.json.Decoder(Begin)


RESOLVED = web.RequestKey("proxy.pipeline.auth.resolved", object)  # what the journal found of the caller; reused


HEADER_TAGS = web.RequestKey("proxy.telemetry.journal.header_tags", tuple)  # tagging.header_values(); reused


def begin_info(http_request: web.Request, auth) -> Begin:
    headers = http_request.headers
    values = http_request[HEADER_TAGS] = tagging.header_values(headers)
    x_tags, litellm = values
    tags = (f"{x_tags},{litellm}" if litellm else x_tags) if x_tags else litellm or None
    found = http_request[RESOLVED] = auth.resolve(headers)
    caller = None if found is None or isinstance(found, str) else found.id
    path = http_request.path
    route = "embeddings" if path.endswith("/embeddings") else "messages" if path.endswith("/messages") else "chat"
    if path.endswith("/responses"):
        route = "responses"
    return Begin(ts=time.time(), route=route, caller=caller, tags=tags)


def aborted(slot: str, body: bytes, cluster_id: str | None) -> UsageRecord:
    """The record of a request that began before a crash and never ended."""
    begin = _begin.decode(body)
    try:
        tags = tagging.merge(None, {"X-Tags": begin.tags}) if begin.tags else []
    except ProxyError:
        tags = []
    return UsageRecord(
        id=slot, time=stamp(begin.ts), cluster_id=cluster_id,
        api_key_id=begin.caller, provider=None, provider_type=None, provider_key_last4=None,
        model_requested="", model_served=None, stream=False, status="aborted_unknown",
        error_type="gateway_restarted", tags=tags, ts=begin.ts, endpoint=begin.route)


class Journal:
    """The journal and gate for the data plane (chat, embeddings, messages and responses POSTs):
    `batcher` (its Batcher) keeps the journal, `auth` (proxy.pipeline.auth.Authenticator) names
    the caller in each BEGIN frame."""

    __slots__ = ("batcher", "auth")

    def __init__(self, batcher, auth) -> None:
        self.batcher = batcher
        self.auth = auth

    def open(self, http_request: web.Request) -> tuple[Slot, contextvars.Token] | None:
        """Journal a data-plane request (None for any other); raises Unavailable while its record
        could not be kept (`whenFull: reject`). Its record, made in the request's context, closes it."""
        if http_request.method != "POST" or not http_request.path.endswith(_RECORDED):
            return None
        batcher = self.batcher
        if batcher.refusing:
            raise Unavailable("usage records cannot be kept right now, so requests are refused "
                              "(telemetry.whenFull: reject)", retry_after=_RETRY_AFTER_S,
                              code="usage_recording_unavailable")
        slot = batcher.begin(begin_info(http_request, self.auth))
        return slot, CURRENT.set(slot)

    def close(self, opened: tuple[Slot, contextvars.Token]) -> None:
        """The handler returned or failed: an END frame unless its record closed the slot."""
        slot, token = opened
        CURRENT.reset(token)
        self.batcher.end(slot)
