"""Secret canary sweep (RELIABILITY R30): random provider, caller and admin keys; a representative
set of requests, including providers whose errors echo the key they were sent; then every log
line (DEBUG), HTTP answer, /metrics, usage record and file under the data directory is searched
for any 8-character piece of any canary. Only the last 4 characters may ever appear."""

from __future__ import annotations

import pathlib
import secrets

import aiohttp
import pytest
from aiohttp import web

from proxy.pipeline.auth import digest


def _canary() -> str:
    return secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")  # 40 characters, no shared prefix


def _pieces(secret: str) -> set[str]:
    return {secret[i:i + 8] for i in range(len(secret) - 7)}


class Echo:
    """A provider that refuses every key and quotes it back, as OpenAI does ("Incorrect API key
    provided: sk-…"), in JSON for one path, in an HTML page and in a stream for others."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.headers.get("api-key", "")
        self.keys.append(key)
        if body.get("model") == "html":
            return web.Response(status=500, text=f"<html>bad key {key} headers {dict(request.headers)}</html>",
                                content_type="text/html")
        if body.get("stream"):
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            await out.write(b'data: {"error":{"message":"Incorrect API key provided: ' + key.encode() +
                            b'","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}\n\n')
            return out
        return web.json_response({"error": {"message": f"Incorrect API key provided: {key}. You can find your key",
                                            "type": "invalid_request_error", "param": None,
                                            "code": "invalid_api_key"}}, status=401)


async def test_r30_no_canary_escapes(gateway_process, aiohttp_server):
    provider_keys = [_canary() for _ in range(3)]
    caller, admin, fallback_probe = _canary(), _canary(), _canary()
    echo = Echo()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo.chat)
    app.router.add_post("/openai/deployments/{name}/chat/completions", echo.chat)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"

    def item(name: str, key: str, **extra) -> dict:
        return {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "url": base + "/v1", "apiKey": key,
                "models": ["m", "html"], "isHosted": True, **extra}

    config = {"auth": {"keys": [{"id": "team", "sha256": digest(caller)}], "adminKey": admin},
              "providers": [item("from-file", provider_keys[0]), item("from-env", "env:R30_PROVIDER_KEY")]}
    gw = await gateway_process(config, log_level="debug", env={"R30_PROVIDER_KEY": provider_keys[1]})
    answers: list[bytes] = []
    caller_h = {"Authorization": f"Bearer {caller}"}
    admin_h = {"X-API-Key": admin}
    async with aiohttp.ClientSession() as session:
        async def call(method: str, path: str, **kw) -> int:
            async with session.request(method, gw.url + path, **kw) as resp:
                answers.append(str(resp.headers).encode() + await resp.read())
                return resp.status

        registered = await call("POST", "/v1/llm/providers", headers=admin_h, json={"providers": [
            {**item("from-api", provider_keys[2]), "supportedProvider": "AZURE", "url": base,
             "apiVersion": "2024-10-21"}]})
        assert registered == 200
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert await call("POST", "/v1/chat/completions", headers=caller_h, json=chat) == 502
        assert await call("POST", "/v1/chat/completions", headers=caller_h, json={**chat, "stream": True}) == 502
        assert await call("POST", "/v1/chat/completions", headers=caller_h, json={**chat, "model": "html"}) == 502
        for name in ("from-file", "from-env", "from-api"):  # each provider on its own, pinned
            await call("POST", "/v1/chat/completions", headers=caller_h, json={**chat, "model": f"{name}/m"})
        # The caller's and admin key in the wrong places, wrong schemes, disagreeing, too long
        for headers in ({"Authorization": f"Basic {caller}"}, {"X-API-Key": caller, "Authorization": f"Bearer {admin}"},
                        {"Authorization": f"Bearer {fallback_probe}"}, {"X-API-Key": caller * 200},
                        {"Authorization": f"Bearer {caller}x"}):
            assert await call("POST", "/v1/chat/completions", headers=headers, json=chat) == 401
        assert await call("GET", "/v1/llm/providers", headers={"X-API-Key": caller}) == 401
        assert await call("GET", "/v1/llm/providers", headers=admin_h) == 200
        assert await call("GET", "/v1/models", headers=caller_h) == 200
        assert await call("GET", "/v1/llm/usage", headers=admin_h) == 200
        await call("GET", "/v1/llm/api-keys/team/budget", headers=admin_h)
        await call("PUT", "/v1/llm/api-keys/team/budget", headers=admin_h, json={"budgetLimitUsd": 5})
        assert await call("GET", "/metrics") == 200
        assert await call("DELETE", "/v1/llm/providers/from-api", headers=admin_h) == 200
        records = await gw.records()
    assert len(echo.keys) >= 6 and set(echo.keys) >= set(provider_keys)  # the providers did get their keys
    assert records and all(r.provider_key_last4 in (None, *[k[-4:] for k in provider_keys]) for r in records)
    canaries = {"provider": provider_keys, "caller": [caller], "admin": [admin], "probe": [fallback_probe]}
    places = {"logs": gw.logs(), "answers": b"\n".join(answers), "records": repr(records).encode()}
    for path in sorted(pathlib.Path(gw.config["dataDir"]).rglob("*")):
        if path.is_file():
            places[f"file {path.name}"] = path.read_bytes()
    assert len(places["logs"]) > 0
    leaks = [(kind, where) for kind, keys in canaries.items() for key in keys for piece in _pieces(key)
             for where, text in places.items() if piece.encode() in text]
    assert not leaks, sorted(set(leaks))
    print(f"R30 {sum(len(v) for v in canaries.values())} canaries × {len(places)} places "
          f"({sum(len(t) for t in places.values()) // 1024} KiB): 0 leaks")


@pytest.mark.parametrize("key", ["short", "sk-abcdef"])
def test_r30_the_sweep_itself_finds_a_leak(key):
    """Guard against a sweep that cannot fail: a planted copy is found."""
    assert any(piece in f"log line with {key}1234567890 in it" for piece in _pieces(key + "1234567890"))
