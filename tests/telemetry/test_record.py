"""The usage record: the camelCase wire names of DESIGN §11, round trip."""

from __future__ import annotations

import orjson

from proxy.telemetry.record import UsageRecord, decode, encode
from tests.telemetry.helpers import record

FIELDS = ("id, time, clusterId, apiKeyId, provider, providerType, providerKeyLast4, modelRequested, modelServed, "
          "stream, status, errorType, promptTokens, completionTokens, cachedTokens, reasoningTokens, totalTokens, "
          "tokensEstimated, latencyMs, ttftMs, proxyOverheadMs, costUsd, savingsUsd, attempts, recovered, cacheHit, "
          "tags").split(", ")


def test_the_wire_names_are_the_design_s():
    assert list(orjson.loads(encode(record(1))))[: len(FIELDS)] == FIELDS
    assert UsageRecord.__struct_encode_fields__[: len(FIELDS)] == tuple(FIELDS)


def test_round_trip():
    r = record(3, tags=["a:b"], ttft_ms=None)
    assert decode(encode(r)) == r
