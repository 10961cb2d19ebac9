"""The Helm chart renders to valid Kubernetes objects, for the defaults and for every option.

tests/deploy/gotemplate.py renders it here (the chart keeps to the part of the template language
it supports, and the values are checked against values.schema.json as Helm does);
test_chart_helm.py renders it with helm itself. Every object is validated against the
Kubernetes schemas, and the config it carries is decoded by the gateway.
"""

from __future__ import annotations

import base64

import pytest

from proxy.config import decode
from tests.deploy.chartkit import CASTAI_KEY, CHART, EXAMPLES, container, every, load, render
from tests.deploy.conftest import check_objects
from tests.deploy.gotemplate import TemplateError, merge

ALL_OPTIONS = load(CHART / "ci" / "all-options-values.yaml")
EDGE = merge(load(EXAMPLES / "edge-redis-values.yaml"), CASTAI_KEY)
SENTINEL = merge(load(EXAMPLES / "edge-sentinel-values.yaml"), CASTAI_KEY)


def test_defaults_render_valid_objects_that_are_non_root_and_read_only():
    """The defaults plus the one thing they lack, the Cast AI key (here an existing Secret's name)."""
    objects = render({"castai": {"apiKeySecretRef": "castai-credentials"}})
    assert sorted(objects) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    check_objects(every(objects))
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
    # Nothing secret given to the chart: no Secret of its own, only the Cast AI key's.
    assert proxy["envFrom"] == [{"secretRef": {"name": "castai-credentials"}}]


def test_the_config_in_the_configmap_is_one_the_gateway_accepts():
    for values in (CASTAI_KEY, ALL_OPTIONS, EDGE, SENTINEL):
        (configmap,) = render(values)["ConfigMap"]
        cfg = decode(configmap["data"]["config.yaml"].encode())
        assert (cfg.listen.host, cfg.listen.port, cfg.listen.health_port) == ("0.0.0.0", 8080, 9876)
        assert cfg.data_dir == "/var/lib/ai-enabler-proxy" and cfg.auth.castai_verification


def test_every_option_renders_valid_objects():
    objects = render(ALL_OPTIONS)
    assert sorted(objects) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "Namespace",
                               "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Secret", "Service",
                               "ServiceAccount", "ServiceMonitor"]
    check_objects(every(objects))
    (secret,) = objects["Secret"]
    plain = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert plain == {"API_KEY": "castai-api-key-for-tests", "API_KEY_FALLBACK": "fallback-caller-key",
                     "ADMIN_API_KEY": "admin-key-for-tests", "PROXY_SECRET_KEY": "shared-secret-for-tests",
                     "STORE_URL": "redis://redis.llm.svc:6379/0", "CACHE_URL": "redis://redis-cache.llm.svc:6379/1",
                     "OPENAI_API_KEY": "sk-for-tests"}
    proxy = container(objects)
    assert [ref["secretRef"]["name"] for ref in proxy["envFrom"]] == ["gw-llm-gateway", "castai-credentials",
                                                                       "provider-keys"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in proxy["env"]}
    assert env == {"API_URL": "https://api.eu.cast.ai", "CLUSTER_ID": "11111111-2222-3333-4444-555555555555",
                   "HEALTH_PORT": "9876", "LOG_FORMAT": "json",
                   "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}}}
    (deployment,) = objects["Deployment"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert deployment["metadata"]["labels"]["team"] == "platform"
    assert deployment["metadata"]["annotations"] == {"owner": "platform-team"}
    (hpa,) = objects["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"], len(hpa["spec"]["metrics"])) == (3, 12, 2)
    assert objects["Namespace"][0]["metadata"]["name"] == "castai-llms"


def test_pdb_max_unavailable_and_an_existing_service_account():
    objects = render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
                      "serviceAccount": {"create": False, "name": "shared"}, **CASTAI_KEY})
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
    check_objects(every(objects))
    proxy = container(objects)
    assert proxy["envFrom"] == [{"secretRef": {"name": "castai-ai-optimizer-proxy"}}]
    assert objects["Service"][0]["metadata"]["name"] == "castai-ai-optimizer-proxy"


def test_redis_without_a_shared_secret_key_is_refused():
    with pytest.raises(TemplateError, match="proxy.secretKey"):
        render({"proxy": {"storeUrl": "redis://redis:6379/0"}, **CASTAI_KEY})


def test_the_edge_example_renders_valid_objects():
    objects = render(EDGE)
    check_objects(every(objects))
    assert objects["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1


def test_the_sentinel_example_reaches_redis_through_its_sentinels():
    objects = render(SENTINEL)
    check_objects(every(objects))
    (secret,) = objects["Secret"]
    store_url = base64.b64decode(secret["data"]["STORE_URL"]).decode()
    assert store_url.startswith("redis+sentinel://") and store_url.count(":26379") == 3
    assert store_url.split("/")[-2:] == ["mymaster", "0"]
    assert "PROXY_SECRET_KEY" in secret["data"]  # every replica opens the keys the others sealed
