"""The usage record: the camelCase wire names of docs/records.md, round trip."""

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


def test_stamp_is_the_datetime_text_of_the_time():
    """`stamp` formats the date and time of day once per second: it must still give, for every
    time, exactly what datetime gives, rounding to the microsecond included."""
    import datetime
    import random
    import time

    from proxy.telemetry.record import stamp

    def reference(ts: float) -> str:
        when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    rng = random.Random(7)
    now = int(time.time())
    cases = [now + rng.uniform(-1e5, 1e5) for _ in range(20_000)]
    cases += [now + k / 1000 + d for k in range(0, 1000, 7) for d in (0, 4.9999e-7, 5e-7, -5e-7, 0.0009999995)]
    cases += [now + 0.9999995, now + 0.99999949, now + 0.99999951, 0.0, 1e-7, -0.0004, -1.5, 2**31 + 0.9999996]
    rng.shuffle(cases)
    assert [stamp(ts) for ts in cases] == [reference(ts) for ts in cases]
