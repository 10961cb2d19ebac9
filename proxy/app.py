"""The aiohttp application: paths, the error boundary, start and stop of the gateway's parts."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from proxy.config import Config
from proxy.control import admin, budget, health, models, openapi, ui, usage
from proxy.control import catalogs as catalog
from proxy.edge import limits, server
from proxy.edge.drain import Drain
from proxy.edge.server import error_response
from proxy.errors import InvalidRequest, NotFound, PayloadTooLarge, ProxyError
from proxy.gateway import GATEWAY, Gateway
from proxy.pipeline import messages_api as messages
from proxy.pipeline import responses_api as responses
from proxy.pipeline import serve as chat
from proxy.pipeline.outcome import new_id
from proxy.pipeline.parts import PARTS
from proxy.telemetry.journal import Journal

log = structlog.get_logger("proxy.app")

_PREFIXES = ("/openai/v1", "/openai", "/v1", "")
_DATA_PLANE = (chat.chat, chat.embeddings, messages.create, responses.create)
_MESSAGES_PATHS = ("/v1/messages", "/v1/messages/count_tokens")


def dialect_of(path: str):
    """The inbound dialect whose error shape a path's answers take (None: OpenAI's)."""
    if path.startswith("/anthropic/") or path in _MESSAGES_PATHS:
        return messages.DIALECT
    return None


def _error(error: ProxyError, path: str) -> web.Response:
    dialect = dialect_of(path)
    return error_response(error, None if dialect is None else new_id(), dialect)


def _status_error(exc: web.HTTPException) -> ProxyError:
    if exc.status == 404:
        return NotFound("no such endpoint")
    if exc.status == 405:
        return InvalidRequest("method not allowed on this endpoint", status=405, code="method_not_allowed")
    if exc.status == 413:
        return PayloadTooLarge("the request body is too large")
    return ProxyError(exc.reason or "request failed", status=exc.status, code=None)


def _boundary(http_request: web.Request, exc: BaseException) -> web.Response:
    """The error answer for what a handler raised: OpenAI's shape (Anthropic's on its routes), never a trace."""
    if isinstance(exc, ProxyError):
        return _error(exc, http_request.path)
    if isinstance(exc, web.HTTPException):
        response = _error(_status_error(exc), http_request.path)
        if "Allow" in exc.headers:  # a 405 lists the methods the path does serve (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    log.exception("unhandled", path=http_request.path, exc_info=exc)
    return _error(ProxyError("internal error"), http_request.path)


def _refused(http_request: web.Request) -> web.Response | None:
    """An answer for framing the HTTP parser let through (request smuggling), or None."""
    refused = server.framing_error(http_request)
    if refused is None or (isinstance(refused, PayloadTooLarge) and http_request.match_info.handler in _DATA_PLANE):
        return None  # those answer a 413 themselves, with a usage record
    if dialect_of(http_request.path) is None:
        return server.closing(refused)
    refused.closes = True  # as `server.closing`: nothing pipelined behind it is read
    return _error(refused, http_request.path)


@web.middleware
async def errors(http_request: web.Request, handler):
    """The one error boundary: everything leaves in OpenAI's shape, nothing as a trace."""
    refused = _refused(http_request)
    if refused is not None:
        return refused
    try:
        return await handler(http_request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _boundary(http_request, exc)
    except Exception as exc:
        return _boundary(http_request, exc)


def edge(journal: Journal, drain: Drain):
    """The gateway app's one middleware: the error boundary (as `errors`), the drain's count of
    handlers in flight, and the journal of data-plane requests. One coroutine frame a request
    where three middlewares (and aiohttp's own, for any) cost four."""

    @web.middleware
    async def middleware(http_request: web.Request, handler):
        refused = _refused(http_request)
        if refused is not None:
            return refused
        task = asyncio.current_task()
        drain.enter(task)
        opened = None
        try:
            opened = journal.open(http_request)
            response = await handler(http_request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _boundary(http_request, exc)
        except Exception as exc:
            response = _boundary(http_request, exc)
        finally:
            if opened is not None:
                journal.close(opened)
            drain.leave(task)
        drain.answering(response)
        return response

    return middleware


def add_routes(app: web.Application) -> None:
    for prefix in _PREFIXES:
        app.router.add_post(f"{prefix}/chat/completions", chat.chat)
        app.router.add_post(f"{prefix}/embeddings", chat.embeddings)
        app.router.add_get(f"{prefix}/models", models.list_models)
    for prefix in ("/anthropic/v1", "/v1"):  # the Messages API (Anthropic's SDK and Claude Code)
        app.router.add_post(f"{prefix}/messages", messages.create)
        app.router.add_post(f"{prefix}/messages/count_tokens", messages.count_tokens)
    app.router.add_get("/anthropic/v1/models", models.messages_models)
    for prefix in ("/openai/v1", "/v1", ""):  # the Responses API (OpenAI's Agents SDK and Codex)
        app.router.add_post(f"{prefix}/responses", responses.create)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/openapi.json", openapi.document)
    app.router.add_post("/v1/llm/providers", admin.register)
    app.router.add_get("/v1/llm/providers", admin.list_providers)
    app.router.add_delete("/v1/llm/providers/{name}", admin.delete_provider)
    app.router.add_get("/v1/llm/openai/supported-providers", catalog.supported_providers)
    app.router.add_get("/ai-optimizer/v1beta/hosted-model-specs", catalog.hosted_model_specs)
    app.router.add_get("/v1/llm/usage", usage.report)
    app.router.add_get("/v1/llm/api-keys/{id}/budget", budget.get_budget)
    app.router.add_put("/v1/llm/api-keys/{id}/budget", budget.put_budget)
    app.router.add_delete("/v1/llm/api-keys/{id}/budget", budget.delete_budget)
    app.router.add_get("/ui", ui.page)  # the dashboard; its data calls need the admin key
    app.router.add_get("/ui/{name:[^/]*}", ui.asset)


def build_health(gw: Gateway) -> web.Application:
    """The probe listener (`listen.healthPort`): liveness, readiness and metrics, nothing else."""
    app = web.Application(middlewares=[errors])
    app[GATEWAY] = gw
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    return app


def build(cfg: Config, gateway: Gateway | None = None) -> web.Application:
    gw = gateway or Gateway(cfg)
    drain = Drain(gw, cfg.drain)  # run by the CLI on SIGTERM (proxy.cli)
    app = web.Application(middlewares=[edge(Journal(gw.batcher, gw.auth), drain)],
                          client_max_size=cfg.limits.max_body_bytes)
    app[GATEWAY] = gw
    app[PARTS] = gw.parts
    drain.install(app)
    limits.install(app, cfg.limits, gw.metrics)  # fast 503s: in-flight and memory caps

    async def lifecycle(app: web.Application):
        await gw.start()
        yield
        await gw.stop()

    app.cleanup_ctx.append(lifecycle)
    add_routes(app)
    return app
