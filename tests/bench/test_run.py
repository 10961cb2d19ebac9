"""The bench's rounds: slices interleaved across the targets, joined back into one round."""

from __future__ import annotations

import asyncio

import pytest

from bench import run


def test_only_the_count_scenarios_are_sliced_and_a_slice_lasts_about_slice_s():
    cfg = run.Settings(duration=5.0, slice_s=1.0)
    assert [cfg.slices(name) for name in ("c1", "c32", "c256", "s32", "b32")] == [5, 5, 5, 5, 5]
    assert [cfg.slices(name) for name in ("delayed", "s1000", "r32", "idle")] == [1, 1, 1, 1]
    assert run.Settings(duration=5.0, slice_s=2.0).slices("c32") == 2
    assert run.Settings(duration=5.0, slice_s=0.0).slices("c32") == 1  # --slice 0: whole
    assert run.Settings(duration=0.5, slice_s=1.0).slices("b32") == 1  # never less than one


def test_a_round_is_rebuilt_from_its_slices_rates_from_the_sums():
    slow = {"driver": "wrk", "duration_s": 1.0, "requests": 1000, "rps": 1000.0, "server_cpu_s": 1.0,
            "req_per_cpu_s": 1000.0, "p50_ms": 4.0, "p99_ms": 9.0, "errors": 0, "server_cpu_util": 1.0,
            "other_load_on_server_cpu": 0.0, "rss_mb": 50.0,
            "error_kinds": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}}
    fast = {**slow, "requests": 3000, "rps": 3000.0, "server_cpu_s": 1.0, "req_per_cpu_s": 3000.0, "p50_ms": 2.0,
            "p99_ms": 5.0, "errors": 2, "other_load_on_server_cpu": 0.1, "rss_mb": 51.0,
            "error_kinds": {"connect": 0, "read": 2, "write": 0, "status": 0, "timeout": 0}}
    middle = {**slow, "requests": 2000, "rps": 2000.0, "req_per_cpu_s": 2000.0, "p50_ms": 3.0, "p99_ms": 7.0}
    joined = run.joined([slow, fast, middle])
    # 6,000 requests in 3 s and 3 CPU-s: not the mean of the slices' own rates, which would
    # weigh a slow second like a fast one whatever each did
    assert joined["requests"] == 6000 and joined["duration_s"] == 3.0 and joined["server_cpu_s"] == 3.0
    assert joined["rps"] == 2000.0 and joined["req_per_cpu_s"] == 2000.0
    assert (joined["p50_ms"], joined["p99_ms"]) == (3.0, 7.0)  # the median slice's
    assert joined["errors"] == 2 and joined["error_kinds"]["read"] == 2
    assert joined["other_load_on_server_cpu"] == 0.1  # the worst slice's
    assert joined["rss_mb"] == 50.0  # the last slice's
    assert joined["driver"] == "wrk" and joined["slices"] == 3
    assert joined["rps_slices"] == [1000.0, 3000.0, 2000.0]
    assert run.joined([slow]) is slow


def test_a_stream_round_gets_its_chunks_per_cpu_second_from_the_summed_events():
    one = {"driver": "python", "duration_s": 1.0, "events": 100_000, "server_cpu_s": 0.5,
           "chunks_per_cpu_s": 200_000.0, "chunks_per_s": 100_000.0, "max_gap_ms": 3.0, "stalls": 0}
    two = {**one, "events": 300_000, "server_cpu_s": 1.0, "chunks_per_cpu_s": 300_000.0, "chunks_per_s": 300_000.0,
           "max_gap_ms": 9.0, "stalls": 1}
    joined = run.joined([one, two])
    assert joined["chunks_per_cpu_s"] == round(400_000 / 1.5, 1)
    assert joined["chunks_per_s"] == 200_000.0  # weighed by each slice's length
    assert joined["max_gap_ms"] == 9.0 and joined["stalls"] == 1


class _Server:
    """A target whose CPU clock moves by what the test says, one reading at a time."""

    def __init__(self, readings: list[float]) -> None:
        self.readings = readings

    def cpu(self) -> float:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_the_cpu_time_is_read_once_the_server_has_gone_quiet():
    # still storing records for 2 readings (0.05 s each), then quiet
    server = _Server([1.00, 1.05, 1.10, 1.105, 1.105])
    assert asyncio.run(run._quiet(server)) == pytest.approx(1.105)
    busy = _Server([float(n) for n in range(100)])  # never quiet: given up on after the limit
    assert asyncio.run(run._quiet(busy, limit=0.3)) < 10
