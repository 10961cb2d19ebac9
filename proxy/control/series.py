"""Usage over time (docs/records.md, the report): the report's figures per time bucket and group, computed in SQL.

    interval  N then s, m, h or d (`1m`, `5m`, `1h`, `1d`). Buckets are aligned to multiples of
              the interval since the Unix epoch: bucket b holds [b × seconds, (b + 1) × seconds), the
              bucket of CAST(ts / seconds AS INTEGER), so `1h` buckets start on the hour and `1d`
              buckets at midnight UTC. A point's `t` is its bucket's start (RFC 3339, UTC).
    window    [from, to), half-open, as in the report: a record at exactly `from` is in, one at
              exactly `to` is out. The first and last buckets may be cut by the window; they
              then count only the records inside it, but keep their bucket's own start as `t`.

Groups and filters are the report's (`proxy.control.report`); untagged records are in no tag
series. Every series has a point for every bucket the window touches, zeros where nothing
happened, so a chart can stack the series as they come. A window of more than MAX_BUCKETS
buckets is refused (400 naming `interval`).

How: a plain `GROUP BY key, CAST(ts / seconds AS INTEGER)` makes SQLite sort every record of the
window in a temporary B-tree (0.75–1.7 s for a million). Instead one statement lists the groups
with a loose index scan (a `MIN(key) WHERE key > previous` hop per group), generates the
buckets with a recursive CTE, and aggregates each (group, bucket) with a range seek on the
grouping's covering index (`key = ?, ts in [lo, hi)`): every record is read once, in index
order, nothing is sorted, and no record reaches Python, only one row per (group, bucket).
The cost is O(records + groups × buckets × log records): 0.2–0.75 s for 30 days of a million
records (tests/telemetry/test_series.py measures it). No index is added: the report's covering
indexes (store.py) serve both.
"""

from __future__ import annotations

import math
import re

import orjson

from proxy.control import report as reporting
from proxy.errors import InvalidRequest
from proxy.telemetry.store import GROUP_COLUMNS

MAX_BUCKETS = 5000
_INTERVAL = re.compile(r"^([1-9]\d{0,5})([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Money as integer nano-dollars: json_array would print a REAL with 15 digits only.
_AGG = ("json_array(COUNT(*), COALESCE(SUM(status NOT IN ('completed', 'client_aborted')), 0), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        "CAST(round(TOTAL(cost_usd) * 1e9) AS INTEGER), CAST(round(TOTAL(savings_usd) * 1e9) AS INTEGER))")
_SQL = """WITH RECURSIVE
  n(b, lo, hi) AS (SELECT ?, ?, min(? * ?, ?)
                   UNION ALL SELECT b + 1, (b + 1) * ?, min((b + 2) * ?, ?) FROM n WHERE b < ?),
  keys(k) AS (SELECT MIN({key}) FROM {table} WHERE {span}
              UNION ALL SELECT (SELECT MIN({key}) FROM {table} WHERE {key} > k AND {span}) FROM keys
              WHERE k IS NOT NULL),
  live(k) AS (SELECT k FROM keys WHERE EXISTS (SELECT 1 FROM {table} WHERE {key} IS k AND {where}))
SELECT k, b, (SELECT {agg} FROM {table} WHERE {key} IS k AND ts >= lo AND ts < hi AND {where})
FROM live, n"""
# `keys` ends with one NULL (the MIN of nothing): it stands for the records without a key, and
# `live` drops it, like any key, when the window holds none of them.


def parse_interval(text: str, query: reporting.Query) -> int:
    """The bucket width in seconds; 400 naming `interval` when malformed or too fine for the window."""
    match = _INTERVAL.match(text.strip())
    if not match:
        raise InvalidRequest(f"interval: {text!r} is not a duration such as 1m, 5m, 1h or 1d", param="interval")
    seconds = int(match[1]) * _UNIT[match[2]]
    if len(buckets(query, seconds)) > MAX_BUCKETS:
        raise InvalidRequest(f"interval: {text} makes more than {MAX_BUCKETS} buckets in this window; "
                             "choose a wider interval or a shorter window", param="interval")
    return seconds


def buckets(query: reporting.Query, seconds: int) -> range:
    """The bucket numbers the window [start, end) touches."""
    return range(math.floor(query.start / seconds), math.ceil(query.end / seconds))


def _source(query: reporting.Query) -> tuple[str, str, str, list]:
    """The key column, its table (and index), the key range and that range's parameters."""
    group = query.group_by
    if group in GROUP_COLUMNS:
        return GROUP_COLUMNS[group], f"usage INDEXED BY usage_by_{group}", "1", []
    if group == "tag":
        return "tag", "usage_tags", "1", []
    prefix = group[4:] + ":"  # tag:KEY walks the tags from `KEY:` up to `KEY;` (`;` follows `:`)
    return "tag", "usage_tags", "tag >= ? AND tag < ?", [prefix, prefix[:-1] + ";"]


def sql(query: reporting.Query, seconds: int) -> tuple[str, list]:
    """The statement and its parameters: rows of (key, bucket, JSON figures)."""
    key, table, span, span_params = _source(query)
    where, where_params = reporting._where(query)  # the report's own filters: both answers agree
    span_of = buckets(query, seconds)
    first, last = span_of.start, span_of.stop - 1
    params = [first, query.start, first + 1, seconds, query.end, seconds, seconds, query.end, last,
              *span_params, *span_params, *where_params, *where_params]
    text = _SQL.format(key=key, table=table, span=span, where=where, agg=_AGG)
    return text, params


def _point(t: str, figures: list) -> dict:
    requests, errors, prompt, completion, cost, savings = figures
    return {"t": t, "requests": requests, "errors": errors, "inputTokens": prompt, "outputTokens": completion,
            "costUsd": cost / 1e9, "savingsUsd": savings / 1e9}


def run(db, query: reporting.Query, seconds: int) -> dict:
    """`{"interval", "series": [{"key", "points": [...]}]}` (runs on the store's connection)."""
    span = buckets(query, seconds)
    times = [reporting.iso(b * seconds) for b in span]
    found: dict[object, list] = {}
    text, params = sql(query, seconds)
    for key, bucket, figures in db.execute(text, params):
        found.setdefault(key, [None] * len(span))[bucket - span.start] = orjson.loads(figures)
    ranked = sorted(found.items(), key=lambda item: (-sum(f[4] for f in item[1]), -sum(f[0] for f in item[1]),
                                                     str(item[0])))
    prefix = len(query.group_by) - 3 if query.group_by.startswith("tag:") else 0
    series = [{"key": key[prefix:] if prefix else key, "points": [_point(t, f) for t, f in zip(times, per, strict=True)]}
              for key, per in ranked]
    return {"interval": label(seconds), "series": series}


def label(seconds: int) -> str:
    """The shortest spelling of an interval: 3600 → `1h`, 90 → `90s`."""
    for unit in "dhm":
        if seconds % _UNIT[unit] == 0:
            return f"{seconds // _UNIT[unit]}{unit}"
    return f"{seconds}s"
