"""A fake upstream that replays one cassette: recorded wire data, served over real loopback HTTP.

A cassette (tests/cassettes/<provider>/<scenario>.json) holds the caller's OpenAI request, the
request the gateway must send upstream (method, path with query, key headers, JSON body), the
provider's answer (status, headers, the body as the chunks it arrived in) and what the caller
must get back. The fake checks every incoming request against the cassette and keeps the
differences in `mismatches`; it answers with the recorded chunks, or the same bytes re-cut at
random boundaries (seeded), so the translation must not depend on where reads end.

    replay.load(cassette, chunking="random", seed=7)
"""

from __future__ import annotations

import json
import pathlib
import random

import orjson
from aiohttp import web

from proxy import providers
from proxy.dialects import completions as decoding
from proxy.streaming.sse import Decoder
from tests.fakes import eventstream

CASSETTES = pathlib.Path(__file__).resolve().parent.parent / "cassettes"


def load(path: pathlib.Path | str) -> dict:
    cassette = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    cassette["name"] = f"{pathlib.Path(path).parent.name}/{pathlib.Path(path).stem}"
    frames = cassette["response"].get("frames")
    if frames is not None:  # a binary stream (AWS eventstream): encoded here, whole, as one chunk
        cassette["response"]["raw"] = eventstream.encode(frames)
    return cassette


def all_cassettes() -> list[pathlib.Path]:
    return sorted(CASSETTES.glob("*/*.json"))


def body_bytes(cassette: dict) -> bytes:
    if "raw" in cassette["response"]:
        return cassette["response"]["raw"]
    return "".join(cassette["response"]["chunks"]).encode()


def rechunk(data: bytes, seed: int, largest: int = 24) -> list[bytes]:
    """The same bytes cut at random places: inside lines, CRLFs and UTF-8 sequences too."""
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(data):
        size = rng.randint(1, largest)
        out.append(data[at:at + size])
        at += size
    return out


def chat_request(cassette: dict):
    """The caller's request of a cassette (chat, or its `endpoint`), decoded as the gateway decodes it."""
    return decoding.parse(orjson.dumps({"model": cassette["model"], **cassette["openai"]}),
                          cassette.get("endpoint", "chat"))


def translate_stream(cassette: dict, pieces: list[bytes]) -> tuple[list, object]:
    """Feed a stream cassette's answer to its adapter's parser, sans-IO, in the given pieces:
    the OpenAI events it wrote (JSON, without the `created` time; `[DONE]` as is) and the parser."""
    parser = providers.adapter(cassette["provider"]).stream_parser(chat_request(cassette))
    out = b"".join(parser.feed(piece) for piece in pieces) + parser.close()
    events = []
    for block in Decoder().feed(out):
        if block.data == b"[DONE]":
            events.append("[DONE]")
            continue
        event = orjson.loads(block.data)
        event.pop("created", None)
        events.append(event)
    return events, parser


def differences(expected: dict, method: str, path: str, headers, body: bytes) -> list[str]:
    """How an incoming request differs from the one the cassette expects (empty when it matches)."""
    found = []
    if method != expected.get("method", "POST"):
        found.append(f"method {method} != {expected.get('method', 'POST')}")
    if path != expected["path"]:
        found.append(f"path {path!r} != {expected['path']!r}")
    for name, value in expected.get("headers", {}).items():
        if headers.get(name) != value:
            found.append(f"header {name}: {headers.get(name)!r} != {value!r}")
    for name in expected.get("absent_headers", ()):
        if name in headers:
            found.append(f"header {name} must not be sent")
    try:
        got = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [*found, f"the body is not JSON: {body[:80]!r}"]
    if got != expected["body"]:
        found.append(f"body {orjson.dumps(got).decode()} != {orjson.dumps(expected['body']).decode()}")
    return found


class Replay:
    def __init__(self) -> None:
        self.cassette: dict | None = None
        self.chunking = "recorded"
        self.seed = 0
        self.mismatches: list[str] = []
        self.calls = 0
        self.check = True  # compare each request with the cassette's (off: the caller spoke another dialect)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._serve)
        self.root = ""

    def provider(self, cassette: dict, name: str = "upstream") -> dict:
        """The registration item that points the cassette's provider type at this fake."""
        item = {"name": name, "supportedProvider": cassette["provider"], "url": self.root + cassette["base"],
                "apiKey": cassette["apiKey"], "models": [cassette["model"]], "isHosted": True}
        for field in ("apiVersion", "region"):
            if field in cassette:
                item[field] = cassette[field]
        return item

    async def start(self, aiohttp_server) -> Replay:
        self.server = await aiohttp_server(self.app)
        self.root = f"http://127.0.0.1:{self.server.port}"
        return self

    def load(self, cassette: dict, *, chunking: str = "recorded", seed: int = 0) -> None:
        self.cassette, self.chunking, self.seed = cassette, chunking, seed

    def chunks(self) -> list[bytes]:
        if "raw" in self.cassette["response"]:
            recorded = [self.cassette["response"]["raw"]]
        else:
            recorded = [c.encode() for c in self.cassette["response"]["chunks"]]
        return recorded if self.chunking == "recorded" else rechunk(b"".join(recorded), self.seed)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.read()
        found = differences(self.cassette["upstream"], request.method, request.raw_path, request.headers, body) \
            if self.check else []
        if found:
            self.mismatches += found
            return web.Response(status=418, text="\n".join(found))
        answer = self.cassette["response"]
        headers = answer.get("headers", {})
        if not answer.get("stream"):
            return web.Response(status=answer["status"], body=b"".join(self.chunks()), headers=headers)
        out = web.StreamResponse(status=answer["status"], headers=headers)
        await out.prepare(request)
        for chunk in self.chunks():
            await out.write(chunk)
        await out.write_eof()
        return out
