"""structlog in its fast configuration: filtering bound logger, orjson JSON lines on stdout;
and the audit line every change through the admin API leaves."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info") -> None:
    structlog.configure(
        cache_logger_on_first_use=True,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
    )
    # aiohttp's own loggers: warnings and up, without request lines (we log our own).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


# Filtered at info whatever LOG_LEVEL says (same output and processors as every other line):
# an operator who quiets the logs to warnings still keeps the trail of admin changes.
audit_log = structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                                  logger_factory_args=("proxy.audit",))


def admin_id(gw, headers) -> str:
    """Which admin key made a change: a config key's `id`, or `admin_key` for ADMIN_API_KEY /
    `auth.adminKey` (which has no id). Called after the key was accepted."""
    from proxy.keys import digest, presented_key

    hashed = digest(presented_key(headers) or "")
    for key in gw.cfg.auth.keys:
        if key.admin and key.sha256.lower() == hashed:
            return key.id
    return "admin_key"


def audit(http_request, gw, action: str, **fields) -> None:
    """One line per change made through the admin API, also counted in
    `aigw_admin_changes_total{action}`. Callers pass a key only as its last 4 characters."""
    audit_log.info("audit", action=action, admin_key_id=admin_id(gw, http_request.headers),
                   client=http_request.remote, **fields)
    gw.metrics.admin_changes.labels(action).inc()
