"""Fixtures for the provider tests: a replaying fake upstream and a fake Google on loopback."""

from __future__ import annotations

import pytest

from proxy.providers import credentials
from tests.fakes.google import FakeGoogle
from tests.fakes.replay import Replay


@pytest.fixture
async def replay(aiohttp_server) -> Replay:
    return await Replay().start(aiohttp_server)


@pytest.fixture
async def replay2(aiohttp_server) -> Replay:
    """A second fake upstream, for failover cases."""
    return await Replay().start(aiohttp_server)


@pytest.fixture
async def google(aiohttp_server, tmp_path, monkeypatch) -> FakeGoogle:
    """Google's token endpoint and Vertex (tests/fakes/google.py), with no Google credential in the
    environment (no ADC file, no metadata server, no gcloud login) and no credential cached."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP",
                 "NO_GCE_CHECK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    credentials.forget()
    yield await FakeGoogle().start(aiohttp_server)
    credentials.forget()
