"""Non-stream load with wrk (C, one thread on the load CPU), when it is installed."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

from bench.procs import LOAD_CPU, pinned

SCRIPT = pathlib.Path(__file__).with_name("post.lua")


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str | None:
    if not available():
        return None
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def run(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float) -> dict:
    """One wrk run; the numbers come from post.lua's `done()` summary line."""
    env = {**os.environ, "BENCH_BODY": body.decode(),
           "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in headers.items())}
    seconds = max(int(round(duration)), 1)
    cmd = pinned(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
                  "-s", str(SCRIPT), url], LOAD_CPU)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    raw = json.loads(line[len("BENCH_JSON "):])
    elapsed = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {"driver": "wrk", "concurrency": concurrency, "duration_s": round(elapsed, 3),
            "requests": raw["requests"], "rps": round(raw["requests"] / elapsed, 1),
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "errors": errors,
            "error_kinds": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")}}
