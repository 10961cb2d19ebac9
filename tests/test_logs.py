"""Logs are JSON lines rendered by orjson."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp
import pytest


def test_json_lines_and_level_filter():
    code = ("from proxy import logs; import structlog; logs.configure('warning'); "
            "log = structlog.get_logger('t'); log.info('hidden'); log.warning('shown', n=1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["event"], line["level"], line["n"]) for line in lines] == [("shown", "warning", 1)]
    assert lines[0]["timestamp"].endswith("Z")


# -- the audit trail of the admin API -------------------------------------------------------
ADMIN_KEY = "admin-key-for-the-audit-test-4242"
PROVIDER_KEY = "sk-audit-provider-secret-abcdefgh9876"


# `warning`: a common production level hides info lines; the audit trail must not go with them
@pytest.mark.parametrize("log_level", ["info", "warning"])
async def test_a_registration_and_a_deletion_leave_two_audit_lines(tmp_path, fake_openai, log_level):
    from tests.procs import GatewayProcess

    gw = GatewayProcess(tmp_path / "gw", {"auth": {"adminKey": ADMIN_KEY}}, log_level=log_level)
    await gw.start()
    try:
        item = {"name": "reg", "supportedProvider": "OPENAI_COMPATIBLE", "url": fake_openai.url,
                "apiKey": PROVIDER_KEY, "models": ["reg-model"], "isHosted": True}
        async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as session:
            async with session.post(gw.url + "/v1/llm/providers", json={"providers": [item]}) as r:
                assert r.status == 200
            async with session.delete(gw.url + "/v1/llm/providers/reg") as r:
                assert r.status == 200
            metrics = await gw.metrics(session)
    finally:
        gw.terminate()
        await gw.wait()
    logs = gw.logs()
    lines = [json.loads(line) for line in gw.stdout.read_bytes().splitlines() if line.startswith(b"{")]
    audits = [line for line in lines if line["event"] == "audit"]
    assert [(a["action"], a["provider"], a["type"], a["models"], a["key_last4"]) for a in audits] == [
        ("register", "reg", "OPENAI_COMPATIBLE", ["reg-model"], "…9876"),
        ("delete", "reg", "OPENAI_COMPATIBLE", ["reg-model"], "…9876")]
    assert all(a["admin_key_id"] == "admin_key" and a["client"] == "127.0.0.1" for a in audits)
    assert PROVIDER_KEY[:-4].encode() not in logs and ADMIN_KEY[:-4].encode() not in logs
    assert metrics['aigw_admin_changes_total{action="register"}'] == 1
    assert metrics['aigw_admin_changes_total{action="delete"}'] == 1


def test_log_level_from_the_environment(tmp_path):
    from proxy.config import ConfigError, load

    assert load(None, env={"LOG_LEVEL": "DEBUG"}).log_level == "debug"
    assert load(None, env={}).log_level == "info"
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load(None, env={"LOG_LEVEL": "loud"})
