"""Caller and provider keys as the gateway handles them: read from a request, hashed, shown by
their last 4 characters only."""

from __future__ import annotations

import hashlib
import hmac

from proxy.errors import AuthError

MAX_KEY_LENGTH = 4096


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def presented_key(headers) -> str | None:
    """The caller's key from `X-API-Key` or `Authorization: Bearer`; 401 when they disagree."""
    x_api_key = headers.get("X-API-Key")
    bearer = None
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <key>'")
        bearer = value.strip()
    if x_api_key is not None:
        x_api_key = x_api_key.strip()
        if not x_api_key:
            raise AuthError("the X-API-Key header is empty")
    if x_api_key and bearer and not hmac.compare_digest(digest(x_api_key), digest(bearer)):
        raise AuthError("X-API-Key and Authorization carry different keys")
    key = x_api_key or bearer
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise AuthError("the API key is too long")
    return key


def last4(secret: str | None) -> str:
    """The only form a secret is ever shown in."""
    if not secret:
        return ""
    return "…" + secret[-4:] if len(secret) > 4 else "…"
