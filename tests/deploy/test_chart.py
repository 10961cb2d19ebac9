"""The Helm chart renders to valid Kubernetes objects, for the defaults and for every option.

`helm template` renders it when the helm binary is installed; otherwise tests/deploy/gotemplate.py
does (the chart keeps to the part of the template language it supports). Every object is then
validated against the Kubernetes schemas, and the config it carries is decoded by the gateway.
"""

from __future__ import annotations

import base64
import pathlib
import shutil
import subprocess

import pytest
import yaml

from proxy.config import decode
from tests.deploy.conftest import check_objects, documents
from tests.deploy.gotemplate import TemplateError, render_chart

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ai-enabler-proxy"
ALL_OPTIONS = yaml.safe_load((CHART / "ci" / "all-options-values.yaml").read_text())
EDGE = yaml.safe_load((ROOT / "deploy" / "examples" / "edge-redis-values.yaml").read_text())


def render(values: dict | None = None) -> dict[str, list[dict]]:
    """kind → objects, as `helm template gw CHART -n castai-llms` would print them."""
    rendered = render_chart(CHART, values)
    objects: dict[str, list[dict]] = {}
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            for doc in documents(text):
                objects.setdefault(doc["kind"], []).append(doc)
    return objects


def container(objects) -> dict:
    (deployment,) = objects["Deployment"]
    (proxy,) = deployment["spec"]["template"]["spec"]["containers"]
    return proxy


def test_defaults_render_valid_objects_that_are_non_root_and_read_only():
    objects = render()
    assert sorted(objects) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    check_objects([o for objs in objects.values() for o in objs])
    (service,) = objects["Service"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 443, "targetPort": "http", "protocol": "TCP"}]
    proxy = container(objects)
    assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {"http": 8080, "healthz": 9876}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}
    security = proxy["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in proxy["volumeMounts"]}
    assert {"/var/lib/ai-enabler-proxy", "/tmp", "/etc/ai-enabler-proxy"} <= mounts
    assert "envFrom" not in proxy  # nothing secret configured: no Secret to read


def test_the_config_in_the_configmap_is_one_the_gateway_accepts():
    for values in (None, ALL_OPTIONS, EDGE):
        (configmap,) = render(values)["ConfigMap"]
        cfg = decode(configmap["data"]["config.yaml"].encode())
        assert (cfg.listen.host, cfg.listen.port, cfg.listen.health_port) == ("0.0.0.0", 8080, 9876)
        assert cfg.data_dir == "/var/lib/ai-enabler-proxy" and cfg.auth.castai_verification


def test_every_option_renders_valid_objects():
    objects = render(ALL_OPTIONS)
    assert sorted(objects) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace",
                               "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]
    check_objects([o for objs in objects.values() for o in objs])
    (secret,) = objects["Secret"]
    plain = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert plain == {"API_KEY": "castai-api-key-for-tests", "API_KEY_FALLBACK": "fallback-caller-key",
                     "ADMIN_API_KEY": "admin-key-for-tests", "PROXY_SECRET_KEY": "shared-secret-for-tests",
                     "STORE_URL": "redis://redis.llm.svc:6379/0", "CACHE_URL": "redis://redis-cache.llm.svc:6379/1",
                     "OPENAI_API_KEY": "sk-for-tests"}
    proxy = container(objects)
    assert [ref["secretRef"]["name"] for ref in proxy["envFrom"]] == ["gw-llm-gateway", "castai-credentials",
                                                                       "provider-keys"]
    env = {e["name"]: e["value"] for e in proxy["env"]}
    assert env == {"API_URL": "https://api.eu.cast.ai", "CLUSTER_ID": "11111111-2222-3333-4444-555555555555",
                   "HEALTH_PORT": "9876", "LOG_FORMAT": "json"}
    (deployment,) = objects["Deployment"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert deployment["metadata"]["labels"]["team"] == "platform"
    assert deployment["metadata"]["annotations"] == {"owner": "platform-team"}
    (hpa,) = objects["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"], len(hpa["spec"]["metrics"])) == (3, 12, 2)
    assert objects["Namespace"][0]["metadata"]["name"] == "castai-llms"


def test_pdb_max_unavailable_and_an_existing_service_account():
    objects = render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
                      "serviceAccount": {"create": False, "name": "shared"}})
    (pdb,) = objects["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert "ServiceAccount" not in objects
    assert objects["Deployment"][0]["spec"]["template"]["spec"]["serviceAccountName"] == "shared"
    check_objects(objects["PodDisruptionBudget"] + objects["Deployment"])


def test_castai_values_files_work_unchanged():
    """The keys castai-ai-optimizer-proxy users set mean the same here."""
    objects = render({"castai": {"apiKeySecretRef": "castai-ai-optimizer-proxy", "clusterID": "c-1"},
                      "createNamespace": True, "fullnameOverride": "castai-ai-optimizer-proxy",
                      "service": {"port": 443, "targetPort": 8080}, "additionalEnv": {"X": "1"}})
    check_objects([o for objs in objects.values() for o in objs])
    proxy = container(objects)
    assert proxy["envFrom"] == [{"secretRef": {"name": "castai-ai-optimizer-proxy"}}]
    assert objects["Service"][0]["metadata"]["name"] == "castai-ai-optimizer-proxy"


def test_redis_without_a_shared_secret_key_is_refused():
    with pytest.raises(TemplateError, match="proxy.secretKey"):
        render({"proxy": {"storeUrl": "redis://redis:6379/0"}})


def test_the_edge_example_renders_valid_objects():
    objects = render(EDGE)
    check_objects([o for objs in objects.values() for o in objs])
    assert objects["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1


@pytest.mark.skipif(shutil.which("helm") is None, reason="the helm binary is not installed")
def test_helm_itself_renders_the_same_kinds(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(ALL_OPTIONS))
    out = subprocess.run(["helm", "template", "gw", str(CHART), "-n", "castai-llms", "-f", str(values)],
                         check=True, capture_output=True, text=True).stdout
    docs = documents(out)
    check_objects(docs)
    assert sorted(d["kind"] for d in docs) == sorted(k for k, objs in render(ALL_OPTIONS).items() for _ in objs)
