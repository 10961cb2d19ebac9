"""Kubernetes schema validation for the deploy tests: the bundled schemas of kubernetes-validate
(no network), strict (unknown fields are errors), for the oldest and a recent supported version;
the Prometheus Operator's kinds against tests/deploy/crds.py."""

from __future__ import annotations

import pytest
import yaml

VERSIONS = ("1.29", "1.33")  # 1.29: the first with native sidecars (examples/sidecar.yaml)


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def check_objects(docs: list[dict]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    import jsonschema

    from tests.deploy.crds import SCHEMAS

    for doc in docs:
        if doc["kind"] in SCHEMAS:
            try:
                jsonschema.validate(doc, SCHEMAS[doc["kind"]])
            except jsonschema.ValidationError as exc:
                raise AssertionError(f"{doc['kind']}/{doc['metadata'].get('name')}: {exc.message} "
                                     f"at {list(exc.absolute_path)}") from None
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{doc['kind']}/{doc['metadata'].get('name')} is not valid for "
                                     f"Kubernetes {version}: {exc.message} at {list(exc.path)}") from None
