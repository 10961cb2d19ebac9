"""The dead-letter file: JSON lines with the reason, and a cap."""

from __future__ import annotations

import orjson

from proxy.telemetry.deadletter import DeadLetter
from tests.telemetry.helpers import record


async def test_records_are_kept_with_the_status_and_reason(tmp_path):
    dead = DeadLetter(tmp_path / "dl")
    assert await dead.write("castai", [record(1), record(2)], 401, "invalid API key") == 2
    lines = [orjson.loads(line) for line in dead.path("castai").read_bytes().splitlines()]
    assert [(x["sink"], x["status"], x["reason"], x["record"]["id"]) for x in lines] == [
        ("castai", 401, "invalid API key", "rec-00000001"), ("castai", 401, "invalid API key", "rec-00000002")]
    assert lines[0]["time"].endswith("Z") and lines[0]["record"]["promptTokens"] == 12


async def test_the_file_stops_growing_at_its_cap(tmp_path):
    dead = DeadLetter(tmp_path, max_bytes=1500)
    kept = await dead.write("castai", [record(i) for i in range(10)], 400, "bad")
    assert 0 < kept < 10 and dead.path("castai").stat().st_size <= 1500
    assert await dead.write("castai", [record(11)], 400, "bad") == 0
