"""Registry validation and indexing without HTTP."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config import ProviderItem
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.upstream.registry import Registry, validate
from proxy.upstream.vault import Vault


def _item(**kw):
    return msgspec.convert({"name": "p", "supportedProvider": "OPENAI", "models": ["m"], **kw}, type=ProviderItem)


def test_index_by_model_and_file_wins(tmp_path):
    reg = Registry([_item(name="file", models=["m", "n"])], Vault("k", tmp_path), str(tmp_path / "r.db"))
    reg.upsert([_item(name="api", models=["m"])])
    assert [p.name for p in reg.by_model["m"]] == ["api", "file"] or [p.name for p in reg.by_model["m"]] == ["file", "api"]
    with pytest.raises(Conflict):
        reg.upsert([_item(name="file")])
    with pytest.raises(NotFound):
        reg.delete("ghost")
    reg.delete("api")
    assert [p.name for p in reg.by_model["m"]] == ["file"]
    reg.close()


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000/v1", "https://ollama.internal/v1", "http://[::1]:11434"])
def test_valid_urls(url):
    assert validate([_item(url=url)])


@pytest.mark.parametrize("url", ["javascript:alert(1)", "http://", "http://h/v1?x=1", "http://h/v1#f", "http://bad_host!/"])
def test_invalid_urls(url):
    with pytest.raises(InvalidRequest, match="url"):
        validate([_item(url=url)])


def test_env_key_resolved_per_use(tmp_path, monkeypatch):
    reg = Registry([_item(apiKey="env:P_KEY")], Vault("k", tmp_path), None)
    monkeypatch.setenv("P_KEY", "first")
    assert reg.by_name["p"].target().api_key == "first"
    monkeypatch.setenv("P_KEY", "rotated")
    assert reg.by_name["p"].target().api_key == "rotated"
    assert reg.by_name["p"].public()["apiKey"] == "env:P_KEY"


async def test_shared_registrations_are_stored_sealed_and_seen_by_another_registry(tmp_path, redis_url):
    from proxy.state.redis import RedisStore

    one_store, two_store = RedisStore(redis_url), RedisStore(redis_url)
    await one_store.start()
    await two_store.start()
    one = Registry([_item(name="file")], Vault("shared-secret", tmp_path), None, shared=one_store.providers)
    two = Registry([], Vault("shared-secret", tmp_path / "other"), None, shared=two_store.providers)
    await one.register([_item(name="api", models=["m"], apiKey="sk-secret-1234")])
    (raw, sealed), = await two_store.providers.rows()
    assert b"sk-secret" not in raw and "sk-secret" not in sealed
    await two.refresh()
    assert two.by_name["api"].target().api_key == "sk-secret-1234"
    with pytest.raises(Conflict):
        await one.register([_item(name="file")])
    with pytest.raises(NotFound):
        await two.remove("ghost")
    await two.remove("api")
    await one.refresh()
    assert [p.name for p in one.by_model["m"]] == ["file"]
    await one_store.close()
    await two_store.close()


def test_static_headers_are_sealed_on_disk_restored_on_load_and_listed_as_last4(tmp_path):
    db = str(tmp_path / "r.db")
    secret = "org-token-0123456789abcdef"
    reg = Registry([], Vault("k", tmp_path), db)
    reg.upsert([_item(name="api", headers={"OpenAI-Organization": secret})])
    assert reg.by_name["api"].public()["headers"] == {"OpenAI-Organization": "…cdef"}
    assert secret[:12] not in str(reg.by_name["api"].public())
    reg.close()
    assert secret[:12].encode() not in (tmp_path / "r.db").read_bytes()
    again = Registry([], Vault("k", tmp_path), db)
    assert again.by_name["api"].target().headers["OpenAI-Organization"] == secret
    again.close()


@pytest.mark.parametrize("kind, extra", [("BEDROCK", {"region": "us-east-1"}), ("AZURE", {"url": "https://a.example",
                                                                                          "apiVersion": "2024-10-21"}),
                                         ("OPENAI", {})])
def test_a_credentials_field_no_source_reads_is_refused_not_ignored(kind, extra):
    # BEDROCK and AZURE take cloud credentials from their chains, never from this field: AWS keys
    # pasted here would be stored and silently not used.
    with pytest.raises(InvalidRequest, match=r"providers\[0\]\.credentials: is not used by"):
        validate([_item(supportedProvider=kind, credentials='{"aws_access_key_id": "AKIA..."}', **extra)])
    assert validate([_item(supportedProvider="VERTEXAIGEMINI", url="https://v.example", credentials="env:SA")])
