"""The catalogs: `GET /ai-optimizer/v1beta/hosted-model-specs` and `GET /v1/llm/openai/supported-providers`.

Any valid caller key may read them (docs/records.md), and so may the admin key. Both page with `limit`
and `cursor` and answer `{"items": [...], "nextCursor": ...}`; an unknown query parameter is a 400.
The hosted specs filter on `provider`, `quantization`, `cloud`, `region` and `maxMemoryMib`;
`cloud` and `region` also narrow each item's `regions` to the ones that match.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from proxy.catalog import specs as catalog
from proxy.errors import InvalidRequest
from proxy.gateway import GATEWAY

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_PAGING = frozenset({"limit", "cursor"})
_HOSTED = _PAGING | {"provider", "quantization", "cloud", "region", "maxMemoryMib"}


def _json(data) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), content_type="application/json")


def _query(http_request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    query = http_request.query
    out = {}
    for name in query:
        if name not in allowed:
            raise InvalidRequest(f"unknown query parameter {name!r}; one of {', '.join(sorted(allowed))}",
                                 param=name)
        values = query.getall(name)
        if len(values) > 1 or not values[0]:
            raise InvalidRequest(f"{name!r} must be given once, with a value", param=name)
        out[name] = values[0]
    return out


def _int(query: dict[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name!r} must be an integer from {low} to {high}", param=name)
    return int(raw)


def _paged(keyed: list[tuple[str, dict]], query: dict[str, str]) -> web.Response:
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return _json(catalog.page(keyed, limit, query.get("cursor")))


async def hosted_model_specs(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    await gw.auth.reader(http_request.headers)
    query = _query(http_request, _HOSTED)
    quantization = query.get("quantization")
    if quantization is not None and quantization.upper() not in catalog.BITS_PER_WEIGHT:
        raise InvalidRequest(f"unknown quantization {quantization!r}; one of "
                             f"{', '.join(catalog.BITS_PER_WEIGHT)}", param="quantization")
    filters = catalog.Filters(
        provider=query.get("provider"), quantization=quantization, cloud=query.get("cloud"),
        region=query.get("region"), max_memory_mib=_int(query, "maxMemoryMib", None, 1, 2**40))
    return _paged(catalog.of(gw.parts).hosted_specs(filters), query)


async def supported_providers(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    await gw.auth.reader(http_request.headers)
    query = _query(http_request, _PAGING)
    return _paged(catalog.supported_providers(catalog.of(gw.parts), gw.registry, gw.prices), query)
