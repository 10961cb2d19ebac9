"""The usage and savings report (docs/records.md, the report), computed in SQL over the local usage store.

    groupBy  model    the model served (the one requested when none was served)
             provider the provider's name
             apiKey   the caller key's id
             endpoint the API the caller spoke (chat, embeddings, responses, messages)
             tag      each tag of a record (a record with two tags is in two groups; untagged
                      records are only in the totals)
             tag:KEY  the values of the tags named KEY (`tag:team` → `a`, `b`, …)
    filter   comma-separated FIELD=VALUE terms on model, provider, apiKey, endpoint, tag, status; terms on
             one field are OR-ed, fields AND-ed: `model=gpt-4o,tag=team:a,tag=team:b`
    from/to  RFC 3339 (`2025-01-31T08:00:00Z`), a date (`2025-01-31`, UTC), Unix seconds, `now`,
             or an age (`90m`, `24h`, `7d`: that long ago). The window is [from, to); defaults:
             the last 30 days.

`errors` counts records whose status is neither `completed` nor `client_aborted`. `totals`
count requests: a request with two tags counts once.
"""

from __future__ import annotations

import datetime
import re
import time

import msgspec

from proxy.errors import InvalidRequest

GROUPS = ("model", "provider", "apiKey", "endpoint", "tag")
_FILTER_COLUMNS = {"model": "model", "provider": "provider", "apiKey": "api_key_id", "status": "status",
                   "endpoint": "endpoint"}
_GROUP_COLUMNS = {"model": "model", "provider": "provider", "apiKey": "api_key_id", "endpoint": "endpoint"}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGG = ("COUNT(*), COALESCE(SUM(status NOT IN ('completed', 'client_aborted')), 0), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), TOTAL(cost_usd), "
        "TOTAL(savings_usd), AVG(latency_ms), AVG(ttft_ms)")
DEFAULT_WINDOW = "30d"


class Query(msgspec.Struct, frozen=True):
    start: float
    end: float
    group_by: str
    filters: dict[str, list[str]] = {}


def parse_time(value: str, now: float, param: str) -> float:
    text = value.strip()
    if text == "now":
        return now
    if age := _AGE.match(text):
        return now - float(age[1]) * _UNIT[age[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{param}: {value!r} is not a time (RFC 3339, a date, Unix seconds, 'now' "
                             "or an age such as 24h)", param=param) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def parse_filter(text: str | None) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for term in (text or "").split(","):
        if not term.strip():
            continue
        field, sep, value = term.partition("=")
        field, value = field.strip(), value.strip()
        if not sep or not value or (field not in _FILTER_COLUMNS and field != "tag"):
            raise InvalidRequest(f"filter: {term.strip()!r} is not FIELD=VALUE with FIELD one of "
                                 "model, provider, apiKey, endpoint, tag, status", param="filter")
        filters.setdefault(field, []).append(value)
    return filters


def parse(start: str | None, end: str | None, group_by: str | None, filter_: str | None,
          now: float | None = None) -> Query:
    """A report query from its user-facing parameters; 400 naming the bad one."""
    now = time.time() if now is None else now
    end_ts = parse_time(end, now, "to") if end else now
    start_ts = parse_time(start, now, "from") if start else parse_time(DEFAULT_WINDOW, end_ts, "from")
    if start_ts >= end_ts:
        raise InvalidRequest("from: must be before to", param="from")
    group = group_by or "model"
    if group not in GROUPS and not (group.startswith("tag:") and len(group) > 4):
        raise InvalidRequest(f"groupBy: {group!r} is not one of model, provider, apiKey, endpoint, tag, tag:KEY",
                             param="groupBy")
    return Query(start_ts, end_ts, group, parse_filter(filter_))


def _where(query: Query) -> tuple[str, list]:
    """Conditions that read the same on `usage` and `usage_tags` (both carry the columns)."""
    parts, params = ["ts >= ?", "ts < ?"], [query.start, query.end]
    for field, values in query.filters.items():
        marks = ", ".join("?" * len(values))
        if field == "tag":
            parts.append(f"rid IN (SELECT rid FROM usage_tags WHERE tag IN ({marks}) AND ts >= ? AND ts < ?)")
            params += [*values, query.start, query.end]
        elif field == "endpoint":  # not a column of `usage_tags`: matched by the record's rid
            parts.append(f"rid IN (SELECT rid FROM usage WHERE endpoint IN ({marks}) AND ts >= ? AND ts < ?)")
            params += [*values, query.start, query.end]
        else:
            parts.append(f"{_FILTER_COLUMNS[field]} IN ({marks})")
            params += values
    return " AND ".join(parts), params


def _group_sql(query: Query, where: str) -> tuple[str, list]:
    group = query.group_by
    if group in _GROUP_COLUMNS:
        column = _GROUP_COLUMNS[group]
        return (f"SELECT {column}, {_AGG} FROM usage INDEXED BY usage_by_{group} WHERE {where} "
                f"GROUP BY {column}"), []
    if group == "tag":
        return f"SELECT tag, {_AGG} FROM usage_tags WHERE {where} GROUP BY tag", []
    prefix = group[4:] + ":"
    return (f"SELECT substr(tag, {len(prefix) + 1}), {_AGG} FROM usage_tags "
            f"WHERE tag >= ? AND tag < ? AND {where} GROUP BY tag"), [prefix, prefix[:-1] + ";"]


def _figures(key, values) -> dict:
    requests, errors, prompt, completion, cost, savings, latency, ttft = values
    return {"key": key, "requests": requests, "errors": errors, "inputTokens": prompt,
            "outputTokens": completion, "costUsd": round(cost, 9), "savingsUsd": round(savings, 9),
            "avgLatencyMs": None if latency is None else round(latency, 3),
            "avgTtftMs": None if ttft is None else round(ttft, 3)}


def iso(ts: float) -> str:
    when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    spec = "seconds" if ts == int(ts) else "milliseconds"
    return when.isoformat(timespec=spec).replace("+00:00", "Z")


def run(db, query: Query) -> dict:
    """The report as the JSON document of docs/records.md (runs on the store's connection)."""
    where, params = _where(query)
    sql, extra = _group_sql(query, where)
    groups = [_figures(key, values) for key, *values in db.execute(sql, [*extra, *params])]
    groups.sort(key=lambda g: (-g["costUsd"], -g["requests"], str(g["key"])))
    (totals,) = db.execute(f"SELECT {_AGG} FROM usage INDEXED BY usage_by_model WHERE {where}", params)
    total = _figures(None, totals)
    del total["key"]
    return {"from": iso(query.start), "to": iso(query.end), "groupBy": query.group_by, "groups": groups,
            "totals": total}


# -- the terminal table -------------------------------------------------------------------
_HEAD = ("REQUESTS", "ERRORS", "INPUT TOKENS", "OUTPUT TOKENS", "COST USD", "SAVINGS USD", "AVG LATENCY MS",
         "AVG TTFT MS")


def _cells(name: str, figures: dict) -> list[str]:
    def ms(value):
        return "-" if value is None else f"{value:,.1f}"

    return [name, f"{figures['requests']:,}", f"{figures['errors']:,}", f"{figures['inputTokens']:,}",
            f"{figures['outputTokens']:,}", f"{figures['costUsd']:,.4f}", f"{figures['savingsUsd']:,.4f}",
            ms(figures["avgLatencyMs"]), ms(figures["avgTtftMs"])]


def table(report: dict) -> str:
    """The report as aligned columns: one row per group, then the totals."""
    rows = [[report["groupBy"].upper(), *_HEAD]]
    rows += [_cells("(none)" if g["key"] is None else str(g["key"]), g) for g in report["groups"]]
    rows.append(_cells("TOTAL", report["totals"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells):
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])

    title = f"Usage from {report['from']} to {report['to']}, by {report['groupBy']}"
    rule = "-" * len(line(rows[0]))
    return "\n".join([title, "", line(rows[0]), rule, *map(line, rows[1:-1]), rule, line(rows[-1])])


def command(args) -> int:
    """`ai-enabler-proxy report`: read the local store under the config's dataDir directly."""
    import sys

    import orjson

    from proxy.config import load
    from proxy.telemetry.store import connect

    cfg = load(args.config)
    path = cfg.data_path / "usage.db"
    if not path.exists():
        print(f"ai-enabler-proxy: no usage store at {path} (is dataDir right?)", file=sys.stderr)
        return 1
    try:
        query = parse(args.start, args.end, args.group_by, args.filter)
    except InvalidRequest as exc:
        print(f"ai-enabler-proxy: {exc.message}", file=sys.stderr)
        return 2
    db = connect(str(path))
    try:
        db.execute("PRAGMA query_only = 1")
        result = run(db, query)
    finally:
        db.close()
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.json else table(result))
    return 0
