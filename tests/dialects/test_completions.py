"""Request decoding: only the fields the gateway reads, the rest forwarded as raw slices."""

from __future__ import annotations

import orjson
import pytest

from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from tests.conftest import openai_provider


def test_fields_and_body_rewrite():
    raw = b'{"model":"a","messages":[{"role":"user","content":"x"}],"tags":["k:v"],"temperature":0.2,"n":2}'
    req = parse(raw)
    assert (req.model, req.stream, req.wants_usage, req.tags) == ("a", False, False, ["k:v"])
    assert orjson.loads(req.openai_body("b", ask_usage=True)) == {
        "model": "b", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2, "n": 2}


def test_caller_stream_options_are_kept():
    req = parse(b'{"model":"a","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}')
    assert req.wants_usage
    assert orjson.loads(req.openai_body("a", ask_usage=True))["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("raw", [b'{"model":"a\\r\\nX: y","messages":[{"role":"user"}]}',
                                 b'{"model":"' + b"a" * 300 + b'","messages":[{"role":"user"}]}',
                                 b'{"model":"a","messages":[{"role":"user"}],"tags":"k:v"}',
                                 b'{"model":"a","messages":[{"role":"user"}],"stream_options":1}',
                                 b'{"model":"a","messages":[[[[[]]]]]}'])
def test_rejections(raw):
    with pytest.raises(InvalidRequest):
        parse(raw)


def test_embeddings_need_input():
    assert parse(b'{"model":"e","input":"x"}', "embeddings").kind == "embeddings"
    with pytest.raises(InvalidRequest, match="input"):
        parse(b'{"model":"e"}', "embeddings")


# Typed validation of the known fields (RELIABILITY R25): types and ranges as the OpenAI API
# reference states them, null where the API takes null, a 400 naming the field otherwise.

CHAT = b'"model":"m","messages":[{"role":"user","content":"x"}]'


def _chat(extra: str) -> bytes:
    return b"{" + CHAT + (b"," + extra.encode() if extra else b"") + b"}"


ACCEPTED = [
    "", '"stream":true', '"stream":null', '"stream_options":{"include_usage":false,"other":1}',
    '"stream_options":null', '"n":1', '"n":null', '"max_tokens":1', '"max_tokens":null',
    '"max_completion_tokens":4096', '"max_completion_tokens":null', '"temperature":0', '"temperature":2',
    '"temperature":1', '"temperature":null', '"top_p":0', '"top_p":1', '"top_p":0.5', '"top_p":null',
    '"presence_penalty":-2', '"presence_penalty":2', '"presence_penalty":null', '"frequency_penalty":-1.5',
    '"frequency_penalty":null', '"stop":"END"', '"stop":["a","b","c","d"]', '"stop":[]', '"stop":null',
    '"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]', '"tools":null',
    '"tool_choice":"auto"', '"tool_choice":{"type":"function","function":{"name":"f"}}', '"tool_choice":null',
    '"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}', '"response_format":null',
    '"seed":-9223372036854775808', '"seed":9223372036854775807', '"seed":null', '"logit_bias":{"50256":-100}',
    '"logit_bias":{"1":0.5}', '"logit_bias":null', '"user":"u-1"', '"user":null', '"tags":null',
    '"unknown_field":{"anything":[1,"x",null]}',
]


@pytest.mark.parametrize("extra", ACCEPTED)
def test_known_fields_accept_what_the_api_accepts(extra):
    parse(_chat(extra))


REFUSED = [
    ('"stream":"yes"', "stream"), ('"stream":1', "stream"), ('"stream_options":1', "stream_options"),
    ('"stream_options":{"include_usage":"yes"}', "stream_options"), ('"n":"2"', "n"), ('"n":0', "n"),
    ('"n":1.5', "n"), ('"n":true', "n"), ('"max_tokens":"100"', "max_tokens"), ('"max_tokens":{}', "max_tokens"),
    ('"max_tokens":0', "max_tokens"), ('"max_tokens":-5', "max_tokens"), ('"max_tokens":100.0', "max_tokens"),
    ('"max_completion_tokens":"1"', "max_completion_tokens"), ('"max_completion_tokens":0', "max_completion_tokens"),
    ('"temperature":{}', "temperature"), ('"temperature":"0.5"', "temperature"), ('"temperature":2.01', "temperature"),
    ('"temperature":-0.1', "temperature"), ('"temperature":1e400', "temperature"), ('"top_p":1.1', "top_p"),
    ('"top_p":-1', "top_p"), ('"top_p":[]', "top_p"), ('"presence_penalty":2.5', "presence_penalty"),
    ('"presence_penalty":-3', "presence_penalty"), ('"frequency_penalty":"1"', "frequency_penalty"),
    ('"frequency_penalty":-1e400', "frequency_penalty"), ('"stop":1', "stop"), ('"stop":["a","b","c","d","e"]', "stop"),
    ('"stop":["a",1]', "stop"), ('"stop":{}', "stop"), ('"tools":"x"', "tools"), ('"tools":{}', "tools"),
    ('"tools":[{}]', "tools"), ('"tools":[{"type":1}]', "tools"), ('"tools":["function"]', "tools"),
    ('"tool_choice":1', "tool_choice"), ('"tool_choice":["auto"]', "tool_choice"),
    ('"response_format":"json"', "response_format"), ('"response_format":{}', "response_format"),
    ('"response_format":{"type":null}', "response_format"), ('"seed":"1"', "seed"), ('"seed":1.5', "seed"),
    ('"seed":9223372036854775808', "seed"), ('"seed":1e400', "seed"), ('"logit_bias":[1]', "logit_bias"),
    ('"logit_bias":{"1":"x"}', "logit_bias"), ('"logit_bias":{"1":1e400}', "logit_bias"), ('"user":1', "user"),
    ('"user":{}', "user"), ('"tags":"k:v"', "tags"), ('"tags":[1]', "tags"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSED)
def test_a_wrong_type_or_range_is_a_400_naming_the_field(extra, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(_chat(extra))
    assert caught.value.status == 400 and caught.value.type == "invalid_request_error"
    assert caught.value.param == param
    assert f"'{param}'" in caught.value.message


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model":null,"messages":[{"role":"user"}]}', "model"), (b'{"model":1e400,"messages":[{"role":"user"}]}', "model"),
    (b'{"model":"m","messages":null}', "messages"), (b'{"model":"m","messages":[]}', "messages"),
    (b'{"model":"m","messages":{"role":"user"}}', "messages"), (b'{"model":"m","messages":["user"]}', "messages"),
    (b'{"model":"m","messages":[{"content":"x"}]}', "messages"), (b'{"model":"m","messages":[{"role":1}]}', "messages"),
    (b'{"model":"m","messages":[{"role":"user"},{"role":null}]}', "messages"),
    (b'{"model":"m","messages":[{"role":"wizard"}]}', "messages[0].role"),
])
def test_model_and_messages(raw, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(raw)
    assert caught.value.param == param


def test_the_message_says_where_below_the_field():
    with pytest.raises(InvalidRequest) as caught:
        parse(_chat('"tools":[{"type":"function"},{"type":7}]'))
    assert "tools[1].type" in caught.value.message


@pytest.mark.parametrize("where", [
    '"messages":[{"role":"user","content":[{"type":"text","text":"x","score":1e400}]}]',
    '"messages":[{"role":"user","content":"x","weight":-1e400}]',
])
def test_an_out_of_range_number_inside_a_forwarded_subtree_is_forwarded_as_written(where):
    req = parse(b'{"model":"m",' + where.encode() + b',"x_vendor":{"deep":[1e400]}}')
    body = req.openai_body("m", ask_usage=False)
    assert body.count(b"e400") == 2  # the provider judges its own fields; the gateway never reads these


def test_unknown_fields_pass_through_byte_for_byte():
    raw = _chat('"x_vendor":{"a":[1,2.50,"\\u00e9",null],"b":1E+2},"logprobs":true,"top_logprobs":3')
    forwarded = parse(raw).openai_body("m", ask_usage=False)
    assert b'"x_vendor":{"a":[1,2.50,"\\u00e9",null],"b":1E+2}' in forwarded
    assert b'"logprobs":true' in forwarded and b'"top_logprobs":3' in forwarded


def test_null_stream_is_not_streaming():
    req = parse(_chat('"stream":null,"stream_options":null'))
    assert (req.stream, req.wants_usage) == (False, False)


EMBEDDINGS_ACCEPTED = [
    '"input":"x"', '"input":["a","b"]', '"input":[1,2,3]', '"input":[[1,2],[3]]', '"input":"x","dimensions":256',
    '"input":"x","dimensions":null', '"input":"x","encoding_format":"float"', '"input":"x","encoding_format":"base64"',
    '"input":"x","encoding_format":null', '"input":"x","user":"u"',
]


@pytest.mark.parametrize("extra", EMBEDDINGS_ACCEPTED)
def test_embeddings_fields_accept_what_the_api_accepts(extra):
    assert parse(('{"model":"e",' + extra + "}").encode(), "embeddings").kind == "embeddings"


@pytest.mark.parametrize(("extra", "param"), [
    ('"input":""', "input"), ('"input":[]', "input"), ('"input":5', "input"), ('"input":{}', "input"),
    ('"input":null', "input"), ('"input":[null]', "input"), ('"input":[{}]', "input"), ('"input":[[]]', "input"),
    ('"input":[["a"]]', "input"), ('"input":[1.5]', "input"), ('"input":[1e400]', "input"),
    ('"input":"x","dimensions":0', "dimensions"), ('"input":"x","dimensions":"256"', "dimensions"),
    ('"input":"x","encoding_format":"hex"', "encoding_format"), ('"input":"x","encoding_format":1', "encoding_format"),
    ('"input":"x","user":5', "user"),
])
def test_embeddings_fields_refuse_what_the_api_refuses(extra, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(('{"model":"e",' + extra + "}").encode(), "embeddings")
    assert caught.value.param == param


def test_each_kind_checks_only_its_own_fields():
    parse(b'{"model":"e","input":"x","temperature":"hot"}', "embeddings")  # not an embeddings field
    parse(_chat('"input":5,"dimensions":"x"'))  # not chat fields


# Through the gateway over loopback: the 400 leaves before any upstream call.

@pytest.mark.parametrize(("field", "value"), [
    ("n", '"2"'), ("max_tokens", '"100"'), ("temperature", "{}"), ("tools", '"x"'), ("temperature", "1e400"),
    ("top_p", "1.5"), ("stop", '["a","b","c","d","e"]'), ("seed", "1e400"), ("response_format", '"json"')])
async def test_http_a_wrong_field_is_a_400_and_no_upstream_call(gateway, fake_openai, field, value):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"' + field.encode() + b'":' \
        + value.encode() + b"}"
    async with gw.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", field)
    assert fake_openai.requests == []


async def test_http_embeddings_input_of_the_wrong_type_is_a_400(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("emb",))]})
    for body, param in (({"model": "emb", "input": 5}, "input"), ({"model": "emb", "input": []}, "input"),
                        ({"model": "emb", "input": "x", "encoding_format": "hex"}, "encoding_format")):
        async with gw.post("/v1/embeddings", json=body) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == param
    async with gw.post("/v1/embeddings", json={"model": "emb", "input": [[1, 2], [3]]}) as r:
        assert r.status == 200
    assert len(fake_openai.requests) == 1


# 1e400 where the gateway never looks: a message's content part, a tool's JSON schema, an unknown field.
NESTED_HUGE = (b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi","x":1e400}]}],'
               b'"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"number","maximum":1e400}}}],'
               b'"x_vendor":{"limit":1e400}}')
CONTENT_HUGE = b'{"model":"m","messages":[{"role":"user","content":1e400}]}'  # a translation must read this one


@pytest.fixture
async def raw_upstream(aiohttp_server):
    """An OpenAI-wire upstream that keeps the raw bytes it was sent (a JSON parser would choke on 1e400)."""
    from aiohttp import web

    seen: list[bytes] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", chat)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/v1", seen


async def test_http_an_out_of_range_number_nested_in_a_forwarded_field_is_never_a_5xx(gateway, raw_upstream):
    url, seen = raw_upstream
    wire = {"name": "wire", "supportedProvider": "OPENAI_COMPATIBLE", "url": url, "models": ["m"], "isHosted": True}
    translated = {"name": "claude", "supportedProvider": "ANTHROPIC", "url": url, "apiKey": "sk-ant-test-0000",
                  "models": ["c"], "isHosted": True}
    mock = {"name": "mock", "supportedProvider": "MOCK", "models": ["k"], "isHosted": True}
    gw = await gateway({"providers": [wire, translated, mock]})
    headers = {"Content-Type": "application/json"}
    for body in (NESTED_HUGE, CONTENT_HUGE):
        for model in (b'"k"', b'"c"', b'"m"'):
            async with gw.post("/v1/chat/completions", data=body.replace(b'"m"', model, 1), headers=headers) as r:
                assert r.status < 500, (model, body, await r.text())
    # OpenAI wire: the gateway never reads these subtrees, so they reach the provider as written.
    # Claude's translation forwards the tool schema as written and drops what it does not know;
    # the OpenAI wire forwards all three of NESTED_HUGE and the content of CONTENT_HUGE.
    assert [b.count(b"1e400") for b in seen] == [1, 3, 1]
    # A translation that must read the content refuses it with a 400 before calling its provider.
    async with gw.post("/v1/chat/completions", data=CONTENT_HUGE.replace(b'"m"', b'"c"', 1), headers=headers) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    assert len(seen) == 3
