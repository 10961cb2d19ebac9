"""Dockerfile lint (hadolint is not installable here): pinned bases, non-root, healthcheck,
exec-form entrypoint, and a default config the gateway accepts for a container."""

from __future__ import annotations

import json
import pathlib
import re

from proxy.config import decode

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
TEXT = (DEPLOY / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", TEXT)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_bases_are_one_exact_python_311_slim_release():
    """An exact patch release, the same in both stages, by digest too where one is given: a
    floating tag (`3.11-slim`, `latest`) would change the image under an unchanged Dockerfile."""
    bases = [rest.split()[0] for word, rest in instructions() if word == "FROM"]
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases[0]), bases[0]


def test_packages_are_installed_at_the_versions_constraints_txt_pins():
    runs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    assert runs and all("-c constraints.txt" in run for run in runs)
    copied = [rest.split()[:-1] for word, rest in instructions() if word == "COPY" and "--from" not in rest]
    assert any("constraints.txt" in sources for sources in copied)


def test_runs_as_a_numeric_non_root_user():
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_healthcheck_and_exec_form_entrypoint():
    found = dict((word, rest) for word, rest in instructions())
    assert "HEALTHCHECK" in found and "/healthz" in found["HEALTHCHECK"]
    assert json.loads(found["ENTRYPOINT"]) == ["ai-enabler-proxy"]
    assert json.loads(found["CMD"]) == ["serve", "--config", "/etc/ai-enabler-proxy/config.yaml"]
    assert "8080" in found["EXPOSE"] and "9876" in found["EXPOSE"]
    assert not any(word == "ADD" for word, _ in instructions())  # COPY only: no remote fetches
    assert "PYTHONDONTWRITEBYTECODE=1" in TEXT  # a read-only root file system stays clean


def test_the_image_config_listens_for_a_container_and_keeps_state_in_the_volume():
    cfg = decode((DEPLOY / "config.yaml").read_bytes())
    assert (cfg.listen.host, cfg.listen.port, cfg.listen.health_port) == ("0.0.0.0", 8080, 9876)
    assert cfg.data_dir == "/var/lib/ai-enabler-proxy" and 'VOLUME ["/var/lib/ai-enabler-proxy"]' in TEXT
    assert cfg.auth.castai_verification  # a non-loopback listener needs a way to check callers


def test_the_build_context_is_limited_to_what_the_image_needs():
    lines = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything out, then what the COPY lines need back in
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in kept, source
