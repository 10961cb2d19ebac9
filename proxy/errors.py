"""The gateway's error tree; every error leaves in OpenAI's shape.

    ProxyError                      500 api_error
    ├── InvalidRequest              400 invalid_request_error
    │   └── InvalidTag              400 invalid_request_error / invalid_tag
    ├── AuthError                   401 authentication_error / invalid_api_key
    ├── PermissionDenied            403 permission_error
    ├── NotFound                    404 invalid_request_error / not_found
    │   └── ModelNotFound           404 invalid_request_error / model_not_found
    ├── Conflict                    409 invalid_request_error / conflict
    ├── PayloadTooLarge             413 invalid_request_error / request_too_large
    ├── RateLimited                 429 rate_limit_error / rate_limit_exceeded (+ Retry-After)
    ├── UpstreamError               502 upstream_error (the provider failed or answered badly)
    │   ├── UpstreamAuthError       502 upstream_auth_error (the provider refused its own key)
    │   └── UpstreamCredentials     502 upstream_credentials (the gateway could not get a cloud credential)
    ├── Unavailable                 503 service_unavailable (+ Retry-After)
    │   └── UpstreamOverloaded      503 service_unavailable / upstream_overloaded (+ Retry-After)
    └── UpstreamTimeout             504 timeout / upstream_timeout

A provider's error answer keeps its class when no candidate is left (`proxy.upstream.dispatch.error_for`):
429 stays RateLimited (code upstream_rate_limited), an overload is UpstreamOverloaded, a timeout
UpstreamTimeout, other 5xx UpstreamError, its own 400/404 keep their status.

Client-library exceptions are translated in `proxy.upstream.dispatch`, once, with ``raise … from``.
"""

from __future__ import annotations

import msgspec

_encode = msgspec.json.Encoder().encode


class ProxyError(Exception):
    status = 500
    type = "api_error"
    code: str | None = "internal_error"
    closes = False  # the request's body was left unread: the connection closes after the answer

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        # msgspec: orjson's output keeps its 4 KiB buffer, and a refused connection's answer lives
        # until its lingering close ends (50 refusals at once must not pin 50 sockets)
        return _encode(self.body())

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(int(self.retry_after), 0))}


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidTag(InvalidRequest):
    code = "invalid_tag"


class AuthError(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(ProxyError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    closes = True


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(ProxyError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    code = "upstream_auth_error"


class UpstreamCredentials(UpstreamError):
    """A cloud credential (a token exchange, a metadata server) failed: no attempt reached the
    provider, so it is not held against the provider's circuit. The message names the source only."""

    code = "upstream_credentials"


class Unavailable(ProxyError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamOverloaded(Unavailable):
    """The provider said it is overloaded (503 and its kin): worth retrying later, not a bug."""

    code = "upstream_overloaded"


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"
