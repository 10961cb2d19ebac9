"""`/v1/llm/api-keys/{id}/budget`: a caller key's USD budget, behind the admin key.

    GET     {"apiKeyId", "budgetLimitUsd", "totalSpendUsd", "usagePct", "exhausted", "source"}
    PUT     {"budgetLimitUsd": ≥ 0 (0 = none), "totalSpendUsd": ≥ 0 (optional: reset the spend)}
    DELETE  drops the budget set here (the config's `budgetUsd`, if any, applies again) and
            resets the spend to 0

`source` tells where the limit in force comes from: `api`, `config` or `none`. The key id is
the `id` of a config key, or of a key verified with Cast AI (`castai-` + 16 hex of its SHA-256).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from proxy.errors import InvalidRequest, Unavailable
from proxy.gateway import GATEWAY
from proxy.logs import audit
from proxy.state.base import StateUnavailable

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
_Usd = Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]


class _Budget(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    budget_limit_usd: _Usd
    total_spend_usd: _Usd | None = None


_decode = msgspec.json.Decoder(_Budget).decode


def _key_id(http_request: web.Request) -> str:
    key_id = http_request.match_info["id"]
    if not key_id or len(key_id) > 128 or not set(key_id) <= _ID_CHARS:
        raise InvalidRequest("the API key id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
                             param="id")
    return key_id


async def _shared(coro):
    try:
        return await coro
    except StateUnavailable:
        raise Unavailable("the store that keeps budgets cannot be reached", retry_after=1,
                          code="state_unavailable") from None


async def _answer(gw, key_id: str) -> web.Response:
    body = msgspec.json.encode(await _shared(gw.quota.budget(key_id)))
    return web.Response(body=body, content_type="application/json")


async def get_budget(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    return await _answer(gw, _key_id(http_request))


async def put_budget(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    key_id = _key_id(http_request)
    try:
        budget = _decode(await http_request.read())
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid budget: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None
    await _shared(gw.quota.set_budget(key_id, budget.budget_limit_usd, budget.total_spend_usd))
    audit(http_request, gw, "budget_set", api_key_id=key_id, budget_limit_usd=budget.budget_limit_usd,
          total_spend_usd=budget.total_spend_usd)
    return await _answer(gw, key_id)


async def delete_budget(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    key_id = _key_id(http_request)
    await _shared(gw.quota.set_budget(key_id, None, 0.0))
    audit(http_request, gw, "budget_delete", api_key_id=key_id)
    return await _answer(gw, key_id)
