"""The one place that talks to providers: client session, timeouts, attempts and failover.

Failover (docs/reliability.md, the five policies) happens only before a byte reached the client, and only where
the provider cannot have read the request, or said no to it: a connect error or timeout
(the TLS handshake included), a reset while the request was still being written, or an answer
of 401/403, 429 or 5xx (including a 200 stream whose first event is an error). A first-byte
timeout or a reset after the request was written whole is final, a 504 or a 502 after one
attempt: the provider may have charged it. `routing.retryOnReset: true` opts into retrying such
a reset (each attempt counted in the record).

When no candidate is left, the client gets the class of the last provider's answer, naming the
provider and its status: 429 (with Retry-After), overloaded 503 (with Retry-After), 500/502 and
other 5xx as 502, a timeout as 504, the provider's own 4xx as it was, 401/403 as 502
`upstream_auth_error` (the caller cannot fix the gateway's key). The adapters classify the
answer (`UpstreamFailure.kind`) from its status and structured fields; `error_for` only maps.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote, urlsplit

import structlog

from proxy import __version__
from proxy.config import Config, ProviderTimeouts
from proxy.errors import (
    InvalidRequest,
    NotFound,
    ProxyError,
    RateLimited,
    UpstreamAuthError,
    UpstreamCredentials,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from proxy.keys import last4
from proxy.net import egress, httpclient, netguard
from proxy.providers import credentials
from proxy.providers.base import ChatRequest, UpstreamFailure
from proxy.upstream import retries
from proxy.upstream.attempts import Attempts
from proxy.upstream.router import Route, Router

log = structlog.get_logger("proxy.upstream.dispatch")

_FAILOVER_KINDS = frozenset({"auth", "rate_limit", "overloaded", "server", "timeout"})
_ERROR_PEEK_BYTES = 64 * 1024
READ_BUFSIZE = 16 * 1024


class Watchdog:
    """Ends the guarded block with TimeoutError after `idle` s without `touch()`, or at `deadline`.

    One timer per idle period rather than one per chunk: `touch()` only stores the time.
    `progress`, when given, is sampled four times per idle period: a different answer than the
    last one counts as a touch (the relay passes the client's unsent byte count, so a reader that
    is slow but reading is not cut, and one that stopped is, within 1.25 × idle).
    """

    __slots__ = ("idle", "deadline", "last", "reason", "progress", "has_answered", "then", "_mark", "_loop", "_task",
                 "_cancelling", "_handle", "_at")

    def __init__(self, idle: float, deadline: float | None = None, progress=None, then: float | None = None) -> None:
        self.idle = idle
        self.deadline = deadline
        self.reason: str | None = None
        self.progress = progress
        self.has_answered = False
        # The idle `answered()` will set, when known: the first timer is armed for the sooner of
        # the two, so an answer within it needs no second timer (a timer costs ~2 µs to arm and
        # cancel); one that fires before its time finds nothing due and re-arms for the rest.
        self.then = then
        self._mark = None

    async def __aenter__(self) -> Watchdog:
        # asyncio.timeout's protocol, by hand (it cost more than the rest of the watchdog): the
        # timer cancels the task; leaving the block turns that cancellation into TimeoutError.
        loop = self._loop = asyncio.get_running_loop()
        task = self._task = asyncio.current_task(loop)  # given the loop: no second look-up (a getpid on 3.11)
        self._cancelling = task.cancelling()
        self.last = self._loop.time()
        if self.progress is not None:
            self._mark = self.progress()
        then = self.then
        self._arm(self.idle if then is None or then >= self.idle else then)
        return self

    def _arm(self, span: float | None = None) -> None:
        at = self.last + (self.idle if span is None else span)
        if self.progress is not None:
            at = min(at, self._loop.time() + self.idle / 4)
        if self.deadline is not None and self.deadline < at:
            at = self.deadline
        self._at = at
        self._handle = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self.progress is not None:
            mark = self.progress()
            if mark != self._mark:
                self._mark, self.last = mark, max(self.last, now)
        if self.deadline is not None and now >= self.deadline:
            self.reason = "max_duration"
        elif now - self.last >= self.idle:
            self.reason = "idle"
        else:
            self._arm()
            return
        self._task.cancel()

    def touch(self) -> None:
        self.last = self._loop.time()

    def answered(self, idle: float) -> None:
        """The answer's headers came: from now on, at most `idle` s between reads."""
        self.has_answered = True
        self.last = self._loop.time()
        self.idle = idle
        if self._at > self.last + idle:  # the armed timer would fire too late
            self._handle.cancel()
            self._arm()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self._handle.cancel()
        if self.reason is not None and self._task.uncancel() <= self._cancelling \
                and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


# A pooled keep-alive connection the provider closed just as it was reused (after the pool's
# check), with no answer begun: the same provider is tried again once, on a new connection, and
# not held against it. Only when that cannot resend a request the provider may have read: the
# request was not all written, or `routing.retryOnReset` allows it.
STALE = "stale_connection"


class Retry(Exception):
    """This attempt failed in a way that allows the next candidate."""

    def __init__(self, error: ProxyError, kind: str, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.kind = kind
        self.retry_after = retries.retry_after(retry_after)


class Opened:
    """A successful attempt, before any byte was sent to the client."""

    __slots__ = ("route", "response", "parser", "first", "body", "parsed", "sent_at")

    def __init__(self, route: Route, response, sent_at: float) -> None:
        self.route = route
        self.response = response
        self.sent_at = sent_at
        self.parser = None
        self.first = b""
        self.parsed = None


def redact(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4 and secret in text:
        return text.replace(secret, last4(secret))
    return text


async def read_body(response, limit: int, watchdog: Watchdog | None = None) -> bytes:
    """Read a whole upstream body, refusing one larger than `limit` (502)."""
    parts, size = [], 0
    while chunk := await _read(response):
        if watchdog is not None:
            watchdog.touch()
        size += len(chunk)
        if size > limit:
            raise UpstreamError(f"the provider's answer is larger than {limit} bytes",
                                code="upstream_response_too_large")
        parts.append(chunk)
    return b"".join(parts)


async def _read(response) -> bytes:
    try:
        return await response.chunk()
    except httpclient.ClientError as exc:  # cut short, or not HTTP: the provider's fault
        raise UpstreamError("the provider's answer broke off", code="upstream_truncated") from exc


def check_path(url: str) -> None:
    """Refuse an upstream URL whose path has dot segments (a model name used as a path traversal): the client library
    would resolve them (`/deployments/../x` is `/x`), so a model name would change the path."""
    if "/." not in url and "%2e" not in url and "%2E" not in url:  # the usual case: one scan, no copy
        return
    if any(unquote(segment) in (".", "..") for segment in urlsplit(url).path.split("/")):
        raise InvalidRequest("this model name cannot be used in the provider's URL", param="model",
                             code="invalid_model_name")


def error_for(failure: UpstreamFailure, provider: str, secret: str | None) -> ProxyError:
    """The client-facing error for a provider's error answer (see the module docstring)."""
    message = redact(failure.message, secret)
    kind, said = failure.kind, f"the provider {provider!r} answered HTTP {failure.status}"
    if kind == "auth":  # its message may quote the key: left out
        return UpstreamAuthError(f"{said}: it refused the gateway's credentials for it")
    if kind == "rate_limit":
        return RateLimited(f"{said} (rate limited): {message}", retry_after=_wait(failure),
                           code="upstream_rate_limited")
    if kind == "overloaded":
        return UpstreamOverloaded(f"{said} (overloaded): {message}", retry_after=_wait(failure))
    if kind == "timeout":
        return UpstreamTimeout(f"{said} (timed out): {message}")
    if kind == "server":
        return UpstreamError(f"{said} (failed): {message}")
    if kind == "not_found":  # the provider's own words: what a caller of the provider would read
        return NotFound(message, code=failure.code or "not_found")
    return InvalidRequest(message, code=failure.code or "invalid_request", status=failure.status
                          if 400 <= failure.status < 500 else 400)


def _wait(failure: UpstreamFailure) -> int:
    """The Retry-After the client gets: the provider's, made safe, else 1 s."""
    wait = retries.retry_after(failure.retry_after)
    return 1 if wait is None else retries.header_seconds(wait)


class Upstream:
    def __init__(self, cfg: Config, router: Router, metrics) -> None:
        self.cfg = cfg
        self.router = router
        self.metrics = metrics
        self.client: httpclient.Client | None = None
        self.in_flight = 0
        self.budget = retries.Budget(cfg.routing.retry_budget)
        self.cooldowns = retries.Cooldowns()

    async def start(self) -> None:
        self.client = httpclient.Client(
            netguard.GuardedResolver(self.router.registry.private_ok),
            user_agent=f"ai-enabler-proxy/{__version__}",
            # Read-ahead per upstream connection while the client is slower (backpressure): 2 × this.
            read_bufsize=READ_BUFSIZE, keepalive=30.0, egress=egress.Egress(self.cfg.egress))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _timeouts(self, override: ProviderTimeouts | None) -> tuple[float, float, float]:
        base = self.cfg.timeouts
        if override is None:
            return base.connect, base.first_byte, base.idle
        return (override.connect or base.connect, override.first_byte or base.first_byte,
                override.idle or base.idle)

    async def open(self, name: str, adapter, upstream_request, connect: float, fresh: bool = False, route=None):
        """Send a request and wait for the answer's headers (the caller's Watchdog bounds the wait)."""
        if adapter.caps.in_process:
            return adapter.serve(upstream_request)
        try:
            # A stream is relayed as it comes: no compression to undo on the way.
            return await self.client.request(
                upstream_request.method, upstream_request.url, upstream_request.headers, upstream_request.body,
                connect_timeout=connect, decompress=not upstream_request.stream, fresh=fresh, egress=route)
        except httpclient.ConnectTimeout as exc:  # the TLS handshake included: nothing was sent
            raise Retry(UpstreamTimeout(f"connecting to the provider {name!r} timed out"), "connect_timeout") from exc
        except httpclient.EgressFailed as exc:  # a proxy's refusal, a certificate: named for the operator
            log.warning("upstream_egress_failed", provider=name, reason=str(exc))
            raise Retry(UpstreamError(f"the provider {name!r} could not be reached: {exc}"), "connect") from exc
        except httpclient.ConnectFailed as exc:  # refused, or reset in the TLS handshake
            raise Retry(UpstreamError(f"the provider {name!r} could not be reached"), "connect") from exc
        except httpclient.ResetBeforeSent as exc:  # part of the request never left: it cannot have been read
            error = UpstreamError(f"the connection to the provider {name!r} was reset before the request was sent")
            raise Retry(error, STALE if exc.stale else "reset_before_sent") from exc
        except httpclient.Disconnected as exc:
            # Closed with no answer after the request was written whole: from here it cannot be
            # told whether the provider read it, so it is not sent again (the provider may charge
            # it twice) unless `routing.retryOnReset` asks for that.
            error = UpstreamError(f"the provider {name!r} closed the connection without answering",
                                  code="upstream_reset")
            if self.cfg.routing.retry_on_reset:
                raise Retry(error, STALE if exc.stale else "reset") from exc
            raise error from exc
        except (httpclient.ClientError, ValueError) as exc:  # not HTTP; a URL or header it cannot send
            raise UpstreamError(f"the provider {name!r} could not be called", code="upstream_error") from exc

    async def attempt(self, route: Route, request: ChatRequest, watchdog_idle: float | None = None, fresh: bool = False) -> Opened:
        """One attempt at one provider, up to the first event (stream) or the whole body. A cloud
        credential the provider refused (401/403: revoked, or expired early) is replaced once and
        the request sent once more, before the refusal counts as the provider's failure."""
        adapter = route.provider.adapter
        if not (adapter.caps.extra or adapter.caps.keyless_extra) or adapter.credential_key(route.provider.target()) is None:
            return await self._attempt(route, request, watchdog_idle, fresh)
        try:
            return await self._attempt(route, request, watchdog_idle, fresh)
        except Retry as retry:
            if retry.kind != "auth":
                raise
        return await self._attempt(route, request, watchdog_idle, fresh, renew=True)

    async def _attempt(self, route: Route, request: ChatRequest, watchdog_idle: float | None, fresh: bool,
                       renew: bool = False) -> Opened:
        provider = route.provider
        adapter = provider.adapter
        target = provider.target()
        request.model = route.model
        upstream_request = adapter.build_request(target, request)
        check_path(upstream_request.url)
        if adapter.caps.extra or adapter.caps.keyless_extra:  # a cloud credential signs the final request
            await credentials.authorize(adapter, target, upstream_request, renew)
        connect, first_byte, idle = self._timeouts(provider.item.timeouts)
        sent_at = time.monotonic()
        # One timer for the attempt: `first_byte` until the answer's headers, then `idle` between reads.
        watchdog = Watchdog(first_byte, then=watchdog_idle or idle)
        try:
            async with watchdog:
                response = await self.open(provider.name, adapter, upstream_request, connect, fresh, provider.egress)
                watchdog.answered(watchdog_idle or idle)
                opened = Opened(route, response, sent_at)
                try:
                    await self._first_events(opened, request, target.api_key, watchdog)
                except BaseException:
                    response.close()
                    raise
        except TimeoutError:
            if not watchdog.has_answered:
                raise UpstreamTimeout(f"the provider {provider.name!r} did not answer in time") from None
            raise UpstreamTimeout(f"the provider {provider.name!r} stopped sending") from None
        return opened

    async def _first_events(self, opened: Opened, request: ChatRequest, secret, watchdog: Watchdog) -> None:
        response, adapter = opened.response, opened.route.provider.adapter
        limit = self.cfg.limits.max_response_bytes
        status = response.status
        if 300 <= status < 400:
            raise UpstreamError(f"the provider {opened.route.provider.name!r} answered a redirect (HTTP {status}); "
                                "redirects are not followed")
        if status >= 400:
            body = await read_body(response, _ERROR_PEEK_BYTES * 16, watchdog)
            failure = adapter.parse_error(status, response.headers, body)
            error = error_for(failure, opened.route.provider.name, secret)
            if failure.kind in _FAILOVER_KINDS:
                raise Retry(error, failure.kind, failure.retry_after)
            raise error
        if not request.stream:
            body = await read_body(response, limit, watchdog)
            opened.parsed = self._parse(adapter, request, body)
            return
        parser = opened.parser = adapter.stream_parser(request)
        first = []
        while parser.events == 0:
            chunk = await _read(response)
            if not chunk:
                raise UpstreamError("the provider ended the stream before any event",
                                    code="upstream_truncated")
            watchdog.touch()
            first.append(parser.feed(chunk))
        if parser.error is not None and parser.events == 1:
            error = error_for(parser.error, opened.route.provider.name, secret)
            if parser.error.kind in _FAILOVER_KINDS:
                raise Retry(error, "error_event")
            raise error  # the caller's own fault (a prompt refused by the provider): no failover
        opened.first = b"".join(first)

    @staticmethod
    def _parse(adapter, request: ChatRequest, body: bytes):
        try:
            return adapter.parse_response(request, body)
        except ProxyError:  # the adapter read the answer and it refuses the request (a blocked prompt)
            raise
        except Exception as exc:  # a body the adapter cannot read is the provider's fault
            raise UpstreamError("the provider's answer could not be read", code="upstream_bad_response") from exc


async def dispatch(upstream: Upstream, routes: list[Route], request: ChatRequest, attempts: Attempts) -> Opened:
    """Try candidates in order until one answers; every attempt is counted in `attempts`.

    Providers cooling down after a 429 with Retry-After for this model (rate limits are per model)
    are left out (all of them: a 429 here);
    open circuits are still tried, last (panic mode). An attempt after the first goes to a provider
    with a clean record (no failure since its last success) freely, to any other only if the retry
    budget allows, else that provider is skipped. A 429 from the last candidate is waited out and
    retried when the wait fits `routing.retryAfterCap`. A stale pooled connection (STALE: reset
    before the request was all written, or any reset with `retryOnReset`) is retried on the same
    provider, on a new connection, without counting against it.
    """
    router, metrics, routing = upstream.router, upstream.metrics, upstream.cfg.routing
    upstream.budget.request()
    routes = await _usable(upstream, routes)
    last: ProxyError | None = None
    index = tried = waits = 0
    fresh = False  # the next attempt opens a new connection: the pooled one was stale
    while index < len(routes) and tried < routing.max_attempts:
        route = routes[index]
        provider = route.provider
        if tried and not upstream.budget.try_retry(_clean(router, provider.name)):
            metrics.upstream_errors.inc((provider.name, "retry_budget"))
            index += 1
            continue
        tried += 1
        attempts.begin(provider)
        metrics.attempts.inc((provider.name,))
        try:
            opened = await upstream.attempt(route, request, fresh=fresh)
        except Retry as retry:
            metrics.upstream_errors.inc((provider.name, retry.kind))
            if retry.kind == STALE:  # a new connection is never stale, so this repeats at most once per provider
                log.info("upstream_stale_connection", provider=provider.name, request_id=attempts.request_id, retrying=True)
                fresh, last = True, retry.error
                continue
            fresh = False
            attempts.failed()
            log.warning("upstream_failed", provider=provider.name, kind=retry.kind, request_id=attempts.request_id,
                        status=retry.error.status, retrying=True)
            rate_limited = retry.kind == "rate_limit"
            router.failed(provider.name, retry.retry_after if rate_limited else None)
            if rate_limited and retry.retry_after is not None:
                upstream.cooldowns.hold((provider.name, route.model), retry.retry_after)
            last = retry.error
            wait = None
            if rate_limited and index == len(routes) - 1 and tried < routing.max_attempts:
                wait = _rate_limit_wait(routing.retry_after_cap, retry.retry_after, waits)
            if wait is None:
                index += 1
            else:  # the same provider again, no sooner than it asked
                waits += 1
                attempts.release()
                await asyncio.sleep(wait)
            continue
        except UpstreamCredentials as exc:  # no call reached the provider: not held against its circuit
            metrics.upstream_errors.inc((provider.name, exc.code))
            log.warning("upstream_credentials", provider=provider.name, request_id=attempts.request_id, reason=exc.message)
            last = exc
            index += 1
            continue
        except UpstreamTimeout:
            metrics.upstream_errors.inc((provider.name, "timeout"))
            router.failed(provider.name)
            raise
        except UpstreamError as exc:
            metrics.upstream_errors.inc((provider.name, exc.code or "upstream"))
            log.warning("upstream_failed", provider=provider.name, kind=exc.code, request_id=attempts.request_id,
                        status=exc.status, retrying=False)
            router.failed(provider.name)
            raise
        router.succeeded(provider.name)
        attempts.answered(provider.target().api_key)
        return opened
    assert last is not None
    raise last


def _clean(router: Router, name: str) -> bool:
    """No failure recorded since the provider's last success (or it was never called)."""
    health = router.health.get(name)
    return health is None or not (health.failures or health.ejections or health.open_until > router.clock())


def _rate_limit_wait(cap: float, retry_after: float | None, waits: int) -> float | None:
    """How long to wait before asking a provider that answered 429 again; None: do not wait."""
    if not cap:
        return None
    wait = retries.backoff(waits) if retry_after is None else retry_after
    return wait if wait <= cap else None


async def _usable(upstream: Upstream, routes: list[Route]) -> list[Route]:
    """The candidates not cooling down; when every one is, wait if that fits the cap, else 429."""
    cooling = upstream.cooldowns
    if not cooling.until:
        return routes
    usable = [route for route in routes if not cooling.remaining((route.provider.name, route.model))]
    if usable:
        return usable
    wait = min(cooling.remaining((route.provider.name, route.model)) for route in routes)
    if wait <= upstream.cfg.routing.retry_after_cap:
        await asyncio.sleep(wait)
        return routes
    seconds = retries.header_seconds(wait)
    raise RateLimited(f"every provider of this model asked the gateway to wait; retry in {seconds} s",
                      retry_after=seconds, code="upstream_rate_limited")
