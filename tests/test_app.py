"""The application: unknown paths and methods answer in OpenAI's shape, never as a trace."""

from __future__ import annotations

import orjson

from proxy.errors import ProxyError


async def test_unknown_path_and_method(gateway):
    gw = await gateway()
    async with gw.get("/nope") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"
    async with gw.get("/v1/chat/completions") as r:
        assert r.status == 405
        assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_an_unexpected_exception_is_a_plain_500(gateway):
    gw = await gateway()

    async def broken(request):
        raise RuntimeError("secret internals sk-should-not-leak")

    for route in gw.app.router.routes():
        if route.resource is not None and route.resource.canonical == "/healthz":
            route._handler = broken
    async with gw.get("/healthz") as r:
        assert r.status == 500
        text = await r.text()
    assert "sk-should-not-leak" not in text and "Traceback" not in text
    assert orjson.loads(text)["error"]["type"] == "api_error"


def test_error_bodies_have_the_openai_shape():
    error = ProxyError("boom", param="x", code="c", retry_after=3)
    assert error.body() == {"error": {"message": "boom", "type": "api_error", "param": "x", "code": "c"}}
    assert error.headers() == {"Retry-After": "3"}
