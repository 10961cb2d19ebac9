"""The deploy examples are valid Kubernetes objects, and the sidecar's config is one the gateway accepts."""

from __future__ import annotations

import pathlib

from proxy.config import decode
from tests.deploy.conftest import check_objects, documents

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_sidecar_example():
    docs = documents((EXAMPLES / "sidecar.yaml").read_text())
    check_objects(docs)
    kinds = {d["kind"]: d for d in docs}
    cfg = decode(kinds["ConfigMap"]["data"]["config.yaml"].encode())
    assert cfg.listen.host == "127.0.0.1"  # loopback: only the app in the pod reaches it
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["securityContext"]["readOnlyRootFilesystem"]
    app_env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert app_env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{cfg.listen.port}/openai/v1"


def test_redis_for_the_edge_example():
    docs = documents((EXAMPLES / "redis.yaml").read_text())
    check_objects(docs)
    assert {d["kind"] for d in docs} == {"Deployment", "Service"}
