"""The credential chains not reached through a registered secret, each against a loopback fake of
the service the cloud's library calls: EKS Pod Identity and EC2 instance metadata (botocore), and
Google's Application Default Credentials from `GOOGLE_APPLICATION_CREDENTIALS` or the GCE/GKE
metadata server (google-auth). The libraries honour loopback overrides of these endpoints; the
gateway's own guard against link-local addresses is about provider URLs, not these services."""

from __future__ import annotations

import importlib

import openai
import orjson
import pytest

from proxy.providers import credentials
from tests.fakes.aws import FakeBedrock, FakeIMDS, FakePodIdentity
from tests.fakes.google import BASE, FakeGoogle, FakeMetadata

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
GEMINI = "gemini-2.0-flash-001"
HELLO = [{"role": "user", "content": "Hi"}]
_AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                  "AWS_BEARER_TOKEN_BEDROCK", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                  "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                  "AWS_EC2_METADATA_SERVICE_ENDPOINT")


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller", max_retries=0)


@pytest.fixture
def aws_env(tmp_path, monkeypatch):
    """No AWS credential anywhere: each test adds the one source it is about."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    credentials.forget()
    yield monkeypatch
    credentials.forget()


def bedrock_item(bedrock: FakeBedrock) -> dict:
    return {"name": "bedrock", "supportedProvider": "BEDROCK", "region": "us-east-1", "url": bedrock.url,
            "models": [CLAUDE]}


# -- EKS Pod Identity ---------------------------------------------------------------------------
@pytest.fixture
async def pod_identity(aiohttp_server, aws_env, tmp_path):
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-identity-token-1")
    agent = await FakePodIdentity("pod-identity-token-1").start(aiohttp_server)
    bedrock = await FakeBedrock(agent.issued).start(aiohttp_server)
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url)  # botocore takes a loopback URI
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    return agent, bedrock, token_file


async def test_pod_identity_signs_with_its_keys_and_rereads_the_rotated_token_file(gateway, pod_identity):
    agent, bedrock, token_file = pod_identity
    gw = await gateway({"providers": [bedrock_item(bedrock)]})
    async with sdk(gw) as client:
        answer = await client.chat.completions.create(model=CLAUDE, messages=HELLO)
        assert answer.choices[0].message.content == "Hello from Bedrock."
        token_file.write_text("pod-identity-token-2")  # the kubelet rotated the projected token
        agent.token = "pod-identity-token-2"
        bedrock.refuse = 1  # the provider refuses the keys: new ones, fetched with the new token
        answer = await client.chat.completions.create(model=CLAUDE, messages=HELLO)
        assert answer.choices[0].message.content == "Hello from Bedrock."
    assert agent.tokens_seen == ["pod-identity-token-1", "pod-identity-token-2"]
    assert len(set(bedrock.signed_with)) == 2 and set(bedrock.signed_with) == set(agent.issued)


async def test_a_failing_pod_identity_agent_is_a_502_naming_it(gateway, pod_identity):
    agent, bedrock, _ = pod_identity
    agent.fail = True
    gw = await gateway({"providers": [bedrock_item(bedrock)]})
    async with sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_credentials"
    assert "container credentials request (EKS Pod Identity) failed" in caught.value.body["message"]
    assert "pod-identity-token" not in caught.value.response.text and bedrock.calls == 0


# -- EC2 instance metadata (IMDSv2) -------------------------------------------------------------
async def test_instance_metadata_keys_sign_bedrock_requests(gateway, aiohttp_server, aws_env):
    imds = await FakeIMDS().start(aiohttp_server)
    bedrock = await FakeBedrock(imds.issued).start(aiohttp_server)
    aws_env.setenv("AWS_EC2_METADATA_DISABLED", "false")
    aws_env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    gw = await gateway({"providers": [bedrock_item(bedrock)]})
    async with sdk(gw) as client:
        for _ in range(3):
            answer = await client.chat.completions.create(model=CLAUDE, messages=HELLO)
            assert answer.choices[0].message.content == "Hello from Bedrock."
    assert imds.credential_calls == 1 and bedrock.signed_with == list(imds.issued) * 3


# -- Google Application Default Credentials -----------------------------------------------------
def vertex_item(google: FakeGoogle) -> dict:
    return {"name": "vertex", "supportedProvider": "VERTEXAIGEMINI", "url": google.url + BASE, "models": [GEMINI]}


async def test_adc_from_google_application_credentials(gateway, google, tmp_path, monkeypatch):
    (tmp_path / "sa.json").write_text(orjson.dumps(google.account()).decode())
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    gw = await gateway({"providers": [vertex_item(google)]})
    async with sdk(gw) as client:
        for _ in range(3):
            answer = await client.chat.completions.create(model=GEMINI, messages=HELLO)
            assert answer.choices[0].message.content == "Hello from Vertex."
    assert google.token_calls == 1 and len(set(google.seen)) == 1


@pytest.fixture
async def metadata(aiohttp_server, google, monkeypatch):
    """GKE's metadata server on loopback. google-auth reads GCE_METADATA_HOST when its metadata
    module is imported, so the module is imported again with the variable set (and after)."""
    from google.auth.compute_engine import _metadata

    server = await FakeMetadata(google).start(aiohttp_server)
    monkeypatch.setenv("GCE_METADATA_HOST", server.host)
    monkeypatch.setenv("GCE_METADATA_IP", server.host)
    importlib.reload(_metadata)
    yield server
    monkeypatch.undo()
    importlib.reload(_metadata)


async def test_adc_from_the_metadata_server(gateway, google, metadata):
    gw = await gateway({"providers": [vertex_item(google)]})
    async with sdk(gw) as client:
        for _ in range(3):
            answer = await client.chat.completions.create(model=GEMINI, messages=HELLO)
            assert answer.choices[0].message.content == "Hello from Vertex."
        google.expire_next = 1  # Vertex refuses the token: the metadata server gives a new one
        answer = await client.chat.completions.create(model=GEMINI, messages=HELLO)
        assert answer.choices[0].message.content == "Hello from Vertex."
    assert metadata.token_calls == 2 and google.token_calls == 2 and len(set(google.seen)) == 2
