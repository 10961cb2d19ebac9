"""deploy/grafana/render.py: the dashboard drawn from a real gateway's metrics, since no Grafana
runs here. The evaluator (deploy/grafana/promql.py) is checked on recorded scrape texts with known
answers; then the whole script runs once against a real gateway with a short load (about 15 s)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboard.json").read_text())
ALL = {"__rate_interval": "4s", "job": ".*", "model": ".*", "provider": ".*"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"grafana_{name}", GRAFANA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


promql = _load("promql")


def exposition(n: int) -> str:
    """The n-th second of a recorded run, in the gateway's exposition format: 200s grow by 2 a
    second, 502s by 1; durations land 1/s under 0.1 s, 2/s in (0.1, 0.5], 1/s above; the cost
    counter restarts from zero (a worker came back) at n = 3."""
    ok, bad, cost = 2 * n, n, (5 * n if n < 3 else 2 * (n - 3))
    return f"""# HELP aigw_requests_total Requests.
# TYPE aigw_requests_total counter
aigw_requests_total{{endpoint="chat",model="mock-gpt",provider="mock",status="200"}} {ok}.0
aigw_requests_total{{endpoint="chat",model="local-llm",provider="offline",status="502"}} {bad}.0
# TYPE aigw_cost_usd_total counter
aigw_cost_usd_total{{endpoint="chat",model="mock-gpt",provider="mock",status="200"}} {cost}.0
# TYPE aigw_request_duration_seconds histogram
aigw_request_duration_seconds_bucket{{endpoint="chat",le="0.1",model="mock-gpt",provider="mock"}} {n}.0
aigw_request_duration_seconds_bucket{{endpoint="chat",le="0.5",model="mock-gpt",provider="mock"}} {3 * n}.0
aigw_request_duration_seconds_bucket{{endpoint="chat",le="+Inf",model="mock-gpt",provider="mock"}} {4 * n}.0
aigw_request_duration_seconds_count{{endpoint="chat",model="mock-gpt",provider="mock"}} {4 * n}.0
aigw_request_duration_seconds_sum{{endpoint="chat",model="mock-gpt",provider="mock"}} 1.0
# TYPE process_open_fds gauge
process_open_fds{{worker="0"}} 30.0
process_open_fds{{worker="all"}} 30.0
"""


SCRAPES = [(1000.0 + n, promql.parse_scrape(exposition(n), "gw", "127.0.0.1:8080")) for n in range(8)]


def last(expr: str, legend: str = "") -> dict[str, float]:
    return {name: points[-1][1] for name, points in promql.series(expr, legend, SCRAPES, ALL).items()}


def test_rate_sums_every_series_and_by_label():
    assert last('sum(rate(aigw_requests_total{job=~"$job", model=~"$model"}[$__rate_interval]))') == {"{}": 3.0}
    assert last('sum by (status) (rate(aigw_requests_total[$__rate_interval]))', "{{status}}") == \
        {"200": 2.0, "502": 1.0}


def test_label_matchers_and_the_job_label_the_scraper_adds():
    assert last('sum(rate(aigw_requests_total{status=~"5.."}[4s]))') == {"{}": 1.0}
    assert last('sum(rate(aigw_requests_total{status!="200", job="gw"}[4s]))') == {"{}": 1.0}
    assert last('sum(rate(aigw_requests_total{job="other"}[4s]))') == {}
    assert last('process_open_fds{worker!="all"}', "{{instance}} {{worker}}") == {"127.0.0.1:8080 0": 30.0}


def test_a_ratio_of_two_sums_and_a_scale():
    ratio = 'sum(rate(aigw_requests_total{status=~"5.."}[4s])) / sum(rate(aigw_requests_total[4s]))'
    assert last(ratio)["{}"] == pytest.approx(1 / 3)
    assert last("sum by (model) (rate(aigw_requests_total[4s])) * 3600", "{{model}}") == \
        {"mock-gpt": 7200.0, "local-llm": 3600.0}


def test_histogram_quantile_interpolates_inside_the_bucket():
    # Per second: 1 under 0.1, 2 in (0.1, 0.5], 1 above; the median (rank 2 of 4) is halfway up
    # the second bucket: 0.1 + 0.4 * (2 - 1) / (3 - 1) = 0.3. p90 falls in +Inf: the last bound.
    expr = "histogram_quantile({q}, sum by (le) (rate(aigw_request_duration_seconds_bucket[4s])))"
    assert last(expr.format(q=0.5))["{}"] == pytest.approx(0.3)
    assert last(expr.format(q=0.9))["{}"] == pytest.approx(0.5)
    assert last(expr.format(q=0.25))["{}"] == pytest.approx(0.1)


def test_increase_counts_across_a_counter_restart():
    # 0, 5, 10, then restart: 0, 2, 4, 6, 8 -> 10 before, 8 after (the 0 is a drop: all of it counts).
    assert last("sum(increase(aigw_cost_usd_total[24h]))") == {"{}": 18.0}


def test_no_point_until_the_window_holds_two_samples():
    points = promql.series("sum(rate(aigw_requests_total[4s]))", "", SCRAPES, ALL)["{}"]
    assert [t for t, _ in points] == [t for t, _ in SCRAPES[1:]]


@pytest.mark.parametrize("expr", [
    "avg(aigw_requests_total)",                      # an aggregation it does not implement
    "aigw_requests_total[5m]",                       # a range vector outside rate/increase
    "sum(aigw_requests_total[5m])",
    "topk(3, aigw_requests_total)",
    'aigw_requests_total{model=~"$unknown"}',        # a variable the dashboard does not define
    "sum(rate(aigw_requests_total[5x]))",
    "aigw_requests_total + 1",
])
def test_what_it_cannot_evaluate_is_refused_not_guessed(expr):
    with pytest.raises(promql.Unsupported):
        promql.series(expr, "", SCRAPES, ALL)


def test_every_query_in_the_dashboard_is_understood():
    targets = [t for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    assert targets
    for target in targets:
        promql.Parser(target["expr"], ALL).parse()  # raises Unsupported otherwise


# --- the whole script, once, against a real gateway ---------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One run: 6 s of load, bounded at 90 s in all (a gateway that hangs fails, not blocks)."""
    out = tmp_path_factory.mktemp("render")
    args = [sys.executable, str(GRAFANA / "render.py"), "--seconds", "6", "--svg", str(out / "d.svg")]
    if _chromium():
        args += ["--png", str(out / "d.png")]
    subprocess.run(args, check=True, timeout=90, cwd=ROOT)
    return out


def _panels(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "panel"]


def test_the_svg_holds_every_panel_laid_out_on_the_grid(rendered):
    svg = ET.parse(rendered / "d.svg").getroot()
    panels = _panels(svg)
    wanted = [p["title"] for p in DASHBOARD["panels"] if p["type"] != "row"]
    assert [g.get("data-title") for g in panels] == wanted
    rects = [g.find("{http://www.w3.org/2000/svg}rect").attrib for g in panels]
    boxes = [tuple(float(r[k]) for k in ("x", "y", "width", "height")) for r in rects]
    for i, (x, y, w, h) in enumerate(boxes):
        assert 0 <= x and x + w <= float(svg.get("width")) and y + h <= float(svg.get("height"))
        for x2, y2, w2, h2 in boxes[i + 1:]:  # Grafana's grid never overlaps two panels
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    texts = "".join(svg.itertext())
    assert "n/a" not in texts
    for row in (p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"):
        assert row in texts


def test_the_request_rate_panel_is_drawn_from_the_load(rendered):
    svg = ET.parse(rendered / "d.svg").getroot()
    by_title = {g.get("data-title"): g for g in _panels(svg)}
    traffic = by_title["Requests by endpoint and status"]
    legends = {t.text for t in traffic.iter("{http://www.w3.org/2000/svg}text")}
    assert {"chat 200", "chat 404", "chat 400"} <= legends  # the load's successes, unknown model, bad body
    assert int(traffic.get("data-series")) >= 3
    lines = [p.get("points").split() for p in traffic.iter("{http://www.w3.org/2000/svg}polyline")]
    assert len(lines) >= 3 and all(len(points) >= 3 for points in lines)  # one line a series, over time
    rate = [t.text for t in by_title["Requests per second"].iter("{http://www.w3.org/2000/svg}text")][-1]
    assert rate.endswith(" req/s") and float(rate.split()[0]) > 0


def test_the_png_is_a_screenshot_of_the_svg(rendered):
    if not _chromium():
        pytest.skip("chromium is missing, so the script made no PNG (apt-get install chromium)")
    data = (rendered / "d.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    svg = ET.parse(rendered / "d.svg").getroot()
    assert (width, height) == (int(svg.get("width")), int(svg.get("height")))
