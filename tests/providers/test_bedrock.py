"""BEDROCK over real loopback: IRSA web identity through a fake STS, SigV4 checked by a fake
Bedrock that recomputes it with botocore, eventstream parsing, refresh, retry and failures."""

from __future__ import annotations

import asyncio
import socket
import sys

import openai
import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.net import netguard
from proxy.providers import credentials
from proxy.providers.base import Target
from tests.conftest import ADMIN_KEY
from tests.fakes import eventstream
from tests.fakes.aws import FakeBedrock, FakeSTS

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
WEB_IDENTITY = "eyJhbGciOiJSUzI1NiJ9.web-identity-token-for-tests.sig"


@pytest.fixture
async def aws(aiohttp_server, tmp_path, monkeypatch):
    """Only AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (and STS's endpoint) set: IRSA, nothing else."""
    token_file = tmp_path / "token"
    token_file.write_text(WEB_IDENTITY)
    sts = await FakeSTS(WEB_IDENTITY).start(aiohttp_server)
    bedrock = await FakeBedrock(sts.issued).start(aiohttp_server)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_BEARER_TOKEN_BEDROCK", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/gateway", "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
           "AWS_ENDPOINT_URL_STS": sts.url, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    credentials.forget()
    yield sts, bedrock
    credentials.forget()


def provider(bedrock: FakeBedrock, **extra) -> dict:
    return {"name": "bedrock", "supportedProvider": "BEDROCK", "region": "us-east-1", "url": bedrock.url,
            "models": [MODEL], **extra}


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller", max_retries=0)


HELLO = [{"role": "user", "content": "Hi"}]


async def test_with_only_web_identity_chat_stream_and_a_tool_round_trip_pass(gateway, aws):
    sts, bedrock = aws
    gw = await gateway({"providers": [provider(bedrock)]})
    async with sdk(gw) as client:
        answer = await client.chat.completions.create(model=MODEL, messages=HELLO)
        assert answer.choices[0].message.content == "Hello from Bedrock." and answer.usage.total_tokens == 9
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Hello from Bedrock."
        history = [*HELLO, {"role": "assistant", "tool_calls": [{"id": "tooluse_1", "type": "function",
                   "function": {"name": "clock", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "tooluse_1", "content": "noon"}]
        await client.chat.completions.create(model=MODEL, messages=history)
    assert sts.calls == 1 and len(bedrock.signed_with) == 3  # every request signed by the one STS key
    sent = bedrock.bodies[-1]
    assert sent["messages"][1]["content"][0]["toolUse"]["toolUseId"] == "tooluse_1"
    assert sent["messages"][2]["content"][0]["toolResult"]["toolUseId"] == "tooluse_1"
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "clock"


class _ToPort:
    """A resolver for the gateway's client: every name is 127.0.0.1 at `port` (whatever the URL says)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host, port, family):
        return [{"family": socket.AF_INET, "host": "127.0.0.1", "port": self.port}]

    async def close(self) -> None:
        pass


async def test_a_url_with_its_default_port_is_signed_with_the_host_header_sent(gateway, aws):
    # `url: http://host:80` (or https://vpce…:443): the client writes `Host: host:80`, and AWS checks
    # the signature against the Host header as received, so that is the host that must be signed.
    sts, bedrock = aws
    gw = await gateway({"providers": [provider(bedrock, url="http://bedrock-runtime.vpce.test:80")]})
    gw.gw.upstream.client.resolver = netguard.GuardedResolver(gw.gw.registry.private_ok, _ToPort(bedrock.server.port))
    async with sdk(gw) as client:
        answer = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert answer.choices[0].message.content == "Hello from Bedrock." and bedrock.calls == 1


async def test_the_fake_refuses_a_signature_that_does_not_match(aws, aiohttp_client):
    sts, bedrock = aws
    import aiohttp

    async with aiohttp.ClientSession() as session:
        bad = {"Authorization": "AWS4-HMAC-SHA256 Credential=ASIAX/20250101/us-east-1/bedrock/aws4_request, "
                                "SignedHeaders=host;x-amz-date, Signature=00", "X-Amz-Date": "20250101T000000Z"}
        async with session.post(bedrock.url + "/model/m/converse", data=b"{}", headers=bad) as answer:
            assert answer.status == 403


async def test_credentials_are_refreshed_before_expiry_with_one_sts_call_for_100_requests(gateway, aws):
    sts, bedrock = aws
    sts.lifetime = credentials.REFRESH_MARGIN + 2  # fresh for 2 s, then inside the refresh margin
    gw = await gateway({"providers": [provider(bedrock)]})
    async with sdk(gw) as client:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
        assert sts.calls == 1
        await asyncio.sleep(2.2)
        await asyncio.gather(*(client.chat.completions.create(model=MODEL, messages=HELLO) for _ in range(100)))
        for _ in range(100):  # the refresh ran in the background; the next requests use its keys
            if len(sts.issued) == 2:
                break
            await asyncio.sleep(0.02)
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert sts.calls == 2
    assert bedrock.signed_with[-1] != bedrock.signed_with[0]  # the new keys, before the old ones expired


async def test_a_refused_credential_is_refreshed_once_and_the_request_sent_once_more(gateway, aws, monkeypatch):
    sts, bedrock = aws
    gw = await gateway({"providers": [provider(bedrock)]})
    async with sdk(gw) as client:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
        bedrock.refuse = 1
        answer = await client.chat.completions.create(model=MODEL, messages=HELLO)
        assert answer.choices[0].message.content == "Hello from Bedrock."
        assert sts.calls == 2 and bedrock.calls == 3
        bedrock.refuse = 10  # refused again after the refresh: one retry only, then the provider's auth error
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
        # …and no new exchange so soon after the last renewal (a 403 the keys do not cause, such as
        # a model the account may not use, must not cost an STS call per request)
        assert bedrock.calls == 5 and sts.calls == 2
        monkeypatch.setattr(credentials, "RETRY_INTERVAL", 0.0)  # once the interval is over, a refusal renews
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_auth_error"
    assert bedrock.calls == 7 and sts.calls == 3


async def test_a_failed_token_exchange_is_a_502_naming_it_and_does_not_open_the_circuit(gateway, aws):
    sts, bedrock = aws
    sts.fail = True
    gw = await gateway({"providers": [provider(bedrock)]})
    async with sdk(gw) as client:
        for _ in range(6):
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model=MODEL, messages=HELLO)
            error = caught.value
            assert error.status_code == 502 and error.body["code"] == "upstream_credentials"
            assert "web identity token exchange failed" in error.body["message"]
            assert WEB_IDENTITY not in error.response.text
    assert bedrock.calls == 0
    health = gw.gw.router.health.get("bedrock")
    assert health is None or (not health.failures and not health.ejections)


async def test_registering_without_the_extra_is_a_400_naming_it(gateway, aws, monkeypatch):
    sts, bedrock = aws
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    monkeypatch.setitem(sys.modules, "botocore", None)  # as if `pip install ai-enabler-proxy` without [aws]
    async with gw.post("/v1/llm/providers", json={"providers": [provider(bedrock)]},
                       headers={"X-API-Key": ADMIN_KEY}) as answer:
        body = await answer.json()
    assert answer.status == 400 and "[aws]" in body["error"]["message"]


def test_a_bedrock_api_key_is_a_bearer_token_from_the_item_or_the_environment(monkeypatch):
    adapter = providers.adapter("BEDROCK")
    request = parse(orjson.dumps({"model": "amazon.nova-lite-v1:0", "messages": HELLO}))
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-from-env")
    built = adapter.build_request(Target("b", None, None, region="eu-west-1"), request)
    assert built.headers["Authorization"] == "Bearer bedrock-api-key-from-env"
    assert built.url == "https://bedrock-runtime.eu-west-1.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse"
    assert adapter.credential_key(Target("b", None, None, region="eu-west-1")) is None
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK")
    assert adapter.credential_key(Target("b", None, None, region="eu-west-1")) == ("aws",)


def test_a_frame_with_a_bad_crc_ends_the_stream_with_an_error_event():
    parser = providers.adapter("BEDROCK").stream_parser(parse(orjson.dumps(
        {"model": MODEL, "messages": HELLO, "stream": True})))
    good = eventstream.event("messageStart", {"role": "assistant"})
    bad = bytearray(eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    bad[-1] ^= 0xFF
    out = parser.feed(good[:5]) + parser.feed(good[5:] + bytes(bad))
    assert b'"role":"assistant"' in out and parser.error is not None and parser.error.code == "upstream_bad_stream"
    assert parser.feed(eventstream.event("messageStop", {"stopReason": "end_turn"})) == b""


# -- error classes: Bedrock's exceptions, as an HTTP answer (x-amzn-ErrorType) or an exception frame ----
@pytest.mark.parametrize("exception, status, kind", [
    ("ThrottlingException", 429, "rate_limit"), ("ServiceQuotaExceededException", 400, "rate_limit"),
    ("ModelNotReadyException", 429, "overloaded"), ("ServiceUnavailableException", 503, "overloaded"),
    ("ModelTimeoutException", 408, "timeout"), ("ModelErrorException", 424, "server"),
    ("InternalServerException", 500, "server"), ("ValidationException", 400, "client"),
    ("ResourceNotFoundException", 404, "not_found"), ("AccessDeniedException", 403, "auth")])
def test_each_exception_has_its_class_as_an_answer_and_as_a_stream_frame(exception, status, kind):
    adapter = providers.adapter("BEDROCK")
    headers = {"x-amzn-ErrorType": f"{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    failure = adapter.parse_error(status, headers, b'{"message":"no"}')
    assert (failure.status, failure.kind, failure.code, failure.message) == (status, kind, exception, "no")
    parser = adapter.stream_parser(parse(orjson.dumps({"model": MODEL, "messages": HELLO, "stream": True})))
    parser.feed(eventstream.event("messageStart", {"role": "assistant"})
                + eventstream.exception(exception[:1].lower() + exception[1:], "no"))
    assert (parser.error.status, parser.error.kind, parser.error.code) == (status, kind, exception)


@pytest.mark.parametrize("name", ["bedrock/error_503", "bedrock/error_429_model_not_ready",
                                  "bedrock/error_event_stream_503", "bedrock/error_408"])
async def test_an_overloaded_or_timed_out_bedrock_fails_over_to_the_next_provider(gateway, replay, replay2, name):
    from tests.fakes.replay import all_cassettes, load

    cassettes = {c["name"]: c for c in map(load, all_cassettes())}
    first = cassettes[name]
    replay.load(first)
    answer = cassettes["bedrock/text_stream" if first["openai"].get("stream") else "bedrock/text"]
    replay2.load({**answer, "upstream": first["upstream"]})  # the same question, answered
    second = {**replay2.provider(first, "second"), "isHosted": False}
    gw = await gateway({"providers": [replay.provider(first, "first"), second]})
    async with sdk(gw) as client:
        request = {"model": first["model"], **first["openai"]}
        if first["openai"].get("stream"):
            stream = await client.chat.completions.create(**request)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        else:
            text = (await client.chat.completions.create(**request)).choices[0].message.content
    assert text and (replay.calls, replay2.calls) == (1, 1) and replay2.mismatches == []
    (record,) = await gw.records()
    assert record.attempts == 2 and record.status == "completed"


# -- embeddings: InvokeModel for Titan and Cohere ----------------------------------------------------
async def test_titan_embeddings_are_signed_with_web_identity_keys(gateway, aws):
    sts, bedrock = aws
    gw = await gateway({"providers": [provider(bedrock, models=["amazon.titan-embed-text-v2:0"])]})
    async with sdk(gw) as client:
        answer = await client.embeddings.create(model="amazon.titan-embed-text-v2:0", input="Hi", dimensions=256,
                                                encoding_format="float")
    assert answer.data[0].embedding == [0.25, -0.5] and answer.usage.prompt_tokens == 4
    assert bedrock.bodies == [{"inputText": "Hi", "dimensions": 256}] and sts.calls == 1
    (record,) = await gw.records()
    assert record.prompt_tokens == 4 and not record.tokens_estimated


def test_common_bedrock_models_are_priced_and_catalogued():
    from proxy.catalog import specs as catalog
    from proxy.catalog.prices import Prices

    prices, models = Prices(), catalog.models_bundle().models
    for model, per_million in [("anthropic.claude-3-5-haiku-20241022-v1:0", 0.8), ("amazon.nova-lite-v1:0", 0.06),
                               ("meta.llama3-1-8b-instruct-v1:0", 0.22), ("amazon.titan-embed-text-v2:0", 0.02)]:
        assert prices.cost(model, 1_000_000, 0) == pytest.approx(per_million)
        assert "BEDROCK" in models[model].providers
