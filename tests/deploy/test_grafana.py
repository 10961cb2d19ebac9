"""deploy/grafana/dashboard.json: Grafana's import structure (a JSON schema written from its
dashboard model), a layout with no overlaps, and every metric it queries present on the
/metrics of a real gateway."""

from __future__ import annotations

import json
import pathlib
import re

import aiohttp
import jsonschema
import pytest

from tests.conftest import openai_provider
from tests.procs import ROOT, GatewayProcess

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
SCHEMA = pathlib.Path(__file__).with_name("grafana_dashboard.schema.json")
# a metric name inside PromQL: an identifier not followed by `(` (a function) nor by `=`, `!=`
# or `=~` (a label matcher), and not inside a `by (...)` list
_NAME = re.compile(r"\b((?:aigw|process)_[a-zA-Z0-9_]+)\b")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_the_dashboard_has_grafanas_import_structure():
    dashboard = _dashboard()
    jsonschema.validate(dashboard, json.loads(SCHEMA.read_text()))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for expr in _queries(dashboard):
        assert set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval"} <= variables, expr


def test_the_dashboard_covers_what_operators_watch():
    titles = " | ".join(p["title"].lower() for p in _dashboard()["panels"])
    for topic in ("requests", "error", "duration", "time to first token", "tokens", "cost", "upstream failures",
                  "circuit", "backlog", "dropped"):
        assert topic in titles, topic


def test_the_schema_rejects_what_grafana_would_not_import():
    schema = json.loads(SCHEMA.read_text())
    broken = _dashboard()
    del broken["panels"][1]["targets"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = _dashboard()
    broken["panels"][1]["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def _metric_names(expr: str) -> set[str]:
    labels = {m for group in _BY.findall(expr) for m in group.replace(" ", "").split(",")}
    labels |= set(_LABEL.findall(expr))
    return set(_NAME.findall(expr)) - labels


def _exposed(text: str) -> set[str]:
    """Every series name a scrape can carry: samples, and families announced with no sample yet."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="process_* metrics come from /proc")
async def test_every_metric_the_dashboard_queries_is_on_a_real_gateways_metrics(tmp_path, fake_openai):
    gw = GatewayProcess(tmp_path / "gw", {"providers": [openai_provider(fake_openai)]})
    await gw.start()
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession() as session:
            for stream in (False, True):
                async with session.post(gw.url + "/v1/chat/completions", json={**body, "stream": stream}) as r:
                    assert r.status == 200
                    await r.read()
            async with session.get(gw.url + "/metrics") as r:
                exposed = _exposed(await r.text())
    finally:
        gw.terminate()
        await gw.wait()
    used = set().union(*(_metric_names(e) for e in _queries(_dashboard())))
    assert len(used) >= 20
    assert used <= exposed, sorted(used - exposed)
    assert not any(re.search(r"\b(proxy|usage|castai)_\w+", e) for e in _queries(_dashboard()))
