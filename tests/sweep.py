"""The session-wide secret sweep (RELIABILITY R30), over the whole test run.

Every `openai_provider` in the suite carries `tests.conftest.PROVIDER_KEY`, random per run. After
each test its captured output (logs, stdout, stderr) is searched, and at the end of the run every
file the run left under pytest's temporary directory (data directories, spools, usage stores,
dead-letter files, the logs of gateways run as processes). Any 8-character piece of the key other
than its last 4 characters fails the run. Config files the tests wrote themselves (`.json`,
`.yaml` outside a `data` directory) are inputs and are skipped; everything a gateway writes lives
in its data directory or is a log, and is searched.
"""

from __future__ import annotations

import functools
import pathlib
import re

import pytest

_INPUT_SUFFIXES = {".json", ".yaml", ".yml"}
_MAX_FILE = 64 * 1024 * 1024
_found: list[tuple[str, str]] = []
_scanned = {"sections": 0, "files": 0, "bytes": 0}


def pattern(key: str) -> re.Pattern[bytes]:
    pieces = {key[i:i + 8] for i in range(len(key) - 7)}
    return re.compile(b"|".join(re.escape(p.encode()) for p in sorted(pieces)))


@functools.cache
def _key_pattern() -> re.Pattern[bytes]:
    from tests.conftest import PROVIDER_KEY

    return pattern(PROVIDER_KEY)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    found = _key_pattern()
    for title, text in report.sections:
        _scanned["sections"] += 1
        if found.search(text.encode(errors="replace")):
            _found.append((report.nodeid, title))


def _is_input(path: pathlib.Path, root: pathlib.Path) -> bool:
    return path.suffix in _INPUT_SUFFIXES and "data" not in path.relative_to(root).parts[:-1]


def scan_files(root: pathlib.Path, found: re.Pattern[bytes]) -> list[str]:
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
