"""Shared helpers of the adapter interface."""

from __future__ import annotations

import email.utils
import time

from proxy.providers.base import kind_of_status, retry_after_seconds


def test_retry_after_forms():
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(when) <= 31


def test_kind_of_status():
    assert [kind_of_status(s) for s in (401, 403, 429, 404, 500, 502, 503, 504, 400, 422)] == \
        ["auth", "auth", "rate_limit", "not_found", "server", "server", "overloaded", "timeout", "client", "client"]
