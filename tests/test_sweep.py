"""The run-wide sweep (tests/sweep.py) finds a planted piece of a key, and only that."""

from __future__ import annotations

from tests.sweep import pattern, scan_files

KEY = "sk-0123456789abcdef0123456789abcdef"


def test_a_piece_anywhere_is_found_the_last_four_are_not(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "usage.db").write_bytes(b"\x00record key=" + KEY[5:13].encode() + b"\x00")
    (tmp_path / "stdout.log").write_bytes(b'{"provider_key_last4": "' + KEY[-4:].encode() + b'"}')
    (tmp_path / "config.json").write_bytes(b'{"apiKey": "' + KEY.encode() + b'"}')  # an input: skipped
    (tmp_path / "data" / "state.json").write_bytes(KEY.encode())  # written by a gateway: searched
    leaks = scan_files(tmp_path, pattern(KEY))
    assert sorted(leaks) == [str(tmp_path / "data" / "state.json"), str(tmp_path / "data" / "usage.db")]


def test_every_eight_character_piece_is_looked_for():
    found = pattern(KEY)
    assert all(found.search(KEY[i:i + 8].encode()) for i in range(len(KEY) - 7))
    assert not found.search(KEY[:7].encode()) and not found.search(KEY[-7:].encode())
