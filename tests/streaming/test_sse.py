"""The SSE decoder (RELIABILITY R07): the same events however the bytes are split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.streaming.sse import Decoder, Framer


def decode(chunks):
    decoder = Decoder()
    blocks = []
    for chunk in chunks:
        blocks.extend(decoder.feed(chunk))
    return blocks, decoder.tail()


def events(blocks):
    return [(b.data, b.event, b.id) for b in blocks if b.data is not None]


def test_the_spec_examples():
    raw = (b"\xef\xbb\xbf: comment\r\ndata: first\r\ndata:second\r\n\r\nevent: add\rdata: {\"a\":1}\r\r"
           b"id: 7\ndata\n\ndata: x\nretry: 30\nunknown: y\n\n:only a comment\n\n")
    blocks, tail = decode([raw])
    assert events(blocks) == [(b"first\nsecond", None, None), (b'{"a":1}', b"add", None), (b"", None, b"7"),
                              (b"x", None, None)]
    assert blocks[3].retry == 30 and blocks[4].data is None
    assert b"".join(b.raw for b in blocks) + tail == raw


def test_unfinished_block_is_kept_as_tail():
    blocks, tail = decode([b"data: done\n\ndata: partial"])
    assert events(blocks) == [(b"done", None, None)] and tail == b"data: partial"


def test_utf8_split_inside_a_character_is_not_corrupted():
    text = "data: héllo ✓ 😀\n\n".encode()
    for i in range(len(text)):
        blocks, _ = decode([text[:i], text[i:]])
        assert events(blocks)[0][0].decode() == "héllo ✓ 😀"


_line_end = st.sampled_from([b"\n", b"\r\n", b"\r"])
_value = st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_field = st.one_of(
    st.tuples(st.sampled_from([b"data: ", b"data:", b"event: ", b"id: ", b"retry: ", b": ", b"x-unknown: "]), _value),
    st.tuples(st.just(b"data"), st.just(b"")),
    st.tuples(st.just(b"data: "), st.sampled_from([b"{not json", b"[DONE]", b'{"a":"\xc3\xa9"}'])),
)
_block = st.tuples(st.lists(st.tuples(_field, _line_end), max_size=4), _line_end)


def _render(blocks):
    out = b""
    for fields, end in blocks:
        for (name, value), line_end in fields:
            out += name + value + line_end
        out += end
    return out


@settings(max_examples=2000, deadline=None)
@given(st.lists(_block, max_size=6), st.data())
def test_r07_chunking_invariance(blocks, data):
    raw = _render(blocks)
    whole, whole_tail = decode([raw])
    # every single split point, and a random multi-way split
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    split, split_tail = decode(pieces)
    assert events(split) == events(whole)
    assert b"".join(b.raw for b in split) + split_tail == raw
    for i in range(len(raw) + 1):
        two, two_tail = decode([raw[:i], raw[i:]])
        assert events(two) == events(whole)
        assert b"".join(b.raw for b in two) + two_tail == raw


def test_byte_at_a_time():
    raw = b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"
    blocks, _ = decode([raw[i:i + 1] for i in range(len(raw))])
    assert events(blocks) == [(b"a", None, None), (b"b", None, None), (b"c", None, None)]


# Framer: the per-read front. Whatever the bytes and however they are cut, it yields the
# decoder's events and gives every byte back once, in order.

def frame(chunks):
    framer = Framer()
    regions, data = [], []
    for chunk in chunks:
        region = framer.feed(chunk)
        if region:
            regions.append(region)
            data += framer.events(region)
    return regions, data, framer


def _decoded_data(raw):
    blocks, _ = decode([raw])
    return [b.data for b in blocks if b.data is not None]


def _uniform(blocks, eol):
    return [([(field, eol) for field, _ in fields], eol) for fields, _ in blocks]


@settings(max_examples=1500, deadline=None)
@given(st.lists(_block, max_size=6), st.sampled_from([None, b"\n", b"\r\n"]), st.data())
def test_framer_gives_the_decoders_events_however_the_reads_are_cut(blocks, eol, data):
    raw = _render(_uniform(blocks, eol) if eol else blocks)
    expected = _decoded_data(raw)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    for chunks in (pieces, [raw], [raw[i:i + 1] for i in range(len(raw))]):
        regions, got, framer = frame(chunks)
        assert got == expected
        assert b"".join(regions) + framer.tail() == raw


def test_framer_takes_the_fast_path_for_lf_and_crlf_and_cuts_at_the_last_blank_line():
    for eol in (b"\n", b"\r\n"):
        framer = Framer()
        sep = eol + eol
        first = b"data: a" + sep + b"event: e" + eol + b"data: b" + sep + b"data: c"
        assert framer.feed(first) == b"data: a" + sep + b"event: e" + eol + b"data: b" + sep
        assert framer.fast and framer.eol == eol and framer.sep == sep and framer.tail() == b"data: c"
        assert framer.feed(sep) == b"data: c" + sep


def test_framer_hands_a_stream_to_the_decoder_at_the_first_line_ending_unlike_the_others():
    framer = Framer()
    assert framer.feed(b"data: a\n\ndata: b\r\r") == b"data: a\n\ndata: b\r\r"
    assert not framer.fast and framer.events(b"") == [b"a", b"b"]
    assert framer.feed(b"data: c\r\r") == b"data: c\r\r" and [b.data for b in framer.blocks()] == [b"c"]
    bom = Framer()
    assert bom.feed(b"\xef\xbb") == b"" and bom.feed(b"\xbfdata: x\n\n") == b"\xef\xbb\xbfdata: x\n\n"
    assert not bom.fast and [b.data for b in bom.blocks()] == [b"x"]
