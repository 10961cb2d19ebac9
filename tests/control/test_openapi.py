"""The OpenAPI 3.1 document (`GET /openapi.json`): it names every route the app serves, and the
gateway conforms to it under schemathesis, positive and negative data (RELIABILITY R26)."""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import msgspec
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from proxy.app import build
from proxy.config import Config
from proxy.pipeline.auth import digest
from tests.procs import GatewayProcess

DOCUMENT = json.loads(resources.files("proxy.data").joinpath("openapi.json").read_text())
KEY = "sk-schemathesis-admin-and-caller-0001"
EXAMPLES = 100  # per operation (a quarter for the aliases): about 30 s


def _routes(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method not in ("HEAD", "*") and path:
            out.add((route.method.lower(), path))
    return out


def _documented() -> set[tuple[str, str]]:
    return {(method, path) for path, item in DOCUMENT["paths"].items() for method in item
            if method in ("get", "put", "post", "delete", "patch")}


def test_every_route_is_documented_and_nothing_else(tmp_path):
    app = build(msgspec.convert({"dataDir": str(tmp_path)}, type=Config))
    assert _routes(app) == _documented()


def test_the_document_is_openapi_3_1_with_unique_operation_ids():
    assert DOCUMENT["openapi"].startswith("3.1")
    ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    schemathesis.openapi.from_dict(DOCUMENT)  # refuses a document that is not valid OpenAPI


async def test_served_at_openapi_json(gateway):
    gw = await gateway()
    async with gw.get("/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == DOCUMENT


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A gateway process with one key that is both a caller and an admin key, and the in-process
    model, so data-plane operations can succeed without a network."""
    config = {
        "auth": {"keys": [{"id": "fuzz", "sha256": digest(KEY), "admin": True}]},
        "providers": [{"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}],
        "limits": {"maxBodyBytes": 1024 * 1024},
    }
    proc = GatewayProcess(tmp_path_factory.mktemp("openapi"), config, log_level="warning")
    asyncio.run(proc.start())
    proc.session = requests.Session()  # keep-alive: the time goes to the gateway, not to connecting
    yield proc
    proc.session.close()
    proc.stop()


def _operations(security: str):
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            if op.get("security") and not any(security in scheme for scheme in op["security"]):
                continue
            if op.get("security"):
                yield method, path.replace("{name}", "x").replace("{id}", "x")


@pytest.mark.parametrize(("method", "path"), sorted(_operations("bearer")))
def test_r26_every_operation_with_security_refuses_a_missing_or_wrong_key(live, method, path):
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"X-API-Key": KEY[:-1]}):
        resp = live.session.request(method.upper(), live.url + path, headers=headers, json={}, timeout=5)
        assert resp.status_code == 401, (method, path, headers, resp.text)
        assert resp.json()["error"]["type"] == "authentication_error"


CONFIG = schemathesis.config.SchemathesisConfig.from_str("""
[generation]
mode = "all"

[checks]
positive_data_acceptance.enabled = false
""")
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
canonical = schema.exclude(operation_id_regex=r".*(Openai|V1|Bare)$")
aliases = schema.include(operation_id_regex=r".*(Openai|V1|Bare)$")


def _call(case, live) -> None:
    case.call_and_validate(base_url=live.url, session=live.session, headers={"Authorization": f"Bearer {KEY}"},
                           timeout=10)


@canonical.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_r26_the_gateway_conforms_to_its_document(case, live):
    _call(case, live)


@aliases.parametrize()
@settings(max_examples=EXAMPLES // 4, deadline=None, suppress_health_check=list(HealthCheck))
def test_r26_the_aliases_conform_too(case, live):
    _call(case, live)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
def test_r26_slow_1000_examples_per_operation(case, live):
    _call(case, live)
