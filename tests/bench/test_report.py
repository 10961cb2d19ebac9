"""The bench's report: the host-speed probe and what it makes the report say."""

from __future__ import annotations

from bench import procs, report


def test_the_speed_probe_times_a_fixed_loop_on_the_server_cpu():
    first, second = procs.speed_probe(), procs.speed_probe()
    assert first is not None and second is not None
    assert 0 < first < 10_000 and 0 < second < 10_000


def test_a_host_whose_speed_moved_gets_a_warning_and_a_quiet_one_does_not():
    moved = {"targets": {}, "host_speed_ms": [20.0, 21.0, 26.5, 20.5]}
    quiet = {"targets": {}, "host_speed_ms": [20.0, 21.0, 22.0]}
    [warning] = report.warnings(moved)
    assert "1.32x" in warning and "20.0 to 26.5 ms" in warning
    assert report.warnings(quiet) == []
    assert report.speed_text(quiet) == ("Host speed: a fixed Python loop took 20.0 to 22.0 ms of CPU on the server "
                                        "CPU (median 21.0) in 3 probes before the scenario rounds: the slowest "
                                        "1.10x the fastest.")
    assert report.speed_text({"targets": {}}) is None  # a saved run from before the probe


def test_a_dialect_scenario_is_compared_with_its_twin_measured_beside_it():
    def result(r32: dict) -> dict:
        return {"targets": {"gateway": {"scenarios": {"c32": {"req_per_cpu_s": 5000.0}, "r32": r32}}}}

    beside = result({"req_per_cpu_s": 4000.0, "twin": "c32", "twin_req_per_cpu_s": 4400.0})
    assert report.vs_chat(beside, "gateway")["r32_req_per_cpu_s_vs_c32"] == round(4000 / 4400, 3)
    # a run saved before the twins ran beside: the chat scenario of the same run
    before = result({"req_per_cpu_s": 4000.0})
    assert report.vs_chat(before, "gateway")["r32_req_per_cpu_s_vs_c32"] == 0.8
