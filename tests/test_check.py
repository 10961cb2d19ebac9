"""`ai-enabler-proxy check --config FILE`, as a user runs it: a real process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.check import masked_url
from tests.test_cli import _env

PROVIDER_SECRET = "sk-check-secret-abcdefghijklmnop1234"


def _check(tmp_path, config: str, **env) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(path)], env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60)


def test_check_prints_what_the_gateway_would_run_with_secrets_masked(tmp_path):
    done = _check(tmp_path, f"""
listen: {{host: 127.0.0.1, port: 9000, workers: 2, healthPort: 9001}}
storeUrl: redis://app:hunter2-password@127.0.0.1:6379/0
telemetry: {{otlpUrl: "http://collector:4318"}}
providers:
  - {{name: main, supportedProvider: OPENAI, apiKey: {PROVIDER_SECRET}, models: [gpt-4o-mini, gpt-4o]}}
""", API_KEY="castai-key-abcdefgh5678")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "listen: http://127.0.0.1:9000 (2 workers)" in out and "probes: http://127.0.0.1:9001" in out
    assert "main: OPENAI (default URL) models=gpt-4o-mini,gpt-4o key=…1234" in out
    assert "store: redis redis://app:***@127.0.0.1:6379/0" in out
    assert "castai (" in out and "key …5678" in out and "otlp (http://collector:4318)" in out
    for secret in (PROVIDER_SECRET[:-4], "hunter2", "castai-key-abcd"):
        assert secret not in out + done.stderr


@pytest.mark.parametrize(("config", "error"), [
    ("providers: [{name: x, supportedProvider: NOPE, models: [m]}]", "$.providers[0].supportedProvider"),
    ("listen: {host: 0.0.0.0}", "refusing to listen on 0.0.0.0 with no caller keys"),
    ("listen: {workers: 0}", "$.listen.workers"),
    ("providers: [", "not valid YAML"),
])
def test_check_exits_non_zero_on_errors(tmp_path, config, error):
    done = _check(tmp_path, config)
    assert done.returncode == 2 and error in done.stderr and not done.stdout
    assert "Traceback" not in done.stderr


def test_masked_url_hides_only_the_password():
    assert masked_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert masked_url("rediss://user:pw@h/1?prefix=x") == "rediss://user:***@h/1?prefix=x"
    assert masked_url("redis://h:6379") == "redis://h:6379"


def test_masked_url_keeps_every_host_of_a_sentinel_or_cluster_url_and_hides_a_lone_user():
    # urlsplit's port parsing fails on "h1:26379,h2:26379": `check` must not crash on a URL
    # `serve` accepts, nor drop the brackets of an IPv6 host
    assert (masked_url("redis+sentinel://app:pw@h1:26379,h2:26379/mymaster/0")
            == "redis+sentinel://app:***@h1:26379,h2:26379/mymaster/0")
    assert masked_url("rediss+cluster://:pw@[::1]:7000,[::1]:7001") == "rediss+cluster://:***@[::1]:7000,[::1]:7001"
    assert masked_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    # a token given as the user alone is a secret as much as a password
    assert masked_url("https://tok3n-secret-value@collector:4318") == "https://***@collector:4318"


def test_check_with_a_sentinel_store_url_masks_its_password(tmp_path):
    done = _check(tmp_path, "storeUrl: redis+sentinel://app:hunter2-password@s1:26379,s2:26379/mymaster/0\n",
                  PROXY_SECRET_KEY="k" * 32)
    assert done.returncode == 0, done.stderr
    assert "store: redis redis+sentinel://app:***@s1:26379,s2:26379/mymaster/0" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr
