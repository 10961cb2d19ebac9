"""The chart as a drop-in for castai-ai-optimizer-proxy, and its optional parts: Ingress, schema,
restarts on a changed Secret, extras, monitoring, NetworkPolicy, NOTES and the Grafana dashboard.

Rendered by tests/deploy/gotemplate.py (values checked against values.schema.json as Helm does);
test_chart_helm.py repeats the main cases with helm itself.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from tests.deploy.chartkit import CASTAI_KEY, CHART, ROOT, container, every, load, notes, render
from tests.deploy.conftest import check_objects
from tests.deploy.gotemplate import TemplateError, merge

# The flags Cast AI's documentation gives for its chart, and the address its apps call.
CASTAI_FLAGS = {"castai": {"apiKey": "castai-key-for-tests", "clusterID": "a24cd53c-0d56-4422-88e6-f82f78ef8f20",
                           "apiURL": "https://api.cast.ai"}, "createNamespace": True}
OFFLINE = {"castai": {"enabled": False},
           "proxy": {"config": {"auth": {"castaiVerification": False,
                                         "keys": [{"id": "team-a", "sha256": "0" * 64}]}}}}


@pytest.mark.parametrize("release", ["castai-ai-optimizer-proxy", "ai-gateway"])
def test_castai_documented_flags_give_the_service_castai_documents(release):
    objects = render(CASTAI_FLAGS, namespace="castai-agent", release=release)
    check_objects(every(objects))
    (service,) = objects["Service"]
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == ("castai-ai-optimizer-proxy",
                                                                               "castai-agent")
    assert [p["port"] for p in service["spec"]["ports"]] == [443]
    # createNamespace makes castai-llms as Cast AI's chart does, never the release's own
    # namespace: castai-agent exists already, and Helm would refuse to adopt it.
    assert [ns["metadata"]["name"] for ns in objects["Namespace"]] == ["castai-llms"]
    assert "castai-ai-optimizer-proxy.castai-agent.svc.cluster.local:443" in notes(CASTAI_FLAGS, "castai-agent")


def test_name_overrides():
    named = render({"fullnameOverride": "llm", **CASTAI_KEY})
    assert {o["metadata"]["name"] for o in every(named) if o["kind"] != "Namespace"} == {"llm"}
    short = render({"nameOverride": "gateway", **CASTAI_KEY})
    assert short["Service"][0]["metadata"]["name"] == "gw-gateway"
    assert short["Service"][0]["spec"]["selector"]["app.kubernetes.io/name"] == "gateway"


@pytest.mark.parametrize("typo", [
    {"replicaCout": 2},
    {"service": {"prot": 443}},
    {"castai": {"apiKye": "k"}},
    {"ingress": {"hosts": [{"host": "a", "paths": [{"path": "/", "pathType": "prefix"}]}]}},
    {"autoscaling": {"enabled": "yes"}},
    {"proxy": {"storeUrl": "redis//redis:6379"}},
    {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
])
def test_the_schema_refuses_a_typo(typo):
    with pytest.raises(TemplateError, match="schema"):
        render(merge(CASTAI_KEY, typo))


def test_a_castai_key_is_required_unless_castai_is_off():
    with pytest.raises(TemplateError, match="castai"):
        render()
    with pytest.raises(TemplateError, match="castai"):
        render({"castai": {"apiKey": ""}})
    render({"castai": {"apiKeySecretRef": "castai-credentials"}})  # either one will do


def test_an_offline_gateway_sends_nothing_to_castai():
    objects = render(merge(OFFLINE, {"castai": {"apiKey": "left-over-key", "apiKeySecretRef": "old"}}))
    check_objects(every(objects))
    proxy = container(objects)
    assert {e["name"] for e in proxy["env"]} == {"HEALTH_PORT"}
    assert "envFrom" not in proxy and "Secret" not in objects  # the left-over key is not shipped
    assert "castai.enabled is false" in notes(OFFLINE)


@pytest.mark.parametrize(("change", "message"), [
    ({"proxy": {"config": {"auth": {"castaiVerification": True}}}}, "castaiVerification: false"),
    ({"proxy": {"config": {"auth": {"keys": []}}}}, "auth.keys"),
])
def test_an_offline_gateway_that_could_not_start_is_refused(change, message):
    with pytest.raises(TemplateError, match=message):
        render(merge(OFFLINE, change))


def _checksums(values):
    (deployment,) = render(values)["Deployment"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations["checksum/config"], annotations["checksum/secret"]


def test_a_rotated_key_changes_the_pod_template_so_pods_restart():
    config, secret = _checksums(CASTAI_KEY)
    rotated_config, rotated_secret = _checksums({"castai": {"apiKey": "rotated-key"}})
    assert rotated_config == config and rotated_secret != secret
    assert _checksums(merge(CASTAI_KEY, {"proxy": {"adminApiKey": "new-admin"}}))[1] != secret
    assert _checksums(merge(CASTAI_KEY, {"proxy": {"workers": 3}}))[0] != config


def test_ingress_routes_to_the_service():
    values = merge(CASTAI_KEY, {"ingress": {
        "enabled": True, "className": "nginx", "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [{"host": "llm.example.com", "paths": [{"path": "/openai", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]}})
    objects = render(values)
    check_objects(every(objects))
    (ingress,) = objects["Ingress"]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]
    (rule,) = spec["rules"]
    assert rule["host"] == "llm.example.com"
    (path,) = rule["http"]["paths"]
    assert path["backend"] == {"service": {"name": "castai-ai-optimizer-proxy", "port": {"name": "http"}}}
    assert "Ingress" not in render(CASTAI_KEY)


def test_extra_env_volumes_and_mounts():
    values = merge(CASTAI_KEY, {
        "extraEnv": [{"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "openai"}}}],
        "extraVolumes": [{"name": "ca", "secret": {"secretName": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}]})
    objects = render(values)
    check_objects(every(objects))
    proxy = container(objects)
    assert proxy["env"][-1] == values["extraEnv"][0]
    assert proxy["volumeMounts"][-1] == values["extraVolumeMounts"][0]
    assert objects["Deployment"][0]["spec"]["template"]["spec"]["volumes"][-1] == values["extraVolumes"][0]


def test_egress_proxy_no_proxy_and_a_ca_bundle_from_a_configmap():
    values = merge(CASTAI_KEY, {"egress": {"proxySecretRef": {"name": "egress", "key": "url"},
                                           "noProxy": [".svc.cluster.local", "10.0.0.0/8", "169.254.169.254"],
                                           "caBundle": {"configMap": "corporate-ca", "key": "bundle.pem"}}})
    objects = render(values)
    check_objects(every(objects))
    env = {e["name"]: e for e in container(objects)["env"]}
    secret = {"secretKeyRef": {"name": "egress", "key": "url"}}
    assert env["HTTPS_PROXY"]["valueFrom"] == secret and env["HTTP_PROXY"]["valueFrom"] == secret
    assert env["NO_PROXY"]["value"] == ".svc.cluster.local,10.0.0.0/8,169.254.169.254"
    assert {"name": "egress-ca", "mountPath": "/etc/ai-enabler-proxy-egress", "readOnly": True} in \
        container(objects)["volumeMounts"]
    volumes = objects["Deployment"][0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "egress-ca", "configMap": {"name": "corporate-ca"}} in volumes
    config = yaml.safe_load(objects["ConfigMap"][0]["data"]["config.yaml"])
    assert config["egress"] == {"caFile": "/etc/ai-enabler-proxy-egress/bundle.pem"}
    plain = {e["name"]: e for e in container(render(merge(CASTAI_KEY, {"egress": {"proxy": "http://proxy:3128"}})))["env"]}
    assert plain["HTTPS_PROXY"]["value"] == plain["HTTP_PROXY"]["value"] == "http://proxy:3128"
    assert "NO_PROXY" not in plain and "HTTPS_PROXY" not in {e["name"] for e in container(render(CASTAI_KEY))["env"]}
    with pytest.raises(TemplateError, match="both set"):
        render(merge(values, {"proxy": {"config": {"egress": {"proxy": ""}}}}))


MONITORING = merge(CASTAI_KEY, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                                            "prometheusRule": {"enabled": True}}})


def test_the_service_monitor_scrapes_the_probe_port():
    objects = render(MONITORING)
    check_objects(every(objects))
    (service,) = objects["Service"]
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "metrics": "healthz"}
    (monitor,) = objects["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [p["name"] for p in render(CASTAI_KEY)["Service"][0]["spec"]["ports"]] == ["http"]


def _rules(values=MONITORING) -> dict[str, dict]:
    (rule,) = render(values)["PrometheusRule"]
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_the_alerts_cover_errors_telemetry_drops_and_open_circuits_of_this_release():
    rules = _rules()
    assert sorted(rules) == ["AIGatewayCircuitOpen", "AIGatewayHighErrorRatio", "AIGatewayTelemetryDrops"]
    for rule in rules.values():
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        assert 'namespace="castai-llms",service="castai-ai-optimizer-proxy"' in expr
    assert "> 0.05" in rules["AIGatewayHighErrorRatio"]["expr"] and 'status=~"5.."' in rules[
        "AIGatewayHighErrorRatio"]["expr"]
    assert "{{ $labels.provider }}" in rules["AIGatewayCircuitOpen"]["annotations"]["summary"]
    more = merge(MONITORING, {"metrics": {"prometheusRule": {"additionalRules": [
        {"alert": "Mine", "expr": "vector(1)"}]}}})
    assert "Mine" in _rules(more)


def test_the_alerts_use_metrics_the_gateway_documents():
    """Names from docs/metrics.md, the gateway's list of its metrics."""
    doc = ROOT / "docs" / "metrics.md"
    if not doc.exists():
        pytest.skip("docs/metrics.md (the gateway's metric names) is not in this checkout")
    documented = set(re.findall(r"^\| `([a-z_]+)`", doc.read_text(), re.M))
    used = {name for rule in _rules().values() for name in re.findall(r"\b(aigw_[a-z_]+)\b", rule["expr"])}
    assert used and used <= documented, used - documented


def test_network_policy_admits_the_api_and_probe_ports_and_restricts_egress_when_asked():
    peers = [{"namespaceSelector": {"matchLabels": {"llm-access": "true"}}}]
    values = merge(CASTAI_KEY, {"networkPolicy": {"enabled": True, "ingressFrom": peers}})
    objects = render(values)
    check_objects(every(objects))
    (policy,) = objects["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec
    api, probes = spec["ingress"]
    ports = {p["name"] for p in container(objects)["ports"]}
    assert api["ports"][0]["port"] == "http" and probes["ports"][0]["port"] == "healthz" and {"http", "healthz"} <= ports
    assert api["from"] == peers and "from" not in probes
    redis = {"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}], "ports": [{"port": 6379, "protocol": "TCP"}]}
    strict = render(merge(values, {"networkPolicy": {"restrictEgress": True, "extraEgress": [redis]}}))
    egress = strict["NetworkPolicy"][0]["spec"]["egress"]
    assert [p["port"] for rule in egress[:2] for p in rule["ports"]] == [53, 53, 443] and egress[2] == redis
    check_objects(strict["NetworkPolicy"])


@pytest.mark.parametrize(("values", "warned"), [
    ({"autoscaling": {"enabled": True, "minReplicas": 3}}, True),
    ({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}}, False),
    ({"replicaCount": 2}, True),
    ({"replicaCount": 1}, False),
    ({"autoscaling": {"enabled": True, "minReplicas": 3}, "proxy": {"storeUrl": "redis://r:6379/0",
                                                                     "secretKey": "s"}}, False),
])
def test_notes_warn_about_many_replicas_without_redis(values, warned):
    text = notes(merge(CASTAI_KEY, values))
    assert ("WARNING" in text) is warned
    if warned:
        assert "proxy.storeUrl" in text and "per pod" in text


def test_castai_values_file_installs_unchanged():
    objects = render(load(CHART / "ci" / "castai-values.yaml"), namespace="castai-agent")
    check_objects(every(objects))
    assert objects["Service"][0]["metadata"]["name"] == "castai-ai-optimizer-proxy"
    proxy = container(objects)
    assert [c["name"] for c in objects["Deployment"][0]["spec"]["template"]["spec"]["containers"]] == ["proxy"]
    assert proxy["envFrom"] == [{"secretRef": {"name": "castai-ai-optimizer-proxy-credentials"}}]
    assert objects["Deployment"][0]["spec"]["template"]["metadata"]["labels"]["team"] == "ml"  # podLabels
    assert "Deployment" not in render(merge(CASTAI_KEY, {"deploy": False}))


DASHBOARD = {"title": "AI Enabler Proxy", "uid": "ai-enabler-proxy", "schemaVersion": 39, "panels": []}


def test_the_dashboard_configmap_carries_the_chart_copy_for_grafana_sidecar(tmp_path):
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "dashboards").mkdir(exist_ok=True)
    (chart / "dashboards" / "ai-enabler-proxy.json").write_text(json.dumps(DASHBOARD, indent=2))
    values = merge(CASTAI_KEY, {"grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                                     "annotations": {"grafana_folder": "LLM"}}})
    objects = render(values, chart=chart)
    configmaps = {c["metadata"]["name"]: c for c in objects["ConfigMap"]}
    board = configmaps["castai-ai-optimizer-proxy-dashboard"]
    check_objects([board])
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert json.loads(board["data"]["ai-enabler-proxy.json"]) == DASHBOARD


def test_the_dashboard_without_its_file_fails_saying_what_to_copy(tmp_path):
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "dashboards", ignore_errors=True)
    with pytest.raises(TemplateError, match="cp deploy/grafana/dashboard.json"):
        render(merge(CASTAI_KEY, {"grafanaDashboard": {"enabled": True}}), chart=chart)


def test_the_chart_copy_of_the_dashboard_is_the_dashboard():
    source, copy = ROOT / "deploy" / "grafana" / "dashboard.json", CHART / "dashboards" / "ai-enabler-proxy.json"
    if not source.exists():
        pytest.skip("deploy/grafana/dashboard.json is not in this checkout")
    assert copy.exists(), f"cp {source.relative_to(ROOT)} {copy.relative_to(ROOT)}"
    assert copy.read_bytes() == source.read_bytes(), f"the chart's copy is stale: cp {source} {copy}"


def test_the_chart_installs_its_own_dashboard_copy():
    copy = CHART / "dashboards" / "ai-enabler-proxy.json"
    if not copy.exists():
        pytest.skip("no dashboards/ai-enabler-proxy.json in the chart yet")
    objects = render(merge(CASTAI_KEY, {"grafanaDashboard": {"enabled": True}}))
    (board,) = [c for c in objects["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard")]
    check_objects([board])
    assert json.loads(board["data"]["ai-enabler-proxy.json"]) == json.loads(copy.read_text())
