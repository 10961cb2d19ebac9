"""Registry validation and indexing without HTTP."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config import ProviderItem
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.registry import Registry, validate
from proxy.vault import Vault


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
