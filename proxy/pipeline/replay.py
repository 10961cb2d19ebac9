"""A chat completion in both of OpenAI's shapes, for the response cache.

`to_chunks` turns a completion (the non-stream answer) into the SSE stream OpenAI would have
sent: a role chunk, the content, refusal and tool calls, the finish reason, the usage chunk
when asked, `[DONE]`. `assemble` does the reverse for a stream that was relayed, so one cache
entry serves both kinds of request.
"""

from __future__ import annotations

import orjson

from proxy.providers.base import Usage
from proxy.streaming.sse import Decoder

DONE = b"data: [DONE]\n\n"


def usage_json(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def _sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(base: dict, index: int, delta: dict, finish: str | None = None) -> bytes:
    return _sse({**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]})


def to_chunks(body: bytes, include_usage: bool) -> bytes:
    """The SSE bytes of a stream that carries exactly this completion."""
    completion = orjson.loads(body)
    base = {"id": completion.get("id") or "chatcmpl-cached", "object": "chat.completion.chunk",
            "created": completion.get("created") or 0, "model": completion.get("model"),
            "system_fingerprint": completion.get("system_fingerprint")}
    out = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        out.append(_chunk(base, index, {"role": message.get("role") or "assistant", "content": ""}))
        for field in ("content", "refusal"):
            if message.get(field):
                out.append(_chunk(base, index, {field: message[field]}))
        calls = message.get("tool_calls")
        if calls:
            out.append(_chunk(base, index, {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}))
        out.append(_chunk(base, index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and completion.get("usage") is not None:
        out.append(_sse({**base, "choices": [], "usage": completion["usage"]}))
    out.append(DONE)
    return b"".join(out)


def _merge_calls(message: dict, calls: list[dict]) -> None:
    slots = message.setdefault("tool_calls", [])
    for call in calls:
        i = call.get("index", len(slots))
        while len(slots) <= i:
            slots.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        slot = slots[i]
        slot["id"] = call.get("id") or slot["id"]
        slot["type"] = call.get("type") or slot["type"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""


def _merge(choices: dict[int, dict], choice: dict) -> None:
    index = choice.get("index", 0)
    found = choices.get(index)
    if found is None:
        found = choices[index] = {"index": index, "message": {"role": "assistant", "content": None},
                                  "logprobs": None, "finish_reason": None}
    delta, message = choice.get("delta") or {}, found["message"]
    if delta.get("role"):
        message["role"] = delta["role"]
    for field in ("content", "refusal"):
        if delta.get(field):
            message[field] = (message.get(field) or "") + delta[field]
    if delta.get("tool_calls"):
        _merge_calls(message, delta["tool_calls"])
    if choice.get("finish_reason"):
        found["finish_reason"] = choice["finish_reason"]


def assemble(sse: bytes, usage: Usage | None) -> bytes | None:
    """The completion a relayed stream carried; None when it was not complete or not readable."""
    head, reported, choices = None, None, {}
    try:
        for block in Decoder().feed(sse):
            if block.data is None or block.data == b"[DONE]":
                continue
            chunk = orjson.loads(block.data)
            if not isinstance(chunk, dict) or "error" in chunk:
                return None
            head = head or chunk
            reported = chunk.get("usage") or reported
            for choice in chunk.get("choices") or ():
                _merge(choices, choice)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    if head is None or not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None
    return orjson.dumps({
        "id": head.get("id"), "object": "chat.completion", "created": head.get("created"), "model": head.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
        "usage": reported or (usage_json(usage) if usage is not None else None),
        "system_fingerprint": head.get("system_fingerprint")})
