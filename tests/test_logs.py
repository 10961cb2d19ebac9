"""Logs are JSON lines rendered by orjson."""

from __future__ import annotations

import json
import subprocess
import sys


def test_json_lines_and_level_filter():
    code = ("from proxy import logs; import structlog; logs.configure('warning'); "
            "log = structlog.get_logger('t'); log.info('hidden'); log.warning('shown', n=1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["event"], line["level"], line["n"]) for line in lines] == [("shown", "warning", 1)]
    assert lines[0]["timestamp"].endswith("Z")
