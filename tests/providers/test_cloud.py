"""Google credentials for Vertex over real loopback: a service account whose `token_uri` is a fake
Google token endpoint (the JWT checked against the account's freshly generated RSA key), and a
Vertex fake that answers 401 ACCESS_TOKEN_EXPIRED once (tests/fakes/google.py)."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.fakes.google import BASE

MODEL = "gemini-2.0-flash-001"


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller", max_retries=0)


@pytest.mark.parametrize("how", ["inline", "file", "env"])
async def test_vertex_with_a_service_account_gets_one_token_and_survives_an_expired_one(gateway, google, tmp_path,
                                                                                       monkeypatch, how):
    account = orjson.dumps(google.account()).decode()
    spec = {"inline": account, "file": f"file:{tmp_path / 'sa.json'}", "env": "env:VERTEX_SA"}[how]
    (tmp_path / "sa.json").write_text(account)
    monkeypatch.setenv("VERTEX_SA", account)
    item = {"name": "vertex", "supportedProvider": "VERTEXAIGEMINI", "url": google.url + BASE,
            "credentials": spec, "models": [MODEL]}
    gw = await gateway({"providers": [item]})
    async with sdk(gw) as client:
        answers = [await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
                   for _ in range(3)]
        assert google.token_calls == 1
        google.expire_next = 1  # the provider says the token expired: one new token, one more try
        answers.append(await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}]))
    assert all(a.choices[0].message.content == "Hello from Vertex." for a in answers)
    assert google.token_calls == 2 and google.seen[-1] != google.seen[0]


async def test_an_invalid_service_account_is_a_502_naming_it(gateway, google):
    item = {"name": "vertex", "supportedProvider": "VERTEXAIGEMINI", "url": google.url + BASE,
            "credentials": '{"type": "service_account", "private_key": "not a key"}', "models": [MODEL]}
    gw = await gateway({"providers": [item]})
    async with sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_credentials"
    assert "service-account JSON" in caught.value.body["message"] and "not a key" not in caught.value.response.text


def test_the_cloud_libraries_are_imported_in_the_fetch_thread_not_on_the_event_loop():
    # A registration checks the extra on the loop: found, not imported (azure.identity takes ~0.15 s).
    # The AWS fetch (a thread) loads what signing and the stream parser use (botocore.session does),
    # so the first request does not import them on the loop either.
    import subprocess
    import sys

    script = """
import sys
from proxy.providers import cloud, credentials
assert credentials.installed("aws") and credentials.installed("azure") and credentials.installed("gcp")
loaded = [m for m in ("botocore.session", "azure.identity", "google.oauth2") if m in sys.modules]
assert not loaded, loaded
cloud.aws_source().fetch(False)
assert "botocore.auth" in sys.modules and "botocore.eventstream" in sys.modules
"""
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 40,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
