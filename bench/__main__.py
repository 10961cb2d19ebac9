"""`python -m bench`: measure the gateway against the mock upstream and a bare passthrough.

Not part of the test suite. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import pathlib
import shlex
import sys

from bench import report
from bench.procs import pin_self, pinning, raise_nofile
from bench.run import BUILTIN, RESULTS, SCENARIOS, Settings, log, run
from bench.targets import KEY, Target


def _list(value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return items


def _pair(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name, rest


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="about one minute: 2 s scenarios, 2,000 idle streams")
    p.add_argument("--duration", type=float, help="seconds per load scenario (default 5; --quick 2)")
    p.add_argument("--scenarios", type=lambda v: _list(v, SCENARIOS), default=SCENARIOS,
                   help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--targets", type=lambda v: _list(v, BUILTIN), default=BUILTIN,
                   help=f"comma-separated subset of the built-in targets {','.join(BUILTIN)}")
    p.add_argument("--target", type=_pair, action="append", default=[], metavar="NAME=URL",
                   help="another gateway's OpenAI base URL (e.g. litellm=http://127.0.0.1:4000/v1); repeatable")
    p.add_argument("--target-pid", type=_pair, action="append", default=[], metavar="NAME=PID",
                   help="the server process of a --target, for its RSS and CPU time")
    p.add_argument("--target-key", default=KEY, help="the caller key sent to --target gateways")
    p.add_argument("--mock-port", type=int, default=0,
                   help="fixed port for the mock upstream, so a --target gateway can be configured for it")
    p.add_argument("--idle-streams", type=int, help="idle streams held open for memory (default 10000; --quick 2000)")
    p.add_argument("--stall-ms", type=float, default=1000.0, help="a gap between chunks longer than this is a stall")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="rounds of c1, c32, c256, s32, b32, the dialect scenarios and delayed, targets interleaved; "
                        "figures are medians "
                        "(3 or 5 on a noisy machine)")
    p.add_argument("--slice", type=float, default=1.0, metavar="S", dest="slice_s",
                   help="seconds per slice of c1, c32, c256, s32 and b32, taken in turn across the targets (0: none)")
    p.add_argument("--python-driver", action="store_true", help="use the Python driver even when wrk is installed")
    p.add_argument("--flamegraph", action="store_true", help="py-spy flame graph of the gateway under c32 load")
    p.add_argument("--record", action="store_true", help="also rewrite bench/RESULTS.md with this run")
    p.add_argument("--output", type=pathlib.Path, default=RESULTS / "latest.json", help="the JSON results file")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, server logs)")
    p.add_argument("--report", type=pathlib.Path, metavar="JSON",
                   help="run nothing: print the table of a saved results file (with --record, write RESULTS.md)")
    return p


def settings(args: argparse.Namespace) -> Settings:
    quick = args.quick
    return Settings(
        duration=args.duration or (2.0 if quick else 5.0),
        idle_streams=args.idle_streams if args.idle_streams is not None else (2000 if quick else 10_000),
        idle_hold=0.5 if quick else 1.0,
        stall_ms=args.stall_ms,
        warmup=0.5 if quick else 1.0,
        scenarios=args.scenarios,
        builtin=args.targets,
        use_wrk=not args.python_driver,
        flamegraph=args.flamegraph,
        keep=args.keep,
        mock_port=args.mock_port,
        repeat=max(args.repeat, 1),
        slice_s=max(args.slice_s, 0.0),
    )


def externals(args: argparse.Namespace) -> list[Target]:
    pids = {name: int(pid) for name, pid in args.target_pid}
    names = set()
    out = []
    for name, url in args.target:
        if name in BUILTIN or name in names:
            raise SystemExit(f"python -m bench: target name {name!r} is taken")
        names.add(name)
        out.append(Target(name, url, pid=pids.get(name), key=args.target_key))
    return out


def _output(result: dict, record: bool) -> None:
    rows = report.table(result)
    print(report.render_text(rows))
    for warning in result.get("warnings", []):
        print(f"warning: {warning}")
    skipped = report.skipped_text(result)
    if skipped:
        print(f"\n{skipped}")
    for text in (report.hour_text(result), report.speed_text(result)):
        if text:
            print(f"\n{text}")
    if result.get("parse"):
        print("\nStream parsing alone (python -m bench.relay_cost: canned reads, in this process):")
        print(report.parse_text(result["parse"]))
    if record:
        path = pathlib.Path(__file__).with_name("RESULTS.md")
        old = path.read_text() if path.exists() else ""
        notes = old[old.index(report.NOTES):] if report.NOTES in old else ""  # hand-written, kept
        path.write_text(report.results_md(result, rows) + ("\n" + notes if notes else ""))
        log(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.report:
        result = json.loads(args.report.read_text())
        report.derive(result)  # the current floors and figures, also for a run saved before them
        result["goals"] = report.goals(result)
        _output(result, args.record)
        return 0
    cfg = settings(args)
    pin_self()
    nofile = raise_nofile()
    started = datetime.datetime.now(datetime.UTC)
    log(f"scenarios {','.join(cfg.scenarios)} on {','.join(cfg.builtin)}"
        f"{''.join(',' + n for n, _ in args.target)}; {cfg.duration:g} s each")
    result = asyncio.run(run(cfg, externals(args), nofile))
    result.update({
        "when": started.isoformat(timespec="seconds"),
        "elapsed_s": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "machine": report.machine(), "versions": report.versions(), "pinned": pinning(),
        "settings": {k: getattr(cfg, k) for k in ("duration", "stall_ms", "delayed_ttfb_ms", "delayed_chunk_ms",
                                                  "paced_chunk_ms", "use_wrk", "repeat", "slice_s")},
    })
    report.derive(result)
    result["goals"] = report.goals(result)
    result["warnings"] = report.warnings(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"done in {result['elapsed_s']} s; JSON in {args.output}")
    _output(result, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
