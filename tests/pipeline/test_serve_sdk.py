"""The official `openai` SDK gets the same answer through the gateway as from the provider directly."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import openai_provider

MESSAGES = [{"role": "user", "content": "Say hello"}]


def _summary_sync(client: openai.OpenAI, stream: bool):
    if not stream:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.model_dump()
    text, finish, usage = "", None, None
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


async def _summary_async(client: openai.AsyncOpenAI, stream: bool):
    if not stream:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.model_dump()
    text, finish, usage = "", None, None
    async for chunk in await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                            stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_sync_sdk_same_as_direct(gateway, fake_openai, stream):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    via = openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="caller-key", max_retries=0)
    direct = openai.OpenAI(base_url=fake_openai.url, api_key="provider-key", max_retries=0)
    through = await asyncio.to_thread(_summary_sync, via, stream)
    straight = await asyncio.to_thread(_summary_sync, direct, stream)
    assert through == straight
    assert through[0] == "Hello there, how can I help you today?" and through[1] == "stop"
    assert through[2]["completion_tokens"] == 10


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_async_sdk_same_as_direct(gateway, fake_openai, stream):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="k", max_retries=0) as via, \
            openai.AsyncOpenAI(base_url=fake_openai.url, api_key="k", max_retries=0) as direct:
        assert await _summary_async(via, stream) == await _summary_async(direct, stream)


async def test_sdk_sees_openai_shaped_errors(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="k", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as err:
            await client.chat.completions.create(model="nope", messages=MESSAGES)
        assert err.value.code == "model_not_found"
        models = await client.models.list()
        assert [m.id for m in models.data] == ["gpt-4o-mini"]


async def test_sdk_stream_truncation_raises_instead_of_ending_quietly(gateway, fake_openai):
    from tests.fakes.openai import Behaviour
    fake_openai.default = Behaviour(content=["x"] * 20, cut_after=5, end="fin")
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="k", max_retries=0) as client:
        with pytest.raises(openai.APIError):
            async for _ in await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
                pass
