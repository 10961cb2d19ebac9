"""Rendering the chart for the deploy tests: with tests/deploy/gotemplate.py (always there), or with
the helm binary (deploy/tools/get-helm.sh puts one in the venv; tests that need it skip without)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import yaml

from tests.deploy.conftest import documents
from tests.deploy.gotemplate import render_chart

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ai-enabler-proxy"
EXAMPLES = ROOT / "deploy" / "examples"
# A Cast AI key, as `--set castai.apiKey=…` gives one: the schema needs it (or a Secret's name).
CASTAI_KEY = {"castai": {"apiKey": "castai-key-for-tests"}}


def render(values: dict | None = None, namespace: str = "castai-llms", chart: pathlib.Path = CHART,
           release: str = "gw") -> dict[str, list[dict]]:
    """kind → objects, as `helm template gw CHART -n castai-llms` would print them."""
    rendered = render_chart(chart, values, release=release, namespace=namespace)
    objects: dict[str, list[dict]] = {}
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            for doc in documents(text):
                objects.setdefault(doc["kind"], []).append(doc)
    return objects


def notes(values: dict | None = None, namespace: str = "castai-llms") -> str:
    return render_chart(CHART, values, namespace=namespace)["templates/NOTES.txt"]


def container(objects) -> dict:
    (deployment,) = objects["Deployment"]
    (proxy,) = deployment["spec"]["template"]["spec"]["containers"]
    return proxy


def every(objects) -> list[dict]:
    return [o for objs in objects.values() for o in objs]


def helm_binary() -> str | None:
    """helm on PATH, or the one get-helm.sh installed beside this interpreter."""
    beside = pathlib.Path(sys.executable).parent / "helm"
    return shutil.which("helm") or (str(beside) if beside.exists() else None)


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def helm_template(values_files=(), sets=(), namespace: str = "castai-llms", release: str = "gw",
                  chart: pathlib.Path = CHART) -> list[dict]:
    args = ["template", release, str(chart), "-n", namespace]
    for path in values_files:
        args += ["-f", str(path)]
    for flag in sets:
        args += ["--set", flag]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return documents(done.stdout)


def load(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}
