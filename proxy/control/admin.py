"""The control plane: provider registration (Cast AI's schema), behind the admin key."""

from __future__ import annotations

import msgspec
from aiohttp import web

from proxy.config import ProviderItem
from proxy.errors import InvalidRequest
from proxy.gateway import GATEWAY
from proxy.keys import last4
from proxy.logs import audit


class _Registration(msgspec.Struct, forbid_unknown_fields=True):
    providers: list[ProviderItem]


_registration = msgspec.json.Decoder(_Registration)


def _json(data, status: int = 200) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(data), content_type="application/json")


async def register(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    body = await http_request.read()
    try:
        registration = _registration.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid registration: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON") from None
    known = gw.registry.by_name
    actions = ["update" if item.name in known else "register" for item in registration.providers]
    made = await gw.registry.register(registration.providers)
    for action, item in zip(actions, registration.providers, strict=True):
        key = item.api_key or ""  # `env:NAME` names a variable, it is no secret
        audit(http_request, gw, action, provider=item.name, type=item.supported_provider,
              models=list(item.models), key_last4=key if key.startswith("env:") else last4(key))
    return _json({"providers": [p.public() for p in made]})


async def list_providers(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    router = gw.router
    listed = []
    for provider in gw.registry.by_name.values():
        item = provider.public()
        item["circuitOpen"] = router.is_open(provider.name)
        item["inFlight"] = router.state(provider.name).in_flight
        listed.append(item)
    return _json({"providers": sorted(listed, key=lambda p: p["name"])})


async def delete_provider(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    name = http_request.match_info["name"]
    gone = gw.registry.by_name.get(name)
    await gw.registry.remove(name)
    listed = gone.public() if gone is not None else {}
    audit(http_request, gw, "delete", provider=name, type=listed.get("supportedProvider"),
          models=listed.get("models"), key_last4=listed.get("apiKey"))
    return _json({"name": name, "deleted": True})
