"""The run-wide sweep (tests/sweep.py) finds every planted form of a key, and nothing else: not
random hex, uuids or base64, which its canary cannot be met in by chance."""

from __future__ import annotations

import base64
import os
import string
import urllib.parse

import pytest
import yaml

from proxy.pipeline.auth import digest
from tests.conftest import openai_provider
from tests.sweep import SEPARATORS, Needles, canary, pattern, scan_files

KEY = canary()
HEX = b"0123456789abcdef"
UUID = HEX + b"-"
B64 = (string.ascii_letters + string.digits + "+/=").encode()
B64URL = (string.ascii_letters + string.digits + "-_=").encode()


def test_a_piece_anywhere_is_found_the_last_four_are_not(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "usage.db").write_bytes(b"\x00record key=" + KEY[5:22].encode() + b"\x00")
    (tmp_path / "stdout.log").write_bytes(b'{"provider_key_last4": "' + KEY[-4:].encode() + b'"}')
    (tmp_path / "config.json").write_bytes(b'{"apiKey": "' + KEY.encode() + b'"}')  # an input: skipped
    (tmp_path / "data" / "state.json").write_bytes(KEY.encode())  # written by a gateway: searched
    leaks = scan_files(tmp_path, pattern(KEY))
    assert sorted(leaks) == [str(tmp_path / "data" / "state.json"), str(tmp_path / "data" / "usage.db")]


def _forms(key: str) -> dict[str, bytes]:
    raw = key.encode()
    quoted = urllib.parse.quote(key, safe="")
    forms = {"key": raw, "last 8": raw[-8:], "url": quoted.encode(), "url %7E": quoted.replace("~", "%7E").encode(),
             "query": urllib.parse.urlencode({"key": key}).encode()}
    for start in range(3, len(key) - 16):
        forms[f"17 from {start}"] = raw[start:start + 17]
    for prefix in (b"", b"u:", b"user:", b"Bearer "):  # every alignment of the key in the encoding
        forms[f"base64 {prefix!r}"] = base64.b64encode(prefix + raw)
        forms[f"base64url {prefix!r}"] = base64.urlsafe_b64encode(prefix + raw + b"-fake")
    return forms


@pytest.mark.parametrize("name", sorted(_forms(KEY)))
def test_every_form_of_a_leak_is_found_in_a_file(tmp_path, name):
    (tmp_path / "data").mkdir()
    leak = _forms(KEY)[name]
    (tmp_path / "data" / "spool.jsonl").write_bytes(b'{"x": "' + os.urandom(64).hex().encode() + leak + b'"}\n')
    (tmp_path / "clean.log").write_bytes(b"nothing here but " + KEY[-4:].encode() + KEY[-7:].encode())
    assert scan_files(tmp_path, pattern(KEY)) == [str(tmp_path / "data" / "spool.jsonl")]


def test_short_pieces_and_other_keys_are_not_leaks():
    found = pattern(KEY)
    assert not found.search(KEY[-7:].encode()) and not found.search(KEY[:12].encode())
    assert not found.search(canary().encode())  # another run's key


def _uuid_text(size: int) -> bytes:
    h = os.urandom(size // 2).hex()
    return "\n".join(f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
                     for i in range(0, len(h) - 31, 32)).encode()


def test_100_mb_of_random_hex_base64_and_uuids_never_match():
    """25 MB each. The old canary (any 8-character piece of `sk-` + 32 hex) expected ~0.6 chance
    matches in 100 MB of hex alone; this one cannot be formed by hex or uuids at all."""
    found = pattern(KEY)
    size = 25 * 1024 * 1024
    assert not found.search(os.urandom(size // 2).hex().encode())
    assert not found.search(_uuid_text(size))
    assert not found.search(base64.b64encode(os.urandom(size * 3 // 4)))
    assert not found.search(base64.urlsafe_b64encode(os.urandom(size * 3 // 4)))


@pytest.mark.parametrize("key", [KEY, *(canary() for _ in range(20))])
def test_the_chance_over_10_gb_is_below_1e_9(key):
    """What the sweep's docstring states, computed from the needles of each key."""
    needles = Needles(key)
    assert needles.chance(1e10) < 1e-9  # uniformly random bytes: the 8-character tail dominates
    assert needles.chance(1e10) - 1e10 * 256.0 ** -8 < 1e-13
    assert needles.chance(1e10, HEX) == needles.chance(1e10, HEX.upper()) == needles.chance(1e10, UUID) == 0
    assert needles.chance(1e10, B64) < 6e-18 and needles.chance(1e10, B64URL) < 6e-18
    assert all(n[:1] in b"~!%" for n in needles.marked)  # the regular expression's fast path
    assert min(map(len, needles.marked)) == 8 and key[-8:].encode() in needles.marked


def test_the_canary_is_a_valid_header_value_yaml_scalar_and_url_part():
    for key in [KEY, *(canary() for _ in range(50))]:
        assert len(key) == 52 and key.startswith("sk-") and key[-8] in SEPARATORS
        assert all(c in string.ascii_letters + string.digits + SEPARATORS + "-" for c in key)
        assert yaml.safe_load(f"apiKey: {key}") == {"apiKey": key}  # unquoted in a config file
        assert urllib.parse.unquote(urllib.parse.quote(key, safe="")) == key


async def test_the_canary_serves_as_a_caller_key_and_a_provider_key(gateway, fake_openai):
    caller, provider = canary(), canary()
    gw = await gateway({"auth": {"keys": [{"id": "team", "sha256": digest(caller)}]},
                        "providers": [{**openai_provider(fake_openai), "apiKey": provider}]})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with gw.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {caller}"}) as r:
        assert r.status == 200, await r.text()
    async with gw.post("/v1/chat/completions", json=body, headers={"X-API-Key": caller}) as r:
        assert r.status == 200
    assert [seen.headers["Authorization"] for seen in fake_openai.requests] == [f"Bearer {provider}"] * 2
