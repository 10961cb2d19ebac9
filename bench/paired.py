"""The per-CPU ratios, measured with both servers under load at the same moment.

`python -m bench` runs one target after another. On a host whose speed moves (this one's flips
between two speeds, 1.9x apart, within seconds, with no steal time to show for it), two figures
taken seconds apart compare two machines, and a ratio of them moves more than the floors'
margins. Here the gateway and the passthrough, both pinned to the server CPU, take the same load
at the same time, each from its own wrk: whatever speed the host has, both have it, and the
ratio of their CPU time per request holds still from round to round. It answers the floors that
are per CPU-second (c256 requests, b32 chunks), and c32's requests per second where the server's
CPU is the limit; c1's latency and the paced streams need the servers one at a time, as
`python -m bench` runs them.

    python -m bench.paired                    # c32, c256 and b32, 5 rounds of 4 s
    python -m bench.paired --rounds 9 --json  # the rounds as JSON too

Sharing the CPU, each server gets about half of it and pays for the other's cache misses and
switches, so its CPU per request is higher than alone; the ratio is what this reports.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading

from bench import wrk
from bench.dialects import CHAT
from bench.procs import cpu_seconds, pin_self, raise_nofile
from bench.targets import KEY, start_gateway, start_mock, start_passthrough

# name -> (model, streamed, connections per server, events a request carries)
SCENARIOS = {"c32": ("bench-model", False, 32, 1), "c256": ("bench-model", False, 256, 1),
             "b32": ("bench-burst", True, 32, 100)}
# the gateway's requests (chunks) per CPU-s ÷ the passthrough's. c32's floor is on requests per
# second: when the server's CPU is what limits both, that is this ratio (python -m bench's c32
# meets it whenever the load CPU, not the server's, is the limit).
FLOORS = {"c32": 0.9, "c256": 1.0, "b32": 0.8}


def summarise(rounds: list[dict]) -> dict:
    """Each round's CPU µs per request of both, and the ratio (passthrough's ÷ gateway's: the
    gateway's requests per CPU-s as a share of the passthrough's); the medians over the rounds."""
    ratios = [r["passthrough_us"] / r["gateway_us"] for r in rounds]
    return {"rounds": rounds, "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
            "gateway_us": round(statistics.median(r["gateway_us"] for r in rounds), 1),
            "passthrough_us": round(statistics.median(r["passthrough_us"] for r in rounds), 1)}


def _round(servers: dict, model: str, stream: bool, connections: int, seconds: float) -> dict:
    body, headers = CHAT.body(model, stream), CHAT.headers(KEY)
    before = {name: cpu_seconds(server.pid) for name, server in servers.items()}
    runs: dict[str, dict] = {}

    def load(name: str) -> None:
        runs[name] = wrk.run(servers[name].url + "/chat/completions", body, headers, connections, seconds)

    threads = [threading.Thread(target=load, args=(name,)) for name in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {}
    for name, server in servers.items():
        run = runs[name]
        if run["errors"] or not run["requests"]:
            raise RuntimeError(f"{name}: {run['errors']} errors in {run['requests']} requests ({run['error_kinds']})")
        out[f"{name}_us"] = round((cpu_seconds(server.pid) - before[name]) / run["requests"] * 1e6, 1)
        out[f"{name}_rps"] = run["rps"]
    return out


def run(rounds: int, seconds: float, scenarios: list[str]) -> dict:
    raise_nofile()
    pin_self()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-paired-"))
    mock = start_mock(workdir)
    servers = {}
    try:
        servers["gateway"] = start_gateway(workdir, mock, [m for m, *_ in SCENARIOS.values()])
        servers["passthrough"] = start_passthrough(workdir, mock)
        results = {}
        for name in scenarios:
            model, stream, connections, _ = SCENARIOS[name]
            _round(servers, model, stream, connections, 1.0)  # warm up: connections, caches, the store's table
            got = [_round(servers, model, stream, connections, seconds) for _ in range(rounds)]
            results[name] = summarise(got)
            print(_line(name, results[name]), file=sys.stderr, flush=True)
        return results
    finally:
        for server in servers.values():
            server.stop()
        mock.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the gateway's spool and store of the run


def _line(name: str, result: dict) -> str:
    events = SCENARIOS[name][3]
    floor = FLOORS[name]
    verdict = "ok" if result["ratio"] >= floor else "MISS"
    per = "request" if events == 1 else f"stream of {events} events"
    return (f"{name:5s} ratio {result['ratio']:.3f} (rounds {result['ratio_min']:.3f}–{result['ratio_max']:.3f}; "
            f"floor {floor}: {verdict})  CPU per {per}: gateway {result['gateway_us']:.0f} µs, "
            f"passthrough {result['passthrough_us']:.0f} µs")


RESULTS_MD = pathlib.Path(__file__).with_name("RESULTS.md")
HEADING = "## Paired: per-CPU ratios with both servers under load at once"


def markdown(results: dict, command: str, when: str) -> str:
    """The section `--record` puts at the end of RESULTS.md (replacing the last one)."""
    lines = [HEADING, "", f"`{command}`, {when}. Each round: the gateway and the passthrough under the same load at "
             "the same moment, both pinned to the server CPU; the ratio is the passthrough's CPU time per request "
             "÷ the gateway's (the gateway's requests per CPU-second as a share of the passthrough's).", "",
             "| scenario | floor | ratio (median) | rounds | gateway CPU µs | passthrough CPU µs |",
             "|---|---:|---:|---|---:|---:|"]
    for name, result in results.items():
        rounds = ", ".join(f"{r['passthrough_us'] / r['gateway_us']:.3f}" for r in result["rounds"])
        per = "request" if SCENARIOS[name][3] == 1 else "stream"
        lines.append(f"| {name} | ≥ {FLOORS[name]} | {result['ratio']:.3f} | {rounds} | "
                     f"{result['gateway_us']:.0f} per {per} | {result['passthrough_us']:.0f} per {per} |")
    return "\n".join(lines) + "\n"


def record(section: str, path: pathlib.Path = RESULTS_MD) -> None:
    text = path.read_text() if path.exists() else ""
    at = text.find(HEADING)
    if at != -1:
        text = text[:at]
    path.write_text(text.rstrip("\n") + "\n\n" + section)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per round")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--json", action="store_true", help="print the rounds as JSON")
    p.add_argument("--record", action="store_true", help="put the run at the end of bench/RESULTS.md")
    args = p.parse_args()
    if not wrk.available():
        sys.exit("bench.paired needs wrk (apt-get install -y wrk)")
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    results = run(args.rounds, args.seconds, names)
    print("\n".join(_line(name, result) for name, result in results.items()))
    if args.json:
        print(json.dumps(results, indent=2))
    if args.record:
        command = "python -m bench.paired " + " ".join(sys.argv[1:])
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        record(markdown(results, command.strip(), when))


if __name__ == "__main__":
    main()
