"""Fixtures for the provider tests: a replaying fake upstream on loopback."""

from __future__ import annotations

import pytest

from tests.fakes.replay import Replay


@pytest.fixture
async def replay(aiohttp_server) -> Replay:
    return await Replay().start(aiohttp_server)


@pytest.fixture
async def replay2(aiohttp_server) -> Replay:
    """A second fake upstream, for failover cases."""
    return await Replay().start(aiohttp_server)
