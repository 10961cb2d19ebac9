"""The Gemini adapter, sans-IO: URL and key, contents, generationConfig, tools, answers, streams, errors,
embeddings (with a few cases through a real gateway).

The wire-level contract (cassettes through a real gateway) is in test_contract.py.
"""

from __future__ import annotations

import base64
import struct

import aiohttp
import openai
import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers import gemini
from proxy.providers.base import Target
from tests.fakes.replay import all_cassettes, body_bytes, chat_request, load, translate_stream

ADAPTER = providers.adapter("GEMINI")
KEY = "AIzaSy-secret-gemini-key"
TARGET = Target("gemini", None, KEY)
STREAMS = [c for c in map(load, all_cassettes()) if c["provider"] in ("GEMINI", "VERTEXAIGEMINI")
           and c["response"].get("stream")]
USER = {"role": "user", "content": "Hi"}
CASSETTE = {c["name"]: c for c in map(load, all_cassettes())}


def upstream_for(model: str = "gemini-2.5-flash", target: Target = TARGET, **fields):
    return ADAPTER.build_request(target, parse(orjson.dumps({"model": model, "messages": [USER], **fields})))


def body_for(**fields) -> dict:
    return orjson.loads(upstream_for(**fields).body)


@pytest.mark.parametrize("model, segment", [
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("tuned/../../files", "tuned%2F..%2F..%2Ffiles"),
    ("..", ".."),
    ("a?key=x#y", "a%3Fkey%3Dx%23y"),
    ("with space", "with%20space"),
])
def test_the_model_is_one_quoted_path_segment_and_the_key_a_header(model, segment):
    plain, streamed = upstream_for(model), upstream_for(model, stream=True)
    root = "https://generativelanguage.googleapis.com/v1beta/models/"
    assert plain.url == f"{root}{segment}:generateContent"
    assert streamed.url == f"{root}{segment}:streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == KEY and "Authorization" not in plain.headers
    assert KEY not in plain.url and KEY not in streamed.url


def test_a_given_url_includes_the_version_path():
    upstream = upstream_for(target=Target("g", "https://gw.example/v1alpha/", KEY))
    assert upstream.url == "https://gw.example/v1alpha/models/gemini-2.5-flash:generateContent"


def test_generation_config_and_dropped_params():
    body = body_for(temperature=0.3, top_p=0.5, max_completion_tokens=7, n=3, seed=1, frequency_penalty=0.2,
                    stop=["a", "b"], logit_bias={"1": 1}, user="u", parallel_tool_calls=False, tags=["a:b"])
    assert body["generationConfig"] == {"temperature": 0.3, "topP": 0.5, "maxOutputTokens": 7, "candidateCount": 3,
                                        "seed": 1, "frequencyPenalty": 0.2, "stopSequences": ["a", "b"]}
    assert set(body) == {"contents", "generationConfig"}


def test_json_object_mode_sets_only_the_mime_type():
    assert body_for(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"}
    assert "generationConfig" not in body_for(response_format={"type": "text"})


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tool_choice(choice, config):
    body = body_for(tools=[{"type": "function", "function": {"name": "f", "description": "d"}}], tool_choice=choice)
    assert body["tools"] == [{"functionDeclarations": [{"name": "f", "description": "d"}]}]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_tool_results_are_named_after_their_calls_or_refused():
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                 "function": {"name": "lookup", "arguments": ""}}]}
    body = body_for(messages=[USER, call, {"role": "tool", "tool_call_id": "c1", "content": "[1, 2]"}])
    assert body["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}},
                                                                "thoughtSignature": gemini.SKIP_SIGNATURE}]}
    assert body["contents"][2]["parts"] == [{"functionResponse": {"name": "lookup",
                                                                  "response": {"content": "[1, 2]"}}}]
    with pytest.raises(InvalidRequest) as caught:
        body_for(messages=[USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}])
    assert caught.value.param == "messages[1].tool_call_id"


def test_thought_signatures_ride_in_extra_content_both_ways():
    answer = orjson.loads(ADAPTER.parse_response(chat_request(CASSETTE["gemini/tools"]),
                                                 body_bytes(CASSETTE["gemini/tools"])).body)
    first, second = answer["choices"][0]["message"]["tool_calls"]
    signature = first["extra_content"]["google"]["thought_signature"]
    assert signature.startswith("Cik") and "extra_content" not in second
    streamed, _ = translate_stream(CASSETTE["gemini/tools_stream"], [body_bytes(CASSETTE["gemini/tools_stream"])])
    heads = [d["tool_calls"][0] for e in streamed if e != "[DONE]" and e["choices"]
             for d in [e["choices"][0]["delta"]] if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert heads[0]["extra_content"] == first["extra_content"] and "extra_content" not in heads[1]
    call = {"role": "assistant", "tool_calls": [{**first, "function": {"name": "get_weather", "arguments": "{}"}},
                                                second]}
    echoed = body_for(messages=[USER, call])["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in echoed] == [signature, None]
    del call["tool_calls"][0]["extra_content"]
    rebuilt = body_for(messages=[USER, call])["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in rebuilt] == [gemini.SKIP_SIGNATURE, None]


@pytest.mark.parametrize("fields", [{"logprobs": True}, {"tool_choice": "maybe", "tools": [
    {"type": "function", "function": {"name": "f"}}]}, {"messages": [{"role": "function", "name": "f", "content": ""}]}])
def test_what_cannot_be_honoured_is_refused(fields):
    with pytest.raises(InvalidRequest):
        body_for(**fields)


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller-key", max_retries=0)



async def test_the_sdk_gets_base64_vectors_and_a_tagged_estimated_record(gateway, replay):
    cassette = CASSETTE["gemini/embeddings"]
    replay.load(cassette)
    gw = await gateway({"providers": [replay.provider(cassette)]})
    request = {**cassette["openai"], "encoding_format": "base64"}  # asked for: the SDK leaves the strings as sent
    async with sdk(gw) as client:
        answer = await client.embeddings.create(model=cassette["model"], **request,
                                                extra_body={"tags": ["team:search"]}, extra_headers={"X-Tags": "app:rag"})
    assert replay.mismatches == [] and replay.calls == 1
    assert [base64.b64decode(d.embedding) for d in answer.data] == [
        struct.pack("<4f", *vector) for vector in cassette["expect"]["embeddings"]]
    assert (answer.model, answer.usage.prompt_tokens, answer.usage.total_tokens) == (cassette["model"], 10, 10)
    (record,) = await gw.records()
    assert (record.status, record.provider_type, record.model_served) == ("completed", "GEMINI", cassette["model"])
    assert record.tags == ["team:search", "app:rag"] and record.tokens_estimated
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (10, 0, 10)


async def test_a_token_array_input_is_a_400_before_any_call(gateway, replay):
    cassette = CASSETTE["gemini/embeddings"]
    replay.load(cassette)
    gw = await gateway({"providers": [replay.provider(cassette)]})
    async with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.embeddings.create(model=cassette["model"], input=[[9906, 1917]], encoding_format="float")
    assert caught.value.body["param"] == "input" and "token arrays" in caught.value.body["message"]
    assert replay.calls == 0
    (record,) = await gw.records()
    assert record.status == "rejected" and record.error_type == "invalid_request"


async def test_an_embeddings_model_also_listed_on_a_chat_only_provider_goes_to_gemini(gateway, replay, replay2):
    cassette = CASSETTE["gemini/embeddings"]
    replay.load(cassette)
    replay2.load(cassette)
    chat_only = {"name": "chat-only", "supportedProvider": "ANTHROPIC", "url": replay2.root, "apiKey": "sk-ant-test",
                 "models": [cassette["model"]], "isHosted": True}  # hosted: ranked first, were it a candidate
    gw = await gateway({"providers": [chat_only, {**replay.provider(cassette), "isHosted": False}]})
    async with sdk(gw) as client:
        answer = await client.embeddings.create(model=cassette["model"], **cassette["openai"])
    assert len(answer.data) == 2 and (replay.calls, replay2.calls) == (1, 0) and replay.mismatches == []


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"])
def test_filtered_answers_finish_with_content_filter(reason):
    assert gemini.finish_of(reason, False) == "content_filter"


def test_other_finish_reasons():
    assert [gemini.finish_of(r, False) for r in ("STOP", "MAX_TOKENS", "OTHER", None)] == ["stop", "length", "stop",
                                                                                             "stop"]
    assert gemini.finish_of("STOP", True) == "tool_calls"


def test_thoughts_are_left_out_and_counted_as_reasoning():
    body = orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think", "thought": True}, {"text": "42"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                          "toolUsePromptTokenCount": 4, "cachedContentTokenCount": 6, "totalTokenCount": 46}})
    parsed = ADAPTER.parse_response(parse(orjson.dumps({"model": "gemini-x", "messages": [USER]})), body)
    answer = orjson.loads(parsed.body)
    assert answer["choices"][0]["message"]["content"] == "42" and answer["model"] == "gemini-x"
    usage = parsed.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
            usage.reasoning_tokens) == (14, 32, 46, 6, 30)


def test_a_blocked_prompt_is_a_400_naming_the_reason():
    cassette = CASSETTE["gemini/blocked"]
    with pytest.raises(InvalidRequest) as caught:
        ADAPTER.parse_response(chat_request(cassette), body_bytes(cassette))
    assert caught.value.status == 400 and caught.value.code == "content_filter" and "SAFETY" in caught.value.message


@pytest.mark.parametrize("status, body, kind, retry_after", [
    (400, {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                     "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}},
     "auth", None),
    (400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}, "client", None),
    (403, {"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}}, "auth", None),
    (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "23s"}]}}, "rate_limit", 23.0),
    (503, [{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}], "overloaded", None),
    (504, {"error": {"code": 504, "message": "Deadline expired", "status": "DEADLINE_EXCEEDED"}}, "timeout", None),
    (500, {"error": {"code": 500, "message": "oops", "status": "INTERNAL"}}, "server", None),
    (404, {"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}, "not_found", None),
])
def test_errors_are_classified_by_status_and_structured_fields(status, body, kind, retry_after):
    failure = ADAPTER.parse_error(status, {}, orjson.dumps(body))
    assert (failure.status, failure.kind, failure.retry_after) == (status, kind, retry_after)
    assert failure.message and failure.code == failure.code.lower()


def test_a_retry_after_header_wins_and_a_non_json_body_is_not_reflected():
    failure = ADAPTER.parse_error(500, {"Retry-After": "3"}, b"<html>internal secret</html>")
    assert failure.kind == "server" and failure.retry_after == 3.0 and "secret" not in failure.message


@pytest.mark.parametrize("cassette", STREAMS, ids=lambda c: c["name"])
def test_every_byte_boundary_gives_the_same_stream(cassette):
    data = body_bytes(cassette)
    whole, parser = translate_stream(cassette, [data])
    split, _ = translate_stream(cassette, [data[i:i + 1] for i in range(len(data))])
    assert split == whole and parser.events == data.count(b"data: ")
    if cassette["expect"]["status"] == 200 and "stream_error" not in cassette["expect"]:
        assert whole[-1] == "[DONE]" and parser.done and parser.finished and parser.usage is not None
        assert len({e["id"] for e in whole if e != "[DONE]"}) == 1
    else:
        assert "error" in whole[-1] and parser.error is not None and not parser.done


def test_line_feeds_serve_as_well_as_crlf():
    cassette = CASSETTE["gemini/text_stream"]
    crlf, _ = translate_stream(cassette, [body_bytes(cassette)])
    lf, _ = translate_stream(cassette, [body_bytes(cassette).replace(b"\r\n", b"\n")])
    assert lf == crlf


def test_a_stream_cut_before_its_finish_reason_is_not_complete():
    cassette = CASSETTE["gemini/text_stream"]
    first_event = body_bytes(cassette).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    parser = ADAPTER.stream_parser(chat_request(cassette))
    parser.feed(first_event)
    assert parser.close() == b"" and not parser.done and not parser.finished and parser.usage is None


def test_a_blocked_stream_fails_on_its_first_event():
    cassette = CASSETTE["gemini/blocked_stream"]
    parser = ADAPTER.stream_parser(chat_request(cassette))
    parser.feed(body_bytes(cassette))
    assert parser.events == 1 and parser.error.kind == "client" and parser.error.code == "content_filter"


@pytest.mark.parametrize("name", ["gemini/blocked", "gemini/blocked_stream"])
async def test_a_blocked_prompt_is_not_retried_on_the_next_provider(gateway, replay, replay2, name):
    cassette = CASSETTE[name]
    replay.load(cassette)
    replay2.load(CASSETTE["gemini/text_stream" if cassette["openai"].get("stream") else "gemini/text"])
    second = {**replay2.provider(cassette, "second"), "isHosted": False}
    gw = await gateway({"providers": [replay.provider(cassette, "first"), second],
                        "security": {"allowPrivateUpstreams": True}})
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/v1/chat/completions",
                                json={"model": cassette["model"], **cassette["openai"]}) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
    assert error["code"] == "content_filter" and "SAFETY" in error["message"]
    assert (replay.calls, replay2.calls) == (1, 0)
    (record,) = await gw.records()
    assert record.attempts == 1 and record.status == "rejected"
