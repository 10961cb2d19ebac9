"""The seam every dialect uses: the stream between the adapter's parser and the relay, and the
route filter for what a translation cannot carry."""

from __future__ import annotations

import orjson
import pytest

from proxy.dialects.base import Context, DialectStream, adopt_stream, answer, fit
from proxy.errors import InvalidRequest, UpstreamError
from proxy.providers.base import Capabilities, Native
from proxy.providers.openai import PassthroughParser
from tests.fakes.openai import Behaviour, stream_events
from tests.fakes.replay import rechunk


class Recorder:
    """A dialect's stream translator that writes down what it is given."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def feed(self, chunk) -> bytes:
        text = "".join(c.delta.content or "" for c in chunk.choices if c.delta)
        self.seen.append(text)
        return f"[{text}]".encode()

    def close(self, error) -> bytes:
        self.seen.append(f"close:{error and error.message}")
        return b"<end>" if error is None else b"<error>"


def upstream_bytes(**behaviour) -> bytes:
    return b"".join(stream_events("m", Behaviour(**behaviour), include_usage=True))


@pytest.mark.parametrize("seed", range(5))
def test_chat_chunks_reach_the_translator_decoded_whatever_the_read_boundaries(seed):
    recorder = Recorder()
    stream = DialectStream(PassthroughParser(drop_usage_chunk=False), recorder, False, {})
    out = b"".join(stream.feed(piece) for piece in rechunk(upstream_bytes(content=["a", "b"]), seed))
    out += stream.close()
    assert out == b"[][a][b][][]<end>"  # role chunk, two texts, the finish, the usage chunk; [DONE] ends it
    assert recorder.seen[-1] == "close:None" and stream.ended
    assert stream.usage.completion_tokens == 10 and stream.done  # the adapter parser's reading, unchanged


def test_an_error_event_is_the_dialects_error_frame_once():
    recorder = Recorder()
    stream = DialectStream(PassthroughParser(drop_usage_chunk=False), recorder, False, {})
    stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n')
    assert stream.feed(b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n') == b"<error>"
    assert recorder.seen[-1] == "close:overloaded"
    assert stream.error_frame(UpstreamError("cut short")) == b""  # the relay's own ending adds nothing more


def test_a_stream_cut_short_is_left_to_the_relay_to_end():
    recorder = Recorder()
    stream = DialectStream(PassthroughParser(drop_usage_chunk=False), recorder, False, {})
    stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n')
    assert stream.close() == b""  # neither finished nor done: no closing frames
    assert stream.error_frame(UpstreamError("the provider's stream broke off")) == b"<error>"


def test_passthrough_relays_the_adapters_bytes_untouched():
    raw = upstream_bytes(content=["a"])
    stream = DialectStream(PassthroughParser(drop_usage_chunk=False), Recorder(), True, {"request-id": "r"})
    assert stream.feed(raw) == raw and stream.close() == b""
    assert stream.error_frame(UpstreamError("x")) == b"<error>"


class _Adapter:
    def __init__(self, **caps) -> None:
        self.caps = Capabilities(**caps)


class _Provider:
    def __init__(self, **caps) -> None:
        self.adapter = _Adapter(**caps)


class _Route:
    def __init__(self, model: str = "o3-mini", **caps) -> None:
        self.model = model
        self.provider = _Provider(**caps)


class _Request:
    def __init__(self, fields: dict) -> None:
        self.fields = fields
        self.native = Native("messages", {})


def test_fit_keeps_only_native_routes_for_a_refused_translation_or_raises_it():
    native, translated = _Route(dialects=frozenset({"messages"})), _Route()
    context = Context()
    context.refusal = InvalidRequest("server tool", param="tools[0]")
    assert fit(_Request({}), context, [translated, native]) == [native]
    with pytest.raises(InvalidRequest) as err:
        fit(_Request({}), context, [translated])
    assert err.value.param == "tools[0]"
    assert fit(_Request({}), Context(), [translated]) == [translated]


@pytest.mark.parametrize(("routes", "kept"), [
    ([{"reasoning": True}], True), ([{"dialects": frozenset({"messages"})}], True),
    ([{"reasoning": True}, {}], False),
    ([{"reasoning": True, "model": "gpt-4o"}], False),  # not a reasoning model: it would answer a 400
    ([{"reasoning": True, "model": "my-deployment"}], False),  # unknown to the catalog: not risked
    ([{"reasoning": True, "model": "o1"}, {"reasoning": True, "model": "o4-mini"}], True),
    ([{"dialects": frozenset({"messages"}), "model": "gpt-4o"}], True)])  # passed through as the caller sent it
def test_fit_drops_reasoning_effort_unless_every_route_takes_it(routes, kept):
    context = Context()
    context.reasoning = True
    request = _Request({"reasoning_effort": b'"low"'})
    fit(request, context, [_Route(**caps) for caps in routes])
    assert ("reasoning_effort" in request.fields) == kept


class _Opened:
    def __init__(self, route, parser=None, first=b"", parsed=None) -> None:
        self.route, self.parser, self.first, self.parsed = route, parser, first, parsed


class _Dialect:
    name, id_header = "messages", "request-id"

    def answer(self, body, context):
        return b"translated:" + body

    def stream(self, context):
        return Recorder()


def test_answer_and_adopt_stream_translate_only_for_routes_that_do_not_speak_the_dialect():
    class Parsed:
        body = b"{}"

    request = _Request({})
    native, translated = _Route(dialects=frozenset({"messages"})), _Route()
    assert answer(_Opened(native, parsed=Parsed), request, _Dialect(), Context()) == b"{}"
    assert answer(_Opened(translated, parsed=Parsed), request, _Dialect(), Context()) == b"translated:{}"
    first = b'data: ' + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "hi"}}]}) + b"\n\n"
    for route, expected in ((native, first), (translated, b"[hi]")):
        opened = _Opened(route, PassthroughParser(drop_usage_chunk=False), first)
        adopt_stream(opened, request, _Dialect(), Context(), "id-1")
        assert isinstance(opened.parser, DialectStream) and opened.first == expected
        assert opened.parser.headers == {"request-id": "id-1"}


class _Tap:
    """A dialect's real translator, with the chunks it is fed written down."""

    def __init__(self, translator) -> None:
        self.translator, self.chunks = translator, []

    def feed(self, chunk) -> bytes:
        self.chunks.append(chunk)
        return self.translator.feed(chunk)

    def close(self, error) -> bytes:
        return self.translator.close(error)


_CALL = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":'}}]}
_MORE = {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}


@pytest.mark.parametrize("dialect", ["messages", "responses"])
def test_a_translated_stream_over_the_openai_adapters_per_read_parser_gets_every_chunk_decoded(dialect):
    """The OpenAI-wire stream parser works per read (it decodes only a read's last finish, usage
    or error event); a translated dialect still needs every chunk decoded, which DialectStream
    does from the chat bytes the parser relays. The same chunks, one event per read with LF or
    the whole stream in one read with CRLF."""
    from proxy import providers
    from proxy.dialects import messages, responses

    module = {"messages": messages, "responses": responses}[dialect]
    body = {"model": "m", "stream": True, **({"max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
                                              if dialect == "messages" else {"input": "Hi"})}
    events = stream_events("m", Behaviour(deltas=[{"content": "Sun"}, {"content": "ny"}, _CALL, _MORE],
                                          finish="tool_calls"), include_usage=True)
    adapter = providers.adapter("OPENAI_COMPATIBLE")  # OpenAI's wire, speaking neither dialect: translated
    seen, outs = [], []
    for reads in (events, [b"".join(events).replace(b"\n", b"\r\n")]):
        request, context = module.DIALECT.request(orjson.dumps(body), {})
        assert request.native is not None and not providers.base.speaks(adapter.caps, request)
        parser = adapter.stream_parser(request)
        tap = _Tap(module.DIALECT.stream(context))
        stream = DialectStream(parser, tap, False, {})
        outs.append(b"".join(stream.feed(read) for read in reads) + stream.close())
        seen.append(tap.chunks)
        assert stream.ended and stream.done and stream.usage.completion_tokens == 10
    assert len(seen[0]) == len(events) - 1 and seen[0] == seen[1]  # every chat chunk but [DONE], decoded
    for out in outs:
        assert b"Sun" in out and b"ny" in out and b"get_weather" in out and b'\\"Paris\\"' in out
