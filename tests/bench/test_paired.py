"""bench.paired: the ratio of CPU per request when both servers take load at the same moment."""

from __future__ import annotations

from bench import paired


def test_the_ratio_is_the_median_of_each_rounds_own_ratio():
    rounds = [{"gateway_us": 200.0, "passthrough_us": 210.0},  # the host fast: both cheap
              {"gateway_us": 400.0, "passthrough_us": 380.0},  # slow: both dear, the ratio holds
              {"gateway_us": 300.0, "passthrough_us": 330.0}]
    got = paired.summarise(rounds)
    assert got["ratio"] == 1.05 and (got["ratio_min"], got["ratio_max"]) == (0.95, 1.1)
    assert (got["gateway_us"], got["passthrough_us"]) == (300.0, 330.0)
    assert got["rounds"] == rounds


def test_the_line_gives_the_verdict_against_the_issue_floors():
    ok = paired._line("c256", paired.summarise([{"gateway_us": 100.0, "passthrough_us": 101.0}]))
    miss = paired._line("b32", paired.summarise([{"gateway_us": 400.0, "passthrough_us": 260.0}]))
    assert "ratio 1.010" in ok and "floor 1.0: ok" in ok and "CPU per request: gateway 100 µs" in ok
    assert "ratio 0.650" in miss and "floor 0.8: MISS" in miss and "stream of 100 events" in miss


def test_record_replaces_the_last_paired_section_and_keeps_the_rest(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Bench results\n\nthe main run\n")
    result = {"c256": paired.summarise([{"gateway_us": 200.0, "passthrough_us": 204.0},
                                        {"gateway_us": 300.0, "passthrough_us": 297.0}])}
    paired.record(paired.markdown(result, "python -m bench.paired", "then"), path)
    paired.record(paired.markdown(result, "python -m bench.paired --rounds 2", "now"), path)
    text = path.read_text()
    assert text.startswith("# Bench results\n\nthe main run\n\n## Paired")
    assert text.count(paired.HEADING) == 1 and "`python -m bench.paired --rounds 2`, now" in text
    assert "| c256 | ≥ 1.0 | 1.005 | 1.020, 0.990 | 250 per request | 250 per request |" in text
