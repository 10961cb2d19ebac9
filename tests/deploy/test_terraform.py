"""The Terraform module (deploy/terraform) and its examples, read with python-hcl2.

Terraform itself would need its providers downloaded to validate; these checks need nothing but
the files: every variable the module uses is declared (and every declared one used), the ones
issue-listed exist with secrets marked sensitive, the release installs this repository's chart,
the values the module writes are values that chart accepts, and the examples pass what the module
requires and nothing it does not know.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.chartkit import CHART, ROOT, every, render
from tests.deploy.conftest import check_objects
from tests.deploy.gotemplate import merge

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install -e '.[test]')")

MODULE = ROOT / "deploy" / "terraform"
EXAMPLES = sorted(p for p in (MODULE / "examples").iterdir() if p.is_dir())
META = {"source", "version", "providers", "depends_on", "count", "for_each"}  # a module block's own arguments


def _plain(node):
    """python-hcl2's tree without its markers: labels and strings unquoted, no __is_block__."""
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items() if k != "__is_block__"}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def _blocks(directory: pathlib.Path) -> dict[str, dict]:
    """Top-level blocks of a Terraform directory: variable/output/module name → body, locals, resources."""
    out: dict[str, dict] = {"variable": {}, "output": {}, "module": {}, "locals": {}, "resource": {}}
    for path in sorted(directory.glob("*.tf")):
        tree = _plain(hcl2.loads(path.read_text()))
        for kind in ("variable", "output", "module"):
            for block in tree.get(kind, []):
                out[kind].update(block)
        for block in tree.get("locals", []):
            out["locals"].update(block)
        for block in tree.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    out["resource"][f"{rtype}.{name}"] = body
    return out


def _text(directory: pathlib.Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.glob("*.tf")))


def _references(directory: pathlib.Path, kind: str) -> set[str]:
    code = "\n".join(re.sub(r"#.*", "", line) for line in _text(directory).splitlines())
    return set(re.findall(rf"\b{kind}\.([A-Za-z_][A-Za-z0-9_-]*)", code))


MOD = _blocks(MODULE)
RELEASE = MOD["resource"]["helm_release.ai_enabler_proxy"]


@pytest.mark.parametrize("directory", [MODULE, *EXAMPLES], ids=lambda p: str(p.relative_to(MODULE)) or "module")
def test_every_tf_file_parses_and_every_variable_used_is_declared(directory):
    blocks = _blocks(directory)
    used, declared = _references(directory, "var"), set(blocks["variable"])
    assert used <= declared, f"used but not declared: {used - declared}"
    assert declared <= used, f"declared but never used: {declared - used}"
    assert _references(directory, "local") <= set(blocks["locals"])


def test_the_module_has_the_variables_cast_ai_users_set_with_secrets_sensitive():
    variables = MOD["variable"]
    assert {"castai_api_token", "cluster_id", "api_url", "api_key_fallback", "namespace", "create_namespace",
            "replicas", "redis_url", "values", "chart_version"} <= set(variables)
    sensitive = {name for name, body in variables.items() if body.get("sensitive") is True}
    assert sensitive == {"castai_api_token", "api_key_fallback", "redis_url"}
    assert variables["namespace"]["default"] == "castai-agent"
    assert variables["release_name"]["default"] == "castai-ai-optimizer-proxy"
    for name in ("castai_api_token", "cluster_id"):  # no default: Terraform asks for them
        assert "default" not in variables[name]


def test_the_release_installs_the_chart_in_this_repository():
    assert RELEASE["chart"] == "${local.chart}"
    chart = MOD["locals"]["chart"]
    match = re.search(r'"\$\{path\.module\}/([^"]+)"', chart)
    assert match and "var.chart_repository == null" in chart, chart
    path = (MODULE / match.group(1)).resolve()
    assert path == CHART and yaml.safe_load((path / "Chart.yaml").read_text())["name"] == "ai-enabler-proxy"
    assert RELEASE["namespace"] == "${var.namespace}" and RELEASE["create_namespace"] == "${var.create_namespace}"
    assert RELEASE["version"] == "${var.chart_version}" and RELEASE["name"] == "${var.release_name}"
    assert RELEASE["values"].startswith(
        "${concat([yamlencode(local.settings), yamlencode(local.secret_settings)], var.values)")


SAMPLES = {"${var.castai_api_token}": "castai-token", "${var.cluster_id}": "c-1", "${var.api_url}": "https://api.cast.ai",
           "${var.api_key_fallback}": None, "${var.replicas}": 3, "${var.redis_url}": "redis+sentinel://s:26379/mymaster/0",
           "${random_password.proxy_secret_key.result}": "x" * 48}


def _fill(node):
    if isinstance(node, dict):
        return {k: _fill(v) for k, v in node.items()}
    assert node in SAMPLES, f"no sample for {node!r}: add one"
    return SAMPLES[node]


def test_the_values_the_module_writes_are_values_the_chart_accepts():
    """The module's two values documents, merged as Helm merges them, pass the chart's schema and
    render the Service Cast AI's documentation names."""
    values = merge(_fill(MOD["locals"]["settings"]), _fill(MOD["locals"]["secret_settings"]))
    objects = render(values, namespace="castai-agent", release="castai-ai-optimizer-proxy")
    check_objects(every(objects))
    assert objects["Service"][0]["metadata"]["name"] == "castai-ai-optimizer-proxy"
    assert set(objects["Secret"][0]["data"]) == {"API_KEY", "STORE_URL", "PROXY_SECRET_KEY"}  # the null one left out
    assert objects["Deployment"][0]["spec"]["replicas"] == 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_what_the_module_requires(example):
    uses = {name: body for name, body in _blocks(example)["module"].items()
            if (example / body["source"]).resolve() == MODULE}
    assert uses, f"{example.name} does not use the module"
    required = {name for name, body in MOD["variable"].items() if "default" not in body}
    for name, body in uses.items():
        given = set(body) - META
        assert required <= given, f"module {name} misses {required - given}"
        assert given <= set(MOD["variable"]), f"module {name} passes unknown {given - set(MOD['variable'])}"
    assert "module" in _text(example) and re.search(r'module\s+"eks"', _text(example))  # beside a cluster module


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed; python-hcl2 parsed the files")
def test_terraform_fmt_finds_nothing_to_change():
    done = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(MODULE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
