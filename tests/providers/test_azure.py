"""Azure: deployment URL, api-version, api-key header."""

from __future__ import annotations

from proxy.dialects.completions import parse
from proxy.providers import adapter
from proxy.providers.base import Target


def test_azure_url_and_header():
    az = adapter("AZURE")
    req = parse(b'{"model":"my deploy/../x","messages":[{"role":"user","content":"hi"}]}')
    up = az.build_request(Target("az", "https://res.openai.azure.com", "azkey", "2024-10-21"), req)
    assert up.url == ("https://res.openai.azure.com/openai/deployments/my%20deploy%2F..%2Fx/chat/completions"
                      "?api-version=2024-10-21")
    assert up.headers["api-key"] == "azkey" and "Authorization" not in up.headers
    assert az.caps.needs_url and az.caps.needs_api_version


async def test_azure_through_the_gateway(gateway, fake_openai):
    item = {"name": "az", "supportedProvider": "AZURE", "url": fake_openai.root, "apiKey": "azure-key-1234",
            "apiVersion": "2024-10-21", "models": ["gpt4o-deploy"], "isHosted": True}
    gw = await gateway({"providers": [item]})
    body = {"model": "gpt4o-deploy", "messages": [{"role": "user", "content": "hi"}]}
    async with gw.post("/v1/chat/completions", json=body) as r:
        assert r.status == 200
    seen = fake_openai.requests[0]
    assert seen.path == "/openai/deployments/gpt4o-deploy/chat/completions"
    assert seen.query == "api-version=2024-10-21" and seen.headers["api-key"] == "azure-key-1234"
