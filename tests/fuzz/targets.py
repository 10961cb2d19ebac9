"""The code paths the fuzzers drive, shared by the hypothesis tests (PR tier) and the atheris
harness (extended tier). Each takes arbitrary bytes; the only exceptions allowed out are the
gateway's own 4xx errors (request path) or its error types (stream path)."""

from __future__ import annotations

from proxy import providers
from proxy.dialects import completions as decoding
from proxy.errors import ProxyError
from proxy.providers.base import Target

TARGET = Target("fuzz", "http://127.0.0.1:9/v1", "sk-fuzz-key", "2024-10-21", {})


def _unique_adapters() -> list:
    """One adapter per class: the OpenAI-wire family differ only in their base URL."""
    seen, out = set(), []
    for name in providers.names():
        adapter = providers.adapter(name)
        if not adapter.caps.in_process and type(adapter) not in seen:
            seen.add(type(adapter))
            out.append((name, adapter))
    return out


_ADAPTERS = _unique_adapters()


def _adapters():
    return _ADAPTERS


def request_path(body: bytes, kind: str = "chat") -> None:
    """Raw body → decode and check → the upstream request of every adapter."""
    try:
        request = decoding.parse(body, kind)
    except ProxyError as error:
        assert 400 <= error.status < 500, error
        return
    for name, adapter in _adapters():
        try:
            adapter.build_request(TARGET, request)
        except ProxyError as error:
            assert 400 <= error.status < 500, (name, error)


_STREAM_REQUEST = decoding.parse(b'{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}')


def stream_path(data: bytes, split: int = 0) -> None:
    """Upstream stream bytes, cut in two at `split`, through every adapter's stream parser."""
    split = split % (len(data) + 1)
    for _, adapter in _adapters():
        parser = adapter.stream_parser(_STREAM_REQUEST)
        try:
            parser.feed(data[:split])
            parser.feed(data[split:])
            parser.close()
        except ProxyError:
            pass


def one_input(data: bytes) -> None:
    """The fuzzers' entry: the first byte picks the path (chat, embeddings, stream), the rest is input.
    Corpus files (tests/fuzz/corpus/) are in this format."""
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 2:
        stream_path(rest[1:], rest[0] if rest else 0)
    else:
        request_path(rest, "chat" if mode == 0 else "embeddings")
