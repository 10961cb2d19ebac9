"""One bench run: start the servers, run every scenario against every target, stop everything.

Scenarios run target after target (direct, passthrough, gateway, others) so that the ratios
compare numbers taken minutes apart at most, on the same machine state. With `repeat` N > 1 the
load scenarios run N rounds, the targets' order reversed every other round, and each figure is
the median of the N (counts of requests, errors and stalls are summed): on a host whose speed
drifts, a ratio of medians of interleaved runs moves far less than one of two single runs.

Within a round, the scenarios whose figures are counts over time (c1, c32, c256, s32, b32) are cut
into slices of about a second, taken in turn across the targets (A B C, C B A, A B C, …): a
host whose speed flips within seconds then spreads its moods over every target alike, where
five seconds of one target and then five of the next could catch one mood each. A slice's CPU
time is read once the server has gone quiet, so the work a load leaves behind (the gateway's
last records being stored) counts for the target that made it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from bench import drivers, relay_cost, report, wrk
from bench.dialects import CHAT, CONTENT_EVENTS, DIALECT_SCENARIOS, SKIP_REASON, SPEAKS_DIALECTS, Wire
from bench.procs import LOAD_CPU, SERVER_CPU, cpu_busy, pinned, pinning, speed_probe
from bench.targets import Target, start_gateway, start_mock, start_passthrough

SCENARIOS = ("c1", "c32", "c256", "s32", "b32", *DIALECT_SCENARIOS, "s1000", "delayed", "idle", "parse")
# what `repeat` applies to (not s1000, idle)
REPEATED = ("c1", "c32", "c256", "s32", "b32", *DIALECT_SCENARIOS, "delayed")
LOAD = SCENARIOS[:-1]  # run against each target; `parse` runs in this process, once
_SUMMED = frozenset({"requests", "errors", "events", "streams", "completed", "timeouts", "stalls", "server_cpu_s"})
# cut into slices of `Settings.slice_s`, interleaved across the targets (s32's streams last a few
# ms: the mock sends a chunk a turn of its loop; the delayed and s1000 ones last longer than a slice)
SLICED = ("c1", "c32", "c256", "s32", "b32")
BUILTIN = ("direct", "passthrough", "gateway")
MODEL = "bench-model"
BURST_MODEL = "bench-burst"  # the mock writes the whole stream at once
IDLE_MODEL = "bench-ttfb0-chunk600000"  # one chunk, then nothing for ten minutes
RESULTS = pathlib.Path(__file__).with_name("results")


@dataclass(frozen=True)
class Settings:
    duration: float = 5.0
    idle_streams: int = 10_000
    idle_hold: float = 1.0
    stall_ms: float = 1000.0
    delayed_ttfb_ms: int = 50
    delayed_chunk_ms: int = 5
    paced_chunk_ms: int = 40
    warmup: float = 1.0
    scenarios: tuple[str, ...] = SCENARIOS
    builtin: tuple[str, ...] = BUILTIN
    use_wrk: bool = True
    flamegraph: bool = False
    keep: bool = False
    mock_port: int = 0
    repeat: int = 1
    slice_s: float = 1.0  # 0: no slices

    def slices(self, scenario: str) -> int:
        if scenario not in SLICED or self.slice_s <= 0:
            return 1
        return max(int(self.duration / self.slice_s), 1)

    @property
    def delayed_model(self) -> str:
        return f"bench-ttfb{self.delayed_ttfb_ms}-chunk{self.delayed_chunk_ms}"

    @property
    def paced_model(self) -> str:
        return f"bench-ttfb0-chunk{self.paced_chunk_ms}"

    def models(self) -> list[str]:
        return [MODEL, self.delayed_model, self.paced_model, IDLE_MODEL, BURST_MODEL]


def request(target: Target, model: str, stream: bool, wire: Wire = CHAT) -> bytes:
    return wire.request(target.base, target.key, model, stream)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _nonstream(target: Target, concurrency: int, cfg: Settings, wire: Wire = CHAT) -> dict:
    url = wire.path(target.base)
    if cfg.use_wrk and wrk.available():
        return await asyncio.to_thread(wrk.run, url, wire.body(MODEL, False), wire.headers(target.key), concurrency,
                                       cfg.duration)
    return await drivers.requests(url, request(target, MODEL, False, wire), concurrency, cfg.duration)


async def _streams(target: Target, concurrency: int, model: str, cfg: Settings, ramp: float = 0.0,
                   wire: Wire = CHAT) -> dict:
    expect = 100 if wire is CHAT else CONTENT_EVENTS
    return await drivers.streams(wire.path(target.base), request(target, model, True, wire), concurrency,
                                 cfg.duration, stall_s=cfg.stall_ms / 1000, ramp=ramp, expect_events=expect, wire=wire)


async def _idle(target: Target, count: int, cfg: Settings) -> dict:
    baseline = _fds(target)
    result = await drivers.idle_streams(target.url, request(target, IDLE_MODEL, True), count, target.rss,
                                        hold=cfg.idle_hold)
    await _settle(target, baseline)
    return result


def _fds(target: Target) -> int | None:
    try:
        return len(os.listdir(f"/proc/{target.pid}/fd")) if target.pid else None
    except OSError:
        return None


async def _settle(target: Target, baseline: int | None, timeout: float = 15.0) -> None:
    """Wait until the server has let go of the streams' sockets (bounded)."""
    if baseline is None:
        await asyncio.sleep(2)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fds = _fds(target)
        if fds is None or fds <= baseline + 100:
            return
        await asyncio.sleep(0.2)


async def scenario(name: str, target: Target, cfg: Settings, idle_count: int) -> dict:
    """Run one scenario on one target, with the server's CPU time and RSS around it."""
    gc.collect()
    gc.disable()  # the load generator's own collector pauses would show up as server latency
    try:
        return await _scenario(name, target, cfg, idle_count)
    finally:
        gc.enable()


async def _quiet(target: Target, limit: float = 2.0) -> float | None:
    """The server's CPU time once it has gone quiet after a load (at most `limit` s of waiting):
    records still being stored, connections still closing, belong to the load that left them."""
    last = target.cpu()
    deadline = time.monotonic() + limit
    while last is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = target.cpu()
        if now is None or now - last < 0.015:  # at most a clock tick in 100 ms: quiet
            return now
        last = now
    return last


async def _scenario(name: str, target: Target, cfg: Settings, idle_count: int) -> dict:
    cpu0, start = target.cpu(), time.monotonic()
    busy0 = cpu_busy(target.cpu_index) if target.cpu_index is not None else None
    load0 = cpu_busy(int(LOAD_CPU)) if pinning() else None
    if name in ("c1", "c32", "c256"):
        result = await _nonstream(target, int(name[1:]), cfg)
    elif name == "s32":
        result = await _streams(target, 32, MODEL, cfg)
    elif name == "b32":
        result = await _streams(target, 32, BURST_MODEL, cfg)
    elif name in DIALECT_SCENARIOS:
        wire, chat = DIALECT_SCENARIOS[name]
        if chat == "c32":
            result = await _nonstream(target, 32, cfg, wire)
        else:
            result = await _streams(target, 32, BURST_MODEL if chat == "b32" else MODEL, cfg, wire=wire)
    elif name == "s1000":
        result = await _streams(target, 1000, cfg.paced_model, cfg, ramp=1.0)  # 1,000 new streams/s
    elif name == "delayed":
        # Spread over one stream's length: started together, 16 streams of equal length would stay
        # in step and arrive as a burst of 16 every stream, and TTFB would measure that queue.
        length = (cfg.delayed_ttfb_ms + 100 * cfg.delayed_chunk_ms) / 1000
        result = await _streams(target, 16, cfg.delayed_model, cfg, ramp=length)
    else:
        result = await _idle(target, idle_count, cfg)
    elapsed = time.monotonic() - start
    if load0 is not None:  # near 1.0: the load generator and mock, not the server, set the pace
        result["load_cpu_busy"] = round((cpu_busy(int(LOAD_CPU)) - load0) / elapsed, 3)
    cpu1 = await _quiet(target)
    spent = time.monotonic() - start  # the load and what it left behind
    if cpu0 is not None and cpu1 is not None:
        cpu = cpu1 - cpu0
        result["server_cpu_s"] = round(cpu, 2)
        result["server_cpu_util"] = round(cpu / elapsed, 3)  # per second of load
        if cpu > 0 and result.get("requests"):
            result["req_per_cpu_s"] = round(result["requests"] / cpu, 1)
        if cpu > 0 and result.get("events"):
            result["chunks_per_cpu_s"] = round(result["events"] / cpu, 1)
        if busy0 is not None:
            # Busy time of the server's CPU not spent by the server: other processes competing.
            other = (cpu_busy(target.cpu_index) - busy0 - cpu) / spent
            result["other_load_on_server_cpu"] = round(max(other, 0.0), 3)
    result["rss_mb"] = target.rss()
    return result


async def warm(target: Target, cfg: Settings) -> None:
    """Connections opened, lazy imports done, caches filled: nothing of it is measured."""
    if cfg.warmup <= 0:
        return
    await drivers.requests(target.url, request(target, MODEL, False), 8, cfg.warmup / 2)
    await drivers.streams(target.url, request(target, MODEL, True), 8, cfg.warmup / 2)
    if target.name in SPEAKS_DIALECTS and any(s in DIALECT_SCENARIOS for s in cfg.scenarios):
        for wire in dict.fromkeys(wire for wire, _ in DIALECT_SCENARIOS.values()):  # their modules imported, paths warm
            await drivers.requests(wire.path(target.base), request(target, MODEL, False, wire), 4, cfg.warmup / 4)
            await drivers.streams(wire.path(target.base), request(target, MODEL, True, wire), 4, cfg.warmup / 4,
                                  expect_events=CONTENT_EVENTS, wire=wire)


def flamegraph(target: Target, cfg: Settings) -> dict:
    """A py-spy flame graph of the gateway under the c32 load (a separate, unmeasured run)."""
    spy = report.py_spy()
    if not os.path.exists(spy):
        return {"error": "py-spy is not installed (pip install py-spy)"}
    out = RESULTS / f"{target.name}-c32.svg"
    seconds = max(int(cfg.duration), 2)
    cmd = pinned([spy, "record", "--pid", str(target.pid), "--duration", str(seconds), "--rate", "250",
                  "--format", "flamegraph", "--output", str(out)], LOAD_CPU)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    load = None
    if proc.poll() is None:
        if cfg.use_wrk and wrk.available():
            load = wrk.run(target.url, CHAT.body(MODEL, False), CHAT.headers(target.key), 32, seconds)
        else:
            load = asyncio.run(drivers.requests(target.url, request(target, MODEL, False), 32, seconds))
    try:
        text, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
    if proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed (exit {proc.returncode}): {text.strip()[-600:]}"}
    return {"svg": str(out), "load": load}


# a round's figures from its slices: rates again from the summed counts, time and CPU; latency
# percentiles the median of the slices' (the drivers keep no samples); worst cases the worst
_RATES = {"rps": ("requests", "duration_s"), "req_per_cpu_s": ("requests", "server_cpu_s"),
          "chunks_per_cpu_s": ("events", "server_cpu_s")}
_WORST = frozenset({"max_gap_ms", "other_load_on_server_cpu"})
_TWIN_FIGURES = ("rps", "req_per_cpu_s", "chunks_per_cpu_s", "errors")
_WEIGHTED = frozenset({"chunks_per_s", "server_cpu_util", "load_cpu_busy"})


def _sum_error_kinds(runs: list[dict], out: dict) -> None:
    """wrk's errors by kind, summed over slices or rounds."""
    kinds = [run["error_kinds"] for run in runs if isinstance(run.get("error_kinds"), dict)]
    if kinds:
        out["error_kinds"] = {k: sum(each.get(k, 0) for each in kinds) for k in kinds[0]}


def joined(parts: list[dict]) -> dict:
    """One round of a scenario from its slices."""
    if len(parts) == 1:
        return parts[0]
    out: dict = {}
    weights = [part.get("duration_s") or 0 for part in parts]
    for key, first in parts[0].items():
        values = [part.get(key) for part in parts]
        if isinstance(first, bool) or not all(isinstance(v, int | float) for v in values):
            out[key] = first
        elif key in _SUMMED or key == "duration_s":
            out[key] = round(sum(values), 3)
        elif key in _WORST:
            out[key] = max(values)
        elif key in _WEIGHTED and sum(weights) > 0:
            out[key] = round(sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights), 3)
        elif key == "rss_mb":
            out[key] = values[-1]
        else:
            out[key] = statistics.median(values)
    for key, (count, per) in _RATES.items():
        if key in out and out.get(per):
            out[key] = round(out[count] / out[per], 1)
    _sum_error_kinds(parts, out)
    out["slices"] = len(parts)
    for figure in ("rps", "req_per_cpu_s", "chunks_per_cpu_s"):
        if figure in parts[0]:
            out[f"{figure}_slices"] = [part.get(figure) for part in parts]
    return out


def combine(runs: list[dict]) -> dict:
    """One scenario's figures from several rounds: medians, counts summed, every round's RPS kept."""
    if len(runs) == 1:
        return runs[0]
    out: dict = {}
    for key, first in runs[0].items():
        values = [run.get(key) for run in runs]
        if isinstance(first, bool) or not all(isinstance(v, int | float) for v in values):
            out[key] = first  # text, flags, nested figures: the first round's
        elif key in _SUMMED:
            out[key] = sum(values)
        else:
            out[key] = statistics.median(values)
    _sum_error_kinds(runs, out)
    out["rounds"] = len(runs)
    for figure in ("rps", "chunks_per_s", "req_per_cpu_s", "chunks_per_cpu_s", "p50_ms"):
        if figure in runs[0]:
            out[f"{figure}_rounds"] = [run.get(figure) for run in runs]
        if f"{figure}_slices" in runs[0]:
            out[f"{figure}_slices"] = [run.get(f"{figure}_slices") for run in runs]
    return out


def idle_cap(requested: int, nofile: int) -> tuple[int, str | None]:
    """A proxy holds two sockets per stream: cap the count to what the fd limit allows."""
    cap = max((nofile - 256) // 2, 0)
    if requested <= cap:
        return requested, None
    return cap, f"capped from {requested} to {cap}: RLIMIT_NOFILE is {nofile} and a proxy holds 2 fds per stream"


def _speaking(name: str, targets: list[Target], results: dict) -> list[Target]:
    """The targets a scenario runs on; the others get a note saying why it was skipped there."""
    if name not in DIALECT_SCENARIOS:
        return targets
    for target in targets:
        if target.name not in SPEAKS_DIALECTS:
            results[target.name][name] = {"skipped": SKIP_REASON}
    return [t for t in targets if t.name in SPEAKS_DIALECTS]


async def _measure(targets: list[Target], cfg: Settings, idle_count: int, results: dict,
                   speed: list[float]) -> None:
    for target in targets:
        target.rss_start_mb = target.rss()
        await warm(target, cfg)
        target.rss_idle_mb = target.rss()
    for name in (s for s in cfg.scenarios if s in LOAD):
        rounds = cfg.repeat if name in REPEATED else 1
        runs: dict[str, list[dict]] = {target.name: [] for target in targets}
        speaking = _speaking(name, targets, results)
        # A dialect scenario's floor is a ratio to its chat twin on the same gateway: the twin runs
        # beside it, slice for slice, rather than minutes earlier in its own place in the run.
        twin = DIALECT_SCENARIOS[name][1] if name in DIALECT_SCENARIOS else None
        slices = cfg.slices(twin or name)
        sliced = dataclasses.replace(cfg, duration=cfg.duration / slices)
        for number in range(rounds):
            order = speaking if number % 2 == 0 else speaking[::-1]
            parts: dict[str, list[dict]] = {target.name: [] for target in order}
            beside: dict[str, list[dict]] = {target.name: [] for target in order}
            pair = [(name, parts), (twin, beside)] if twin else [(name, parts)]
            for part in range(slices):
                for target in order if part % 2 == 0 else order[::-1]:
                    if part == 0:
                        log(f"{name} -> {target.name}" + (f" (round {number + 1} of {rounds})" if rounds > 1 else "")
                            + (f", in {slices} slices" if slices > 1 else "") + (f", beside {twin}" if twin else ""))
                        if (probe := await asyncio.to_thread(speed_probe)) is not None:
                            speed.append(probe)
                    for what, into in pair if (number + part) % 2 == 0 else pair[::-1]:
                        into[target.name].append(await scenario(what, target, sliced, idle_count))
                        await asyncio.sleep(0.3)
                    if name == "c32" and cfg.flamegraph and target.name == "gateway" and number == part == 0:
                        results[target.name]["flamegraph"] = await asyncio.to_thread(flamegraph, target, cfg)
            for target in order:
                got = joined(parts[target.name])
                if twin:
                    got["twin"] = twin
                    got.update({f"twin_{key}": value for key, value in joined(beside[target.name]).items()
                                if key in _TWIN_FIGURES})
                runs[target.name].append(got)
        for target in speaking:
            results[target.name][name] = combine(runs[target.name])
    for target in targets:
        target.rss_end_mb = target.rss()


async def run(cfg: Settings, externals: list[Target], nofile: int) -> dict:
    """Start the builtin servers, measure every target, always stop what was started."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-"))
    servers, targets = [], []
    idle_count, idle_note = idle_cap(cfg.idle_streams, nofile)
    try:
        mock = start_mock(workdir, cfg.mock_port)
        servers.append(mock)
        log(f"mock upstream at {mock.url} (point other gateways' providers here)")
        server_cpu = int(SERVER_CPU) if pinning() else None
        if "direct" in cfg.builtin:
            targets.append(Target("direct", mock.url, mock))
        if "passthrough" in cfg.builtin:
            servers.append(start_passthrough(workdir, mock))
            targets.append(Target("passthrough", servers[-1].url, servers[-1], cpu_index=server_cpu))
        if "gateway" in cfg.builtin:
            servers.append(start_gateway(workdir, mock, cfg.models(), connections=max(4096, idle_count + 2048)))
            targets.append(Target("gateway", servers[-1].url, servers[-1], cpu_index=server_cpu))
        targets += externals
        results: dict[str, dict] = {t.name: {} for t in targets}
        speed: list[float] = []
        await _measure(targets, cfg, idle_count, results, speed)
        gateway_log = _log_summary(workdir / "gateway.log") if "gateway" in cfg.builtin else None
    finally:
        for server in reversed(servers):
            server.stop()
        if not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    parse = None
    if "parse" in cfg.scenarios:  # after the servers stopped: this process has its CPU to itself
        log("parse: CPU per event of each wire's stream parser, canned reads in this process")
        parse = relay_cost.measure(seconds=0.6)
    return {"parse": parse,
            "targets": {t.name: {"url": t.url, "pid": t.pid, "rss_start_mb": t.rss_start_mb,
                                 "rss_idle_mb": t.rss_idle_mb, "rss_end_mb": t.rss_end_mb,
                                 "scenarios": results[t.name]} for t in targets},
            "idle_streams": {"requested": cfg.idle_streams, "used": idle_count, "note": idle_note},
            "host_speed_ms": speed,
            "gateway_log": gateway_log}


def _log_summary(path: pathlib.Path) -> dict:
    lines = levels = 0
    warnings = []
    try:
        with open(path, "rb") as f:
            for line in f:
                lines += 1
                if b'"level":"error"' in line or b'"level":"warning"' in line:
                    levels += 1
                    if len(warnings) < 5:
                        warnings.append(line.decode(errors="replace").strip()[:300])
    except OSError:
        pass
    return {"lines": lines, "warnings_or_errors": levels, "first": warnings}

