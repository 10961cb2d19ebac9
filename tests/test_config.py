"""The config: decoded once, unknown fields refused with their path, env overlaid."""

from __future__ import annotations

import pytest

from proxy.config import Config, ConfigError, decode, load, resolve_secret


def test_embedded_defaults_serve_the_demo_model():
    cfg = load(None, env={})
    assert cfg.demo and cfg.listen.host == "127.0.0.1" and cfg.listen.port == 8080
    assert [(p.name, p.models) for p in cfg.providers] == [("mock", ("mock-gpt",))]


def test_yaml_and_json_decode_to_the_same_frozen_config(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("listen: {port: 9000}\nproviders:\n  - {name: a, supportedProvider: OPENAI, models: [m]}\n")
    json_file = tmp_path / "c.json"
    json_file.write_text('{"listen": {"port": 9000}, "providers": [{"name": "a", "supportedProvider": "OPENAI", "models": ["m"]}]}')
    a, b = load(str(yaml_file), env={}), load(str(json_file), env={})
    assert a == b and a.listen.port == 9000
    with pytest.raises(AttributeError):
        a.listen.port = 1


@pytest.mark.parametrize(("text", "path"), [
    ("listen: {port: 9000, colour: red}", "$.listen"),
    ("auth: {keys: [{id: a, sha256: xyz}]}", "$.auth.keys[0].sha256"),
    ("timeouts: {connect: fast}", "$.timeouts.connect"),
    ("providers: [{name: a, models: [m]}]", "supportedProvider"),
    ("routing: {qualityWeight: 2}", "$.routing.qualityWeight"),
    ("listen: {workers: 0}", "$.listen.workers"),
    ("unknownTop: 1", "unknownTop"),
    ("logLevel: verbose", "$.logLevel"),
    ("prices: {m: {input: 1}}", "$.prices"),
])
def test_bad_values_name_the_field(text, path):
    with pytest.raises(ConfigError) as err:
        decode(text.encode())
    assert path in str(err.value)


def test_bad_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="YAML"):
        decode(b"listen: [unclosed")
    with pytest.raises(ConfigError, match="JSON"):
        decode(b"{nope", suffix=".json")
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.yaml"), env={})


def test_env_overlay():
    env = {"PORT": "9100", "HEALTH_PORT": "9876", "API_KEY": "castai-key", "API_URL": "https://api.example",
           "CLUSTER_ID": "c-1", "API_KEY_FALLBACK": "fb", "ADMIN_API_KEY": "adm", "PROXY_SECRET_KEY": "s",
           "STORE_URL": "redis://127.0.0.1:6379/0", "DATA_DIR": "/tmp/x"}
    cfg = load(None, env=env)
    assert (cfg.listen.port, cfg.listen.health_port) == (9100, 9876)
    assert (cfg.castai.api_key, cfg.castai.api_url, cfg.castai.cluster_id) == ("castai-key", "https://api.example", "c-1")
    assert (cfg.auth.fallback_key, cfg.auth.admin_key, cfg.secret_key) == ("fb", "adm", "s")
    assert cfg.store_url == "redis://127.0.0.1:6379/0" and cfg.data_dir == "/tmp/x"
    with pytest.raises(ConfigError, match="PORT"):
        load(None, env={"PORT": "eighty"})


def test_env_secrets():
    assert resolve_secret("env:K", {"K": "v"}) == "v"
    assert resolve_secret("env:MISSING", {}) is None
    assert resolve_secret("plain", {}) == "plain"


def test_defaults_match_the_production_policy():
    t = Config().timeouts
    assert (t.connect, t.first_byte, t.idle, t.max_stream) == (5.0, 300.0, 120.0, 1800.0)
    assert Config().limits.max_body_bytes == 32 * 1024 * 1024
