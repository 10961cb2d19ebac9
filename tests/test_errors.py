"""The error tree: statuses, types and codes as OpenAI clients expect."""

from __future__ import annotations

import orjson
import pytest

from proxy import errors


@pytest.mark.parametrize(("cls", "status", "type_", "code"), [
    (errors.InvalidRequest, 400, "invalid_request_error", "invalid_request"),
    (errors.AuthError, 401, "authentication_error", "invalid_api_key"),
    (errors.PermissionDenied, 403, "permission_error", "forbidden"),
    (errors.ModelNotFound, 404, "invalid_request_error", "model_not_found"),
    (errors.PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
    (errors.RateLimited, 429, "rate_limit_error", "rate_limit_exceeded"),
    (errors.UpstreamError, 502, "upstream_error", "upstream_error"),
    (errors.UpstreamAuthError, 502, "upstream_error", "upstream_auth_error"),
    (errors.Unavailable, 503, "service_unavailable", "service_unavailable"),
    (errors.UpstreamOverloaded, 503, "service_unavailable", "upstream_overloaded"),
    (errors.UpstreamTimeout, 504, "timeout", "upstream_timeout")])
def test_tree(cls, status, type_, code):
    err = cls("m")
    assert (err.status, err.type, err.code) == (status, type_, code)
    assert orjson.loads(err.to_json()) == {"error": {"message": "m", "type": type_, "param": None, "code": code}}
