"""Schemas for the Prometheus Operator objects the chart renders (monitoring.coreos.com/v1).

kubernetes-validate knows the built-in kinds only. These are written from the operator's API
reference for ServiceMonitor and PrometheusRule, reduced to the fields this chart can render,
and strict like the CRDs' structural schemas: an unknown or misspelt field is an error, as the
API server's field validation would report it.
"""

from __future__ import annotations

# The operator's Duration: units from years to milliseconds, largest first, e.g. 1h30m, 15s.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                         r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _strict(properties: dict, required: tuple = ()) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


METADATA = {"type": "object", "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": STRINGS, "annotations": STRINGS}}

LABEL_SELECTOR = _strict({"matchLabels": STRINGS, "matchExpressions": {"type": "array"}})

SERVICE_MONITOR = _strict({
    "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
    "metadata": METADATA,
    "spec": _strict({
        "selector": LABEL_SELECTOR,
        "namespaceSelector": _strict({"any": {"type": "boolean"}, "matchNames": {"type": "array",
                                                                                 "items": {"type": "string"}}}),
        "jobLabel": {"type": "string"},
        "endpoints": {"type": "array", "minItems": 1, "items": _strict({
            "port": {"type": "string"}, "targetPort": {"type": ["string", "integer"]},
            "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
            "interval": DURATION, "scrapeTimeout": DURATION, "honorLabels": {"type": "boolean"}})},
    }, ("selector", "endpoints")),
}, ("apiVersion", "kind", "metadata", "spec"))

RULE = {"type": "object", "additionalProperties": False, "required": ["expr"],
        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
        "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                       "expr": {"type": ["string", "integer"], "minLength": 1},
                       "for": DURATION, "keep_firing_for": DURATION, "labels": STRINGS, "annotations": STRINGS}}

PROMETHEUS_RULE = _strict({
    "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
    "metadata": METADATA,
    "spec": _strict({"groups": {"type": "array", "items": _strict({
        "name": {"type": "string", "minLength": 1}, "interval": DURATION,
        "rules": {"type": "array", "items": RULE}}, ("name", "rules"))}}, ("groups",)),
}, ("apiVersion", "kind", "metadata", "spec"))

SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
