"""The run's results: derived numbers, ratios, the gateway's goals, one table, JSON, RESULTS.md."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys

from bench import wrk
from bench.dialects import DIALECT_SCENARIOS

BASELINES = ("direct", "passthrough")
NOTES = "## Notes"  # RESULTS.md from this heading on is written by hand and kept by --record
_PACKAGES = ("ai-enabler-proxy", "aiohttp", "httptools", "uvloop", "msgspec", "orjson", "prometheus_client", "structlog")


def _get(result: dict, name: str, scenario: str, key: str):
    return result["targets"].get(name, {}).get("scenarios", {}).get(scenario, {}).get(key)


def _minus(a, b):
    return None if a is None or b is None else round(a - b, 3)


def _div(a, b):
    return None if a is None or not b else round(a / b, 3)


def derive(result: dict) -> None:
    """Add, per target, latency added over `direct` and rates relative to both baselines."""
    for name, target in result["targets"].items():
        s = target["scenarios"]
        g = lambda sc, key, who=name: _get(result, who, sc, key)  # noqa: E731 - a local shorthand
        target["derived"] = {
            "c1_added_p50_ms": _minus(g("c1", "p50_ms"), g("c1", "p50_ms", "direct")),
            "c1_added_p99_ms": _minus(g("c1", "p99_ms"), g("c1", "p99_ms", "direct")),
            "c1_added_p50_ms_vs_passthrough": _minus(g("c1", "p50_ms"), g("c1", "p50_ms", "passthrough")),
            "delayed_added_ttfb_p50_ms": _minus(g("delayed", "ttfb_p50_ms"), g("delayed", "ttfb_p50_ms", "direct")),
            "s32_added_ttfb_p50_ms": _minus(g("s32", "ttfb_p50_ms"), g("s32", "ttfb_p50_ms", "direct")),
            "nonstream_errors": sum(s.get(c, {}).get("errors", 0) for c in ("c1", "c32", "c256")),
        }
        ratios = {}
        for base in BASELINES:
            if base == name or base not in result["targets"]:
                continue
            for sc, key in (("c1", "rps"), ("c32", "rps"), ("c256", "rps"), ("c256", "req_per_cpu_s"),
                            ("s32", "chunks_per_s"), ("s32", "chunks_per_cpu_s"), ("b32", "chunks_per_cpu_s"),
                            ("s1000", "chunks_per_s")):
                ratios[f"{sc}_{key}_vs_{base}"] = _div(g(sc, key), g(sc, key, base))
        target["ratios"] = ratios
        target["derived"].update(vs_chat(result, name))
        target["hour"] = hour(result, name)


def _per_cpu(chat: str) -> str:
    return "req_per_cpu_s" if chat == "c32" else "chunks_per_cpu_s"


def vs_chat(result: dict, name: str) -> dict:
    """Each dialect scenario's rate per server CPU-s over its chat twin's on the same target: the
    twin measured beside it, slice for slice (`twin_…`); a run saved before that, the twin's own
    scenario in the same run."""
    out = {}
    for sc, (_, chat) in DIALECT_SCENARIOS.items():
        key = _per_cpu(chat)
        twin = _get(result, name, sc, f"twin_{key}")
        out[f"{sc}_{key}_vs_{chat}"] = _div(_get(result, name, sc, key),
                                            twin if twin is not None else _get(result, name, chat, key))
    return out


def _dialect(result: dict, name: str, scenario: str, key: str, derived: str | None = None):
    """A dialect scenario's figure, or "skipped" on a target that does not speak the dialects."""
    if _get(result, name, scenario, "skipped"):
        return "skipped"
    return _d(result, name, derived) if derived else _get(result, name, scenario, key)


def dialect_rows() -> list[tuple]:
    """Rows for the Responses and Messages scenarios; the non-stream ones carry the 0.8x-chat floor."""
    rows = []
    for sc, (wire, chat) in DIALECT_SCENARIOS.items():
        key = _per_cpu(chat)
        what = "requests" if chat == "c32" else "chunks"
        ratio = f"{sc}_{key}_vs_{chat}"
        if chat == "c32":
            rows.append((f"{sc} RPS ({wire.name})", lambda r, n, sc=sc: _dialect(r, n, sc, "rps"), "{:,.0f}", None))
        rows += [
            (f"{sc} {what} per server CPU-s ({wire.name})", lambda r, n, sc=sc, k=key: _dialect(r, n, sc, k),
             "{:,.0f}", None),
            (f"{sc} {what} per server CPU-s / {chat}'s", lambda r, n, sc=sc, d=ratio: _dialect(r, n, sc, "", d),
             "{:.2f}", (">=", 0.8, "value") if chat == "c32" else None),
            (f"{sc} errors", lambda r, n, sc=sc: _dialect(r, n, sc, "errors"), "{:,}", None)]
    return rows


def skipped_text(result: dict) -> str | None:
    """Which scenarios ran on some targets only, and why: said under the table."""
    skipped: dict[str, dict[str, None]] = {}  # reason -> scenarios, and targets, in order
    for name, target in result["targets"].items():
        for sc, figures in target["scenarios"].items():
            if isinstance(figures, dict) and figures.get("skipped"):
                skipped.setdefault(figures["skipped"], {}).update({sc: None, f"@{name}": None})
    parts = []
    for why, where in skipped.items():
        scenarios = [w for w in where if not w.startswith("@")]
        targets = [w[1:] for w in where if w.startswith("@")]
        parts.append(f"{', '.join(scenarios)} on {', '.join(targets)}: each {why}")
    return "Skipped: " + "; ".join(parts) + "." if parts else None


# The realistic mix an hour of traffic is priced at: 100 requests a second, 70 % of them streamed,
# 300 output tokens per answer (one SSE event each) generated at 60 tokens a second.
MIX = {"rps": 100, "streamed": 0.7, "tokens": 300, "tokens_per_s": 60}


def hour(result: dict, name: str) -> dict | None:
    """CPU-seconds and peak RSS of one hour of the mix, from this run's measured costs.

    Per request: c1's server CPU per request (one at a time: nothing batches, as at 100 a second).
    Per event: s1000's (1,000 streams paced at 40 ms a chunk, each chunk its own read and write,
    about the mix's 21,000 events a second) server CPU less its streams' per-request part, per
    event. Open at once: every answer takes tokens / tokens_per_s to generate, streamed or not.
    Peak RSS: RSS idle plus that many open requests at the idle scenario's KB per open stream.
    """
    c1 = result["targets"][name]["scenarios"].get("c1", {})
    paced = result["targets"][name]["scenarios"].get("s1000", {})
    if not (c1.get("server_cpu_s") and c1.get("requests") and paced.get("server_cpu_s") and paced.get("events")):
        return None
    per_request = c1["server_cpu_s"] / c1["requests"]
    per_event = max(paced["server_cpu_s"] - paced["streams"] * per_request, 0.0) / paced["events"]
    requests = 3600 * MIX["rps"]
    cpu = requests * (per_request + MIX["streamed"] * MIX["tokens"] * per_event)
    open_at_once = MIX["rps"] * MIX["tokens"] / MIX["tokens_per_s"]
    idle, per_stream = result["targets"][name].get("rss_idle_mb"), _idle(result, name, "per_stream_kb")
    rss = None if idle is None or per_stream is None else round(idle + open_at_once * per_stream / 1024, 1)
    return {"per_request_us": round(per_request * 1e6, 1), "per_event_us": round(per_event * 1e6, 2),
            "cpu_s": round(cpu), "cores": round(cpu / 3600, 3), "open_at_once": open_at_once, "peak_rss_mb": rss}


def _idle(result, name, key):
    return _get(result, name, "idle", key)


# (label, value(result, target name), format, goal) — goal: (op, limit, on) with `on` "value"
# (the gateway's own number) or "ratio" (gateway ÷ passthrough).
ROWS = [
    ("c1 RPS", lambda r, n: _get(r, n, "c1", "rps"), "{:,.0f}", (">=", 0.8, "ratio")),
    ("c1 p50 / p99 ms", lambda r, n: _pair(_get(r, n, "c1", "p50_ms"), _get(r, n, "c1", "p99_ms")), "{}", None),
    ("c1 added p50 ms vs passthrough", lambda r, n: _d(r, n, "c1_added_p50_ms_vs_passthrough"), "{:.3f}",
     ("<=", 0.1, "value")),
    ("c1 added p50 ms vs direct", lambda r, n: _d(r, n, "c1_added_p50_ms"), "{:.3f}", None),
    ("c1 added p99 ms vs direct", lambda r, n: _d(r, n, "c1_added_p99_ms"), "{:.3f}", None),
    ("c32 RPS", lambda r, n: _get(r, n, "c32", "rps"), "{:,.0f}", (">=", 0.9, "ratio")),
    ("c32 p50 / p99 ms", lambda r, n: _pair(_get(r, n, "c32", "p50_ms"), _get(r, n, "c32", "p99_ms")), "{}", None),
    ("c256 RPS", lambda r, n: _get(r, n, "c256", "rps"), "{:,.0f}", None),
    ("c256 p50 / p99 ms", lambda r, n: _pair(_get(r, n, "c256", "p50_ms"), _get(r, n, "c256", "p99_ms")), "{}",
     None),
    ("c256 requests per server CPU-s", lambda r, n: _get(r, n, "c256", "req_per_cpu_s"), "{:,.0f}",
     (">=", 1.0, "ratio")),
    ("c256 server CPU use (cores)", lambda r, n: _get(r, n, "c256", "server_cpu_util"), "{:.2f}", None),
    ("non-stream errors", lambda r, n: _d(r, n, "nonstream_errors"), "{:,}", None),
    ("s32 chunks/s (paced)", lambda r, n: _get(r, n, "s32", "chunks_per_s"), "{:,.0f}", (">=", 1.0, "ratio")),
    ("s32 chunks per server CPU-s", lambda r, n: _get(r, n, "s32", "chunks_per_cpu_s"), "{:,.0f}", None),
    ("s32 server CPU use (cores)", lambda r, n: _get(r, n, "s32", "server_cpu_util"), "{:.2f}", None),
    ("s32 TTFB p50 / p99 ms", lambda r, n: _pair(_get(r, n, "s32", "ttfb_p50_ms"), _get(r, n, "s32", "ttfb_p99_ms")),
     "{}", None),
    ("s32 errors / stalls", lambda r, n: _pair(_get(r, n, "s32", "errors"), _get(r, n, "s32", "stalls"), "{:,}"),
     "{}", None),
    ("b32 chunks per server CPU-s (burst)", lambda r, n: _get(r, n, "b32", "chunks_per_cpu_s"), "{:,.0f}",
     (">=", 0.8, "ratio")),
    ("b32 chunks/s", lambda r, n: _get(r, n, "b32", "chunks_per_s"), "{:,.0f}", None),
    ("b32 server CPU use (cores)", lambda r, n: _get(r, n, "b32", "server_cpu_util"), "{:.2f}", None),
    ("b32 errors / stalls", lambda r, n: _pair(_get(r, n, "b32", "errors"), _get(r, n, "b32", "stalls"), "{:,}"),
     "{}", None),
    *dialect_rows(),
    ("s1000 chunks/s (paced)", lambda r, n: _get(r, n, "s1000", "chunks_per_s"), "{:,.0f}", None),
    ("s1000 TTFB p50 / p99 ms",
     lambda r, n: _pair(_get(r, n, "s1000", "ttfb_p50_ms"), _get(r, n, "s1000", "ttfb_p99_ms")), "{}", None),
    ("s1000 errors", lambda r, n: _get(r, n, "s1000", "errors"), "{:,}", ("==", 0, "value")),
    ("s1000 stalls", lambda r, n: _get(r, n, "s1000", "stalls"), "{:,}", ("==", 0, "value")),
    ("s1000 max chunk gap ms", lambda r, n: _get(r, n, "s1000", "max_gap_ms"), "{:,.1f}", None),
    ("delayed TTFB p50 ms", lambda r, n: _get(r, n, "delayed", "ttfb_p50_ms"), "{:.2f}", None),
    ("delayed added TTFB p50 ms", lambda r, n: _d(r, n, "delayed_added_ttfb_p50_ms"), "{:.2f}",
     ("<=", 2.0, "value")),
    ("other load on server CPU, max (cores)", lambda r, n: _max(r, n, "other_load_on_server_cpu"), "{:.2f}", None),
    ("s32 load CPU busy (cores)", lambda r, n: _get(r, n, "s32", "load_cpu_busy"), "{:.2f}", None),
    ("RSS idle MB", lambda r, n: r["targets"][n].get("rss_idle_mb"), "{:.1f}", ("<=", 60, "value")),
    ("idle streams open / failed", lambda r, n: _pair(_idle(r, n, "open"), _idle(r, n, "errors"), "{:,}"), "{}", None),
    ("RSS with idle streams MB", lambda r, n: _idle(r, n, "rss_open_mb"), "{:.1f}", None),
    ("KB per idle stream", lambda r, n: _idle(r, n, "per_stream_kb"), "{:.1f}", ("<=", 40, "value")),
    ("CPU µs per request (c1)", lambda r, n: _h(r, n, "per_request_us"), "{:,.1f}", None),
    ("CPU µs per paced event (s1000)", lambda r, n: _h(r, n, "per_event_us"), "{:,.2f}", None),
    ("hour of the mix: CPU-s", lambda r, n: _h(r, n, "cpu_s"), "{:,.0f}", None),
    ("hour of the mix: cores (mean)", lambda r, n: _h(r, n, "cores"), "{:.3f}", None),
    ("hour of the mix: peak RSS MB", lambda r, n: _h(r, n, "peak_rss_mb"), "{:.1f}", None),
]


def _h(result, name, key):
    return (result["targets"][name].get("hour") or {}).get(key)


def hour_text(result: dict) -> str | None:
    """One hour of the mix, for each target that has the figures: what to size a sidecar by."""
    parts = [f"{name} {h['cpu_s']:,} CPU-s ({h['cores']:.2f} of a core), peak RSS "
             + ("-" if h["peak_rss_mb"] is None else f"{h['peak_rss_mb']:.0f} MB")
             for name, t in result["targets"].items() if name != "direct" and (h := t.get("hour"))]
    if not parts:
        return None
    return (f"One hour at {MIX['rps']} requests/s, {MIX['streamed']:.0%} streamed, {MIX['tokens']} output tokens "
            f"at {MIX['tokens_per_s']} tokens/s ({MIX['rps'] * MIX['tokens'] // MIX['tokens_per_s']:.0f} open at "
            f"once): " + "; ".join(parts) + ".")


def _max(result, name, key):
    values = [s.get(key) for s in result["targets"][name]["scenarios"].values() if isinstance(s, dict)]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _d(result, name, key):
    return result["targets"][name].get("derived", {}).get(key)


def _pair(a, b, fmt="{:.2f}"):
    if a is None and b is None:
        return None
    return " / ".join("-" if v is None else fmt.format(v) for v in (a, b))


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "-"
    return fmt.format(value) if not isinstance(value, str) else value


def _verdict(op: str, limit: float, value) -> tuple[bool | None, str]:
    if value is None:
        return None, "not measured"
    if op == ">=":
        ok = value >= limit
        return ok, "ok" if ok else f"MISS: {value:g} (needs x{limit / value:.2f})" if value > 0 else f"MISS: {value:g}"
    if op == "<=":
        ok = value <= limit
        return ok, "ok" if ok else f"MISS: {value:g} ({value / limit:.2f}x the limit)"
    ok = value == limit
    return ok, "ok" if ok else f"MISS: {value:g}"


SPEED_SPREAD_MAX = 1.15  # slowest / fastest probe above this: the host was not quiet


def speed_text(result: dict) -> str | None:
    """How fast the host ran during the run: the probes taken before each scenario round."""
    probes = result.get("host_speed_ms") or []
    if len(probes) < 2:
        return None
    low, high = min(probes), max(probes)
    return (f"Host speed: a fixed Python loop took {low:.1f} to {high:.1f} ms of CPU on the server CPU "
            f"(median {statistics.median(probes):.1f}) in {len(probes)} probes before the scenario rounds: "
            f"the slowest {high / low:.2f}x the fastest.")


def warnings(result: dict) -> list[str]:
    """What makes this run's numbers less trustworthy, said plainly."""
    out = []
    probes = result.get("host_speed_ms") or []
    if len(probes) >= 2 and max(probes) / min(probes) > SPEED_SPREAD_MAX:
        out.append(f"the host's speed moved {max(probes) / min(probes):.2f}x during the run (a fixed Python loop: "
                   f"{min(probes):.1f} to {max(probes):.1f} ms of CPU), with no other process on the server CPU to "
                   "explain it: a shared host; a ratio between targets measured seconds apart can be off by that "
                   "much, so --repeat and the medians matter, and a floor missed by less is not settled")
    for name in result["targets"]:
        other = _max(result, name, "other_load_on_server_cpu")
        if other is not None and other > 0.1:
            out.append(f"{name}: other processes took up to {other:.2f} of the server CPU during a scenario; "
                       "rates and latencies are understated, rerun on a quiet machine")
    s32 = [_get(result, n, "s32", "load_cpu_busy") for n in result["targets"] if n != "direct"]
    if any(v is not None and v > 0.9 for v in s32):
        out.append("s32: the load CPU (driver + mock) was saturated for some target; its chunks/s is the load "
                   "side's limit, compare chunks per server CPU-s instead")
    return out


def goals(result: dict) -> list[dict]:
    out = []
    if "gateway" not in result["targets"]:
        return out
    for label, value, _, goal in ROWS:
        if goal is None:
            continue
        op, limit, on = goal
        if on == "ratio":
            got = _div(value(result, "gateway"), value(result, "passthrough")) if "passthrough" in result[
                "targets"] else None
            what = f"gateway / passthrough {label}"
        else:
            got, what = value(result, "gateway"), f"gateway {label}"
        met, text = _verdict(op, limit, got)
        out.append({"goal": f"{what} {op} {limit:g}", "value": got, "met": met, "verdict": text})
    return out


def table(result: dict) -> list[list[str]]:
    """The one results table: a row per metric, a column per target, ratios and the goals."""
    names = list(result["targets"])
    extra = [n for n in names if n not in BASELINES]
    has_pt = "passthrough" in names
    header = ["metric", *names, *(f"{n} / passthrough" for n in extra if has_pt), "gateway goal", "verdict"]
    rows = [header]
    by_goal = {g["goal"]: g for g in goals(result)}
    for label, value, fmt, goal in ROWS:
        values = [value(result, n) for n in names]
        if all(v is None for v in values):
            continue
        row = [label, *(_fmt(v, fmt) for v in values)]
        if has_pt:
            for n in extra:
                a, b = value(result, n), value(result, "passthrough")
                ratio = _div(a, b) if isinstance(a, int | float) and isinstance(b, int | float) else None
                row.append(_fmt(ratio, "{:.2f}"))
        if goal and "gateway" in names:
            op, limit, on = goal
            key = (f"gateway / passthrough {label}" if on == "ratio" else f"gateway {label}") + f" {op} {limit:g}"
            found = by_goal.get(key, {})
            row += [("ratio " if on == "ratio" else "") + f"{op} {limit:g}", found.get("verdict", "-")]
        else:
            row += ["", ""]
        rows.append(row)
    return rows


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(widths[i]) if i == 0 or i >= len(row) - 2 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(
        "---" if i == 0 or i >= len(rows[0]) - 2 else "---:" for i in range(len(rows[0]))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def machine() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1]) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def versions() -> dict:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    text = wrk.version()  # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"
    out["wrk"] = text.split(" Copyright")[0].removeprefix("wrk ").strip() if text else None
    try:
        spy = subprocess.run([py_spy(), "--version"], capture_output=True, text=True, timeout=5)
        out["py-spy"] = spy.stdout.strip().removeprefix("py-spy ") or None
    except OSError:
        out["py-spy"] = None
    return out


def py_spy() -> str:
    """py-spy from PATH, or next to this interpreter (a venv that is not activated)."""
    return shutil.which("py-spy") or str(pathlib.Path(sys.executable).with_name("py-spy"))


def results_md(result: dict, rows: list[list[str]]) -> str:
    m, v = result["machine"], result["versions"]
    lines = [
        "# Bench results", "",
        "Written by `python -m bench --record`; see bench/README.md for what each row means.", "",
        f"- When: {result['when']}",
        f"- Command: `{result['command']}`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; servers pinned to CPU 0, load generator and mock to CPU 1"
        if result.get("pinned") else f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), not pinned",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        "- Settings: " + ", ".join(f"{k} {val}" for k, val in result["settings"].items()),
    ]
    note = result.get("idle_streams", {}).get("note")
    if note:
        lines.append(f"- Idle streams: {note}")
    flame = result["targets"].get("gateway", {}).get("scenarios", {}).get("flamegraph")
    if flame:
        svg = flame.get("svg")
        lines.append(f"- Flame graph (py-spy, gateway under c32): "
                     f"{'bench/results/' + pathlib.Path(svg).name if svg else flame.get('error')}")
    lines += ["", render_markdown(rows), ""]
    lines += [f"- Warning: {w}" for w in result.get("warnings", [])]
    if result.get("warnings"):
        lines.append("")
    for text in (skipped_text(result), hour_text(result), speed_text(result)):
        if text:
            lines += [text, ""]
    if result.get("parse"):
        lines += ["Stream parsing alone (`python -m bench.relay_cost`: each wire's stream parser fed canned reads "
                  "in the bench's process; a whole stream in one read, or one event per read):", "",
                  "```", parse_text(result["parse"]), "```", ""]
    return "\n".join(lines)


def parse_text(rows: list[dict]) -> str:
    from bench import relay_cost

    return relay_cost.render(rows)
