"""The session-wide secret sweep (RELIABILITY R30), over the whole test run.

Every `openai_provider` in the suite carries `tests.conftest.PROVIDER_KEY`, a `canary()` made
per run. After each test its captured output (logs, stdout, stderr) is searched, and at the end
of the run every file the run left under pytest's temporary directory (data directories, spools,
usage stores, dead-letter files, the logs of gateways run as processes). Config files the tests
wrote themselves (`.json`, `.yaml` outside a `data` directory) are inputs and are skipped;
everything a gateway writes lives in its data directory or is a log, and is searched.

What counts as a leak (`Needles`): the key or any 17 of its characters in a row after its `sk-`,
its last 8 characters (a mask that shows 8 where 4 are allowed), its URL-encoded forms (`%21` for `!`,
`~` kept or written `%7E`) and its base64 forms (standard and URL-safe, at any alignment, any
run of 23 or more base64 characters that only the key's bytes determine). The last 4 characters
alone are allowed: the gateway shows them.

Why this shape. The old canary, `sk-` + 32 random hex characters searched for any 8-character
piece, met itself by chance: a 65 MB usage store of random hex ids (a few million 8-character
windows, each 25 × 16^-8 likely to be a piece) failed a few runs in a hundred. Now every raw and URL-encoded needle starts
with `~`, `!` or `%`, characters that hex, uuids, base64 and base64url never produce, and the
key is drawn again until each base64 needle holds a character that hex and uuids never produce.
The chance that N scanned bytes hold a needle by chance is at most the sum over needles of
N × m^-len, m the size of the alphabet the bytes are drawn from, counting only needles whose
characters all lie in it (`Needles.chance`; tests/test_sweep.py computes and checks it). For a
run that scans 10 GB (a whole run scans a few hundred MB):

- random hex or uuid text: 0 (no needle can be formed);
- random base64 or base64url text: below 6e-18 (only the base64 needles can be formed, at most
  48 of 16 characters: 48 × 1e10 × 64^-16);
- uniformly random bytes: ≈ 5.4e-10, nearly all of it the 8-character tail
  (1e10 × 256^-8 = 5.4e-10; the 10- and 12-character needles add about 1e-14).

Each is below 1e-9. Searching is one regular expression whose every branch starts with one of
three characters (the engine skips other positions in C) plus a few substring searches.
"""

from __future__ import annotations

import base64
import functools
import pathlib
import re
import secrets
import string
import urllib.parse

import pytest

_INPUT_SUFFIXES = {".json", ".yaml", ".yml"}
_MAX_FILE = 64 * 1024 * 1024
_found: list[tuple[str, str]] = []
_scanned = {"sections": 0, "files": 0, "bytes": 0}

SEPARATORS = "~!"  # valid in header values, JSON, YAML and URLs; never in hex, uuids or base64
_ALNUM = string.ascii_letters + string.digits
_HEX_UUID = frozenset(b"0123456789abcdefABCDEF-")
PIECE = 12  # a raw or URL-encoded needle: from a `~`, `!` or `%` on, 12 characters…
TAIL = 8  # …or fewer at the end of the key, down to its last 8 characters
B64_PIECE, B64_STRIDE = 16, 8  # base64 needles: 16 characters every 8


def canary() -> str:
    """`sk-`, 5 letters or digits, then 6 × (separator + 5), then a separator and 7: 52 characters
    (~232 random bits) in which every separator starts a needle and the last 8 start with one."""
    while True:
        groups = ["".join(secrets.choice(_ALNUM) for _ in range(size)) for size in (5,) * 7 + (7,)]
        key = "sk-" + groups[0] + "".join(SEPARATORS[i % 2] + g for i, g in enumerate(groups[1:]))
        if all(set(n) - _HEX_UUID for n in _base64_needles(key)):  # fails once in ~1e8 draws
            return key


def _base64_needles(key: str) -> set[bytes]:
    raw, out = key.encode(), set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):  # the bytes before the key set its alignment in the encoding
            encoded = encode(b"\0" * shift + raw)
            first, end = -(-8 * shift // 6), (8 * (shift + len(raw))) // 6  # characters only the key sets
            starts = [*range(first, end - B64_PIECE + 1, B64_STRIDE), end - B64_PIECE]
            out.update(encoded[i:i + B64_PIECE] for i in starts)
    return out


def _marked_needles(key: str) -> set[bytes]:
    quoted = urllib.parse.quote(key, safe="")
    out = set()
    for form in {key, quoted, quoted.replace("~", "%7E")}:
        for i, char in enumerate(form):
            if char in "~!%" and len(form) - i >= TAIL:
                out.add(form[i:i + PIECE].encode())
    return out


class Needles:
    """What a leak of one key looks like (see the module's docstring); `search` finds any of it."""

    def __init__(self, key: str) -> None:
        self.marked = _marked_needles(key)
        self.base64 = _base64_needles(key)
        self._marked = re.compile(b"|".join(re.escape(n) for n in sorted(self.marked, key=len, reverse=True)))

    def search(self, data: bytes) -> bool:
        return self._marked.search(data) is not None or any(n in data for n in self.base64)

    def chance(self, size: float, alphabet: bytes | None = None) -> float:
        """An upper bound of the chance that `size` bytes drawn uniformly from `alphabet` (None:
        all 256 byte values) hold a needle: over every position and needle, m^-len each."""
        allowed = frozenset(alphabet) if alphabet is not None else None
        m = 256 if allowed is None else len(allowed)
        return sum(size * float(m) ** -len(n) for n in self.marked | self.base64
                   if allowed is None or allowed.issuperset(n))


def pattern(key: str) -> Needles:
    return Needles(key)


@functools.cache
def _key_pattern() -> Needles:
    from tests.conftest import PROVIDER_KEY

    return Needles(PROVIDER_KEY)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    found = _key_pattern()
    for title, text in report.sections:
        _scanned["sections"] += 1
        if found.search(text.encode(errors="replace")):
            _found.append((report.nodeid, title))


def _is_input(path: pathlib.Path, root: pathlib.Path) -> bool:
    return path.suffix in _INPUT_SUFFIXES and "data" not in path.relative_to(root).parts[:-1]


def scan_files(root: pathlib.Path, found: Needles) -> list[str]:
    leaks = []
    for path in root.rglob("*"):
        try:
            if not path.is_file() or path.stat().st_size > _MAX_FILE or _is_input(path, root):
                continue
            data = path.read_bytes()
        except OSError:
            continue
        _scanned["files"] += 1
        _scanned["bytes"] += len(data)
        if found.search(data):
            leaks.append(str(path))
    return leaks


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    try:
        root = factory.getbasetemp()
    except Exception:  # no test asked for a temporary directory
        return
    leaks = [f"{nodeid}: {title}" for nodeid, title in _found] + scan_files(root, _key_pattern())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"R30 sweep: {_scanned['sections']} captured outputs, {_scanned['files']} files "
                            f"({_scanned['bytes'] // 1024} KiB): {len(leaks)} with a piece of the provider key")
        for leak in leaks[:20]:
            reporter.write_line(f"  leak: {leak}")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
