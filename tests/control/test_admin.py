"""Provider registration through the control plane (docs/providers.md, issue point 5)."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config import Config, ProviderItem
from proxy.gateway import Gateway
from tests.conftest import ADMIN_KEY, openai_provider

ADMIN = {"X-API-Key": ADMIN_KEY}
PROVIDER_KEY = "sk-provider-secret-abcdefgh9876"
MESSAGES = [{"role": "user", "content": "hi"}]


def _item(fake, **extra) -> dict:
    return {**openai_provider(fake, name="reg", models=("reg-model",)), "apiKey": PROVIDER_KEY, **extra}


async def test_register_list_use_and_delete(gateway, fake_openai):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with gw.post("/v1/llm/providers", json={"providers": [_item(fake_openai)]}, headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    assert PROVIDER_KEY not in text and "…9876" in text
    async with gw.get("/v1/llm/providers", headers=ADMIN) as r:
        listed = (await r.json())["providers"]
    assert [(p["name"], p["apiKey"], p["source"]) for p in listed] == [("reg", "…9876", "api")]
    async with gw.post("/v1/chat/completions", json={"model": "reg-model", "messages": MESSAGES}) as r:
        assert r.status == 200
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    async with gw.session.delete(gw.url + "/v1/llm/providers/reg", headers=ADMIN) as r:
        assert r.status == 200
    async with gw.post("/v1/chat/completions", json={"model": "reg-model", "messages": MESSAGES}) as r:
        assert r.status == 404
    async with gw.session.delete(gw.url + "/v1/llm/providers/reg", headers=ADMIN) as r:
        assert r.status == 404


async def test_upsert_by_name(gateway, fake_openai):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    for models in (["one"], ["two", "three"]):
        async with gw.post("/v1/llm/providers", json={"providers": [_item(fake_openai, models=models)]},
                           headers=ADMIN) as r:
            assert r.status == 200
    assert sorted(gw.gw.registry.by_model) == ["three", "two"]


async def test_registrations_survive_a_restart_and_keys_are_encrypted_at_rest(gateway, fake_openai, tmp_path,
                                                                              aiohttp_server):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with gw.post("/v1/llm/providers", json={"providers": [_item(fake_openai)]}, headers=ADMIN) as r:
        assert r.status == 200
    await gw.server.close()
    for path in (tmp_path / "data").rglob("*"):  # the spool and dead-letter files live in subdirectories
        if not path.is_file():
            continue
        assert PROVIDER_KEY.encode() not in path.read_bytes(), path
        assert PROVIDER_KEY[-12:].encode() not in path.read_bytes(), path
    key_file = tmp_path / "data" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with again.post("/v1/chat/completions", json={"model": "reg-model", "messages": MESSAGES}) as r:
        assert r.status == 200
    assert fake_openai.requests[-1].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_secret_key_from_env_encrypts_without_a_key_file(tmp_path, fake_openai):
    cfg = msgspec.convert({"dataDir": str(tmp_path), "secretKey": "a passphrase"}, type=Config)
    gw = Gateway(cfg)
    gw.registry.upsert([msgspec.convert(_item(fake_openai), type=ProviderItem)])
    gw.registry.close()
    gw.store.close()
    assert not (tmp_path / "secret.key").exists()
    reopened = Gateway(cfg)
    assert reopened.registry.by_name["reg"].target().api_key == PROVIDER_KEY
    reopened.registry.close()
    reopened.store.close()
    with pytest.raises(ValueError, match="cannot be decrypted"):
        Gateway(msgspec.structs.replace(cfg, secret_key="another passphrase"))


async def test_env_keys_are_read_at_use_time_and_listed_as_their_reference(gateway, fake_openai, monkeypatch):
    monkeypatch.setenv("REG_PROVIDER_KEY", PROVIDER_KEY)
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    item = _item(fake_openai, apiKey="env:REG_PROVIDER_KEY")
    async with gw.post("/v1/llm/providers", json={"providers": [item]}, headers=ADMIN) as r:
        assert r.status == 200
    async with gw.get("/v1/llm/providers", headers=ADMIN) as r:
        assert (await r.json())["providers"][0]["apiKey"] == "env:REG_PROVIDER_KEY"
    async with gw.post("/v1/chat/completions", json={"model": "reg-model", "messages": MESSAGES}) as r:
        assert r.status == 200
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


BAD = [
    ({"supportedProvider": "NOPE"}, "providers[1].supportedProvider"),
    ({"url": None, "supportedProvider": "VLLM"}, "providers[1].url"),
    ({"models": []}, "providers[1].models"),
    ({"url": "not a url"}, "providers[1].url"),
    ({"url": "ftp://host/v1"}, "providers[1].url"),
    ({"url": "http://user:pw@host/v1"}, "providers[1].url"),
    ({"name": "has space"}, "providers[1].name"),
    ({"weight": 0}, "providers[1].weight"),
    ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "providers[1].headers"),
    ({"supportedProvider": "AZURE", "apiVersion": None}, "providers[1].apiVersion"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
async def test_one_bad_item_registers_none_and_names_the_field(gateway, fake_openai, change, field):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    good = _item(fake_openai, name="good")
    bad = {**_item(fake_openai, name="bad"), **change}
    async with gw.post("/v1/llm/providers", json={"providers": [good, bad]}, headers=ADMIN) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert field in error["message"]
    assert gw.gw.registry.by_name == {}


@pytest.mark.parametrize("body", [b"{}", b'{"providers": "x"}', b"nope", b'{"providers": [{"name": "x"}]}',
                                  b'{"providers": [], "extra": 1}'])
async def test_malformed_registrations_are_400(gateway, body):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with gw.post("/v1/llm/providers", data=body, headers=ADMIN) as r:
        assert r.status == 400


async def test_duplicate_names_in_one_request_and_config_providers_are_protected(gateway, fake_openai):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}, "providers": [openai_provider(fake_openai, name="file")]})
    async with gw.post("/v1/llm/providers", json={"providers": [_item(fake_openai), _item(fake_openai)]},
                       headers=ADMIN) as r:
        assert r.status == 400 and "duplicate" in (await r.json())["error"]["message"]
    async with gw.post("/v1/llm/providers", json={"providers": [_item(fake_openai, name="file")]},
                       headers=ADMIN) as r:
        assert r.status == 409
    async with gw.session.delete(gw.url + "/v1/llm/providers/file", headers=ADMIN) as r:
        assert r.status == 409
    async with gw.get("/v1/llm/providers", headers=ADMIN) as r:
        assert (await r.json())["providers"][0]["source"] == "config"


async def test_registering_a_known_name_is_audited_as_an_update(gateway, fake_openai):
    from structlog.testing import capture_logs

    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    with capture_logs() as logs:
        for models in (("reg-model",), ("reg-model", "reg-2")):
            item = {**_item(fake_openai), "models": list(models)}
            async with gw.post("/v1/llm/providers", json={"providers": [item]}, headers=ADMIN) as r:
                assert r.status == 200
        async with gw.post("/v1/llm/providers", json={"providers": [{"name": "bad"}]}, headers=ADMIN) as r:
            assert r.status == 400  # refused: nothing changed, nothing audited
    audits = [(e["action"], e["provider"], e["models"], e["key_last4"]) for e in logs if e["event"] == "audit"]
    assert audits == [("register", "reg", ["reg-model"], "…9876"), ("update", "reg", ["reg-model", "reg-2"], "…9876")]
    assert PROVIDER_KEY[:-4] not in repr(logs)
