"""The wires the bench speaks to a target: OpenAI chat, and the two dialects the gateway translates.

The gateway also serves the Responses API (`/openai/v1/responses`) and the Messages API
(`/anthropic/v1/messages`); the bench's provider speaks only OpenAI chat, so each request is
translated to chat on the way up and each answer (and stream event) back on the way down. A
`Wire` is one of these: its URL on a target, a request body in its shape, its headers, and how
its stream is counted — one content event per `marker`, the stream whole once `done` was seen.

The dialect scenarios (`DIALECT_SCENARIOS`) run against the gateway only: the mock and the bare
passthrough speak only the chat wire, and a `--target` is an OpenAI chat base URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.client import Endpoint

SYSTEM = "You are a concise assistant."
PROMPT = "Say hello to the benchmark in one short sentence."
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Wire:
    name: str
    marker: bytes  # one content event of a stream
    done: bytes  # seen once a stream ended whole; never longer than `marker` (see count_events)
    done_is_event: bool  # chat's `data: [DONE]` also matches `data: `: it is taken off the count

    def path(self, base: str) -> str:
        """The endpoint under a target's OpenAI base URL (`…/openai/v1` on the gateway)."""
        if self.name == "messages":
            return base.removesuffix("/openai/v1") + "/anthropic/v1/messages"
        return base + ("/responses" if self.name == "responses" else "/chat/completions")

    def body(self, model: str, stream: bool) -> bytes:
        if self.name == "responses":
            shape = {"model": model, "stream": stream, "instructions": SYSTEM, "max_output_tokens": 128,
                     "input": [{"role": "user", "content": PROMPT}]}
        elif self.name == "messages":
            shape = {"model": model, "stream": stream, "max_tokens": 128, "system": SYSTEM,
                     "messages": [{"role": "user", "content": PROMPT}]}
        else:
            shape = {"model": model, "stream": stream, "temperature": 0.2, "max_tokens": 128,
                     "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]}
        return json.dumps(shape, separators=(",", ":")).encode()

    def headers(self, key: str) -> dict[str, str]:
        if self.name == "messages":  # as an Anthropic SDK sends them
            return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, "X-Tags": "team:bench"}
        return {"Authorization": f"Bearer {key}", "X-Tags": "team:bench"}

    def request(self, base: str, key: str, model: str, stream: bool) -> bytes:
        return Endpoint(self.path(base)).request(self.body(model, stream), self.headers(key))


CHAT = Wire("chat", b"data: ", b"[DONE]", True)
RESPONSES = Wire("responses", b"event: response.output_text.delta\n", b"event: response.completed\n", False)
MESSAGES = Wire("messages", b"event: content_block_delta\n", b"event: message_stop\n", False)

# name -> (wire, the chat scenario it mirrors and is compared with)
DIALECT_SCENARIOS = {
    "r32": (RESPONSES, "c32"), "m32": (MESSAGES, "c32"),
    "rs32": (RESPONSES, "s32"), "ms32": (MESSAGES, "s32"),
    "rb32": (RESPONSES, "b32"), "mb32": (MESSAGES, "b32"),
}
SPEAKS_DIALECTS = ("gateway",)  # the built-in targets that serve these endpoints
SKIP_REASON = "speaks only the OpenAI chat wire"

# Content events per bench stream: the mock's 100 chunks are a role chunk with empty content, 98
# "tok " deltas and a finish chunk; an empty delta is no content event in either dialect.
CONTENT_EVENTS = 98


def count_events(wire: Wire, tail: bytes, data: bytes) -> tuple[int, bool, bytes]:
    """Content events in `data` (one read), whether the stream's end is in it, and the new tail.

    `tail` is the end of the previous read, one byte shorter than the marker: a marker split
    across two reads is counted once, and a tail can never hold a whole one to count twice. A
    `done` shorter than the marker may show again in the next read's tail (harmless: "seen" stays
    seen); chat's, taken off the count, is as long as its marker, so it is seen in one read only.
    """
    joined = tail + data
    count = joined.count(wire.marker)
    done = wire.done in joined
    if done and wire.done_is_event:
        count -= 1
    return count, done, joined[1 - len(wire.marker):]
