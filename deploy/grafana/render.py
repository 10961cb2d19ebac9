"""Render deploy/grafana/dashboard.json as an image, filled with a real gateway's metrics.

No Grafana server can be installed where this project is built, so this script stands in for the
screenshot. It starts `python -m proxy serve` on the embedded defaults (a temporary data directory,
a free loopback port), sends it a short mixed load (chat, streamed chat, an unknown model, a bad
body, and a registered provider whose upstream is a closed loopback port, so the errors and the
open circuit are real), scrapes `/metrics` every second, evaluates every panel's PromQL over the
scrapes (promql.py beside this file; what it cannot evaluate shows as "n/a"), and lays the panels
out on Grafana's 24-column grid as one SVG, which headless Chromium turns into a PNG. The scraper
adds `job` and `instance` as Prometheus would; `$__rate_interval` is four scrape intervals, what
Grafana picks for a short range; every variable is "All".

    python deploy/grafana/render.py [--seconds 30] [--svg FILE] [--png docs/img/dashboard.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from html import escape

from promql import Unsupported, parse_scrape, series  # beside this file: a script's folder is on sys.path

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
SCRAPE_EVERY = 1.0
JOB = "ai-enabler-proxy"
VARIABLES = {"__rate_interval": f"{4 * SCRAPE_EVERY:g}s", "job": ".*", "model": ".*", "provider": ".*"}


# --- a real gateway, a bounded load, the scrapes ---------------------------------------------

MIX = ("chat",) * 8 + ("stream",) * 6 + ("unknown", "bad", "offline", "offline")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(home: pathlib.Path, port: int, admin: str) -> subprocess.Popen:
    """On the embedded defaults: whatever the shell sets for a real Cast AI API, port or data stays out."""
    drop = ("API_KEY", "API_URL", "CLUSTER_ID", "API_KEY_FALLBACK", "PORT", "HEALTH_PORT", "DATA_DIR")
    env = {**{k: v for k, v in os.environ.items() if k not in drop},
           "DATA_DIR": str(home), "ADMIN_API_KEY": admin, "PYTHONPATH": str(ROOT)}
    with (home / "gateway.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)


async def ready(http, base: str, proc: subprocess.Popen, log: pathlib.Path) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the gateway was not ready within 20 s")


async def register_offline(http, base: str, admin: str) -> None:
    """A provider on a closed loopback port: its calls fail to connect and its circuit opens."""
    item = {"name": "offline", "supportedProvider": "OPENAI_COMPATIBLE", "apiKey": "unused-0000",
            "url": f"http://127.0.0.1:{free_port()}/v1", "isHosted": True, "models": ["local-llm"]}
    async with http.post(f"{base}/v1/llm/providers", json={"providers": [item]},
                         headers={"X-API-Key": admin}) as r:
        r.raise_for_status()


async def one_request(http, base: str, n: int) -> None:
    kind = MIX[n % len(MIX)]
    words = "Hello there " * (1 + n % 9)
    body = {"model": {"unknown": "no-such-model", "offline": "local-llm"}.get(kind, "mock-gpt"),
            "stream": kind == "stream", "messages": [{"role": "user", "content": words}]}
    data = b'{"model": "mock-gpt", "messages": [' if kind == "bad" else json.dumps(body).encode()
    async with http.post(f"{base}/openai/v1/chat/completions", data=data,
                         headers={"Content-Type": "application/json"}) as r:
        await r.read()


async def load(http, base: str, until: float) -> None:
    """A rate that swells and ebbs (5 to 35 requests a second), so the graphs have a shape."""
    n, tasks, start = 0, set(), time.monotonic()
    while (now := time.monotonic()) < until:
        per_second = 20 + 15 * math.sin((now - start) / 4)
        task = asyncio.ensure_future(one_request(http, base, n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(1 / per_second)
    await asyncio.gather(*tasks, return_exceptions=True)


async def scrape(http, base: str, instance: str, until: float) -> list:
    scrapes = []
    while time.monotonic() < until:
        async with http.get(f"{base}/metrics") as r:
            scrapes.append((time.time(), parse_scrape(await r.text(), JOB, instance)))
        await asyncio.sleep(SCRAPE_EVERY - (time.time() % SCRAPE_EVERY))
    return scrapes


async def collect(duration: float) -> list:
    import aiohttp

    port, admin = free_port(), "adm-" + secrets.token_hex(12)
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="render-") as home:
        proc = start_gateway(pathlib.Path(home), port, admin)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                await ready(http, base, proc, pathlib.Path(home) / "gateway.log")
                await register_offline(http, base, admin)
                until = time.monotonic() + duration
                got = await asyncio.gather(scrape(http, base, f"127.0.0.1:{port}", until + 2),
                                           load(http, base, until))
                return got[0]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # a drain that hangs must not outlive the script
                proc.kill()
                proc.wait()


# --- SVG ---------------------------------------------------------------------------------------

WIDTH, CELL, GAP, TOP = 1600, 30, 8, 56
COLUMN = (WIDTH - GAP) / 24
COLORS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#96d98d")
FONT = "font-family='Inter, DejaVu Sans, Helvetica, Arial, sans-serif'"


def human(v: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{v * 100:.3g}%"
    if unit == "currencyUSD":
        return f"${v:,.2f}" if abs(v) >= 0.01 or v == 0 else f"${v:.2g}"
    if unit == "s":
        return f"{v:.3g} s" if v >= 1 or v == 0 else (f"{v * 1e3:.3g} ms" if v >= 1e-3 else f"{v * 1e6:.3g} µs")
    step, names = (1024, ("B", "KiB", "MiB", "GiB")) if unit == "bytes" else (1000, ("", "K", "M", "B"))
    i = 0
    while abs(v) >= step and i < len(names) - 1:
        v, i = v / step, i + 1
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    return f"{v:.3g}{' ' if unit == 'bytes' else ''}{names[i]}{suffix}"


def box(p: dict) -> tuple[float, float, float, float]:
    g = p["gridPos"]
    return (GAP + g["x"] * COLUMN, TOP + g["y"] * (CELL + GAP), g["w"] * COLUMN - GAP, g["h"] * (CELL + GAP) - GAP)


def text(x, y, s, size=12, fill="#ccccdc", anchor="start", weight="normal") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' {FONT} font-size='{size}' fill='{fill}' "
            f"text-anchor='{anchor}' font-weight='{weight}'>{escape(s)}</text>")


def panel_data(panel: dict, scrapes: list) -> tuple[dict, list[str]]:
    data, failed = {}, []
    for target in panel.get("targets", []):
        try:
            data.update(series(target["expr"], target.get("legendFormat", ""), scrapes, VARIABLES))
        except Unsupported as exc:
            failed.append(f"n/a: {exc}")
    return data, failed


def stat_svg(p: dict, data: dict, x, y, w, h, unit) -> list[str]:
    points = next(iter(data.values()))
    last = points[-1][1]
    steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps") or [{"value": None, "color": "#73bf69"},
                                                                                 {"value": 80, "color": "#f2495c"}]
    color = [s["color"] for s in steps if s["value"] is None or last >= s["value"]][-1]
    return [line_svg(points, x + 4, y + h - 34, w - 8, 30, color, area=True),
            text(x + w / 2, y + h / 2 + 16, human(last, unit), 36, color, "middle", "bold")]


def line_svg(points: list, x, y, w, h, color, t0=None, t1=None, top=None, area=False) -> str:
    t0, t1 = t0 or points[0][0], t1 or points[-1][0]
    top = top or max(max(v for _, v in points), 1e-12)
    xy = [(x + w * (t - t0) / max(t1 - t0, 1e-9), y + h - h * v / top) for t, v in points]
    path = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
    fill = f"<polygon points='{xy[0][0]:.1f},{y + h} {path} {xy[-1][0]:.1f},{y + h}' fill='{color}' " \
           f"fill-opacity='0.15'/>" if area else ""
    return f"{fill}<polyline points='{path}' fill='none' stroke='{color}' stroke-width='1.5'/>"


def nice_top(peak: float) -> float:
    step = 10 ** math.floor(math.log10(peak / 4)) if peak > 0 else 1
    step *= next(m for m in (1, 2, 2.5, 5, 10) if peak / (step * m) <= 4)
    return step * 4


def timeseries_svg(data: dict, x, y, w, h, unit) -> list[str]:
    legend = [f"{name}" for name in data]
    rows = min(3, 1 + sum(len(s) * 7 + 24 for s in legend) // int(w - 20))
    px, py, pw, ph = x + 64, y + 32, w - 76, h - 58 - rows * 16
    t0 = min(p[0][0] for p in data.values())
    t1 = max(p[-1][0] for p in data.values())
    top = nice_top(max(v for p in data.values() for _, v in p))
    out = []
    for i in range(5):
        gy = py + ph - ph * i / 4
        out += [f"<line x1='{px}' y1='{gy:.1f}' x2='{px + pw}' y2='{gy:.1f}' stroke='#2c3235'/>",
                text(px - 6, gy + 4, human(top * i / 4, unit), 10, "#8e8e9b", "end")]
    for i in range(4):
        t = t0 + (t1 - t0) * i / 3
        out.append(text(px + pw * i / 3, py + ph + 14, time.strftime("%H:%M:%S", time.localtime(t)), 10,
                        "#8e8e9b", ("start", "middle", "middle", "end")[i]))
    lx, ly = x + 10, py + ph + 32
    for i, (name, points) in enumerate(data.items()):
        color = COLORS[i % len(COLORS)]
        out.append(line_svg(points, px, py, pw, ph, color, t0, t1, top))
        if lx + len(name) * 7 + 24 > x + w:
            lx, ly = x + 10, ly + 16
        if ly < y + h - 2:
            out += [f"<rect x='{lx:.1f}' y='{ly - 7:.1f}' width='14' height='3' fill='{color}'/>",
                    text(lx + 18, ly - 1, name, 11)]
        lx += len(name) * 7 + 24
    return out


def panel_svg(p: dict, scrapes: list) -> str:
    x, y, w, h = box(p)
    if p["type"] == "row":
        return f"<g class='row'>{text(x, y + 20, p['title'], 16, '#e0e0ec', weight='bold')}</g>"
    out = [f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' rx='2' fill='#181b1f' "
           f"stroke='#2a2d32'/>", text(x + 10, y + 20, p["title"], 13, "#e0e0ec", weight="bold")]
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    data, failed = panel_data(p, scrapes)
    if failed:
        out += [text(x + w / 2, y + h / 2 + 14 * i, msg[:90], 12, "#ff9830", "middle") for i, msg in enumerate(failed)]
    elif not data:
        out.append(text(x + w / 2, y + h / 2 + 6, "No data", 16, "#8e8e9b", "middle"))
    else:
        out += (stat_svg(p, data, x, y, w, h, unit) if p["type"] == "stat" else timeseries_svg(data, x, y, w, h, unit))
    return f"<g class='panel' data-type='{p['type']}' data-title='{escape(p['title'])}' " \
           f"data-series='{len(data)}'>{''.join(out)}</g>"


def render_svg(dashboard: dict, scrapes: list) -> str:
    panels = dashboard["panels"]
    height = max(box(p)[1] + box(p)[3] for p in panels) + GAP
    span = f"{time.strftime('%H:%M:%S', time.localtime(scrapes[0][0]))} to " \
           f"{time.strftime('%H:%M:%S', time.localtime(scrapes[-1][0]))}"
    head = [text(GAP, 26, dashboard["title"], 20, "#e0e0ec", weight="bold"),
            text(GAP, 46, f"{len(scrapes)} scrapes of a real gateway's /metrics, {span}, every variable "
                 f"\"All\"; rendered by deploy/grafana/render.py (no Grafana runs here)", 12, "#8e8e9b")]
    body = "".join(panel_svg(p, scrapes) for p in panels)
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height:.0f}' "
            f"viewBox='0 0 {WIDTH} {height:.0f}'><rect width='100%' height='100%' fill='#111217'/>"
            f"{''.join(head)}{body}</svg>\n")


def to_png(svg: pathlib.Path, png: pathlib.Path, height: int) -> None:
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        raise SystemExit("chromium is missing (apt-get install chromium): the SVG is at " + str(svg))
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="render-profile-") as profile:
        subprocess.run([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                        f"--user-data-dir={profile}", f"--window-size={WIDTH},{height}",
                        f"--screenshot={png}", svg.resolve().as_uri()],
                       check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=float, default=30, help="how long the load runs (default 30)")
    args.add_argument("--svg", type=pathlib.Path, default=None, help="keep the SVG here")
    args.add_argument("--png", type=pathlib.Path, default=None, help="write the PNG here (needs chromium)")
    opts = args.parse_args(argv)
    dashboard = json.loads(DASHBOARD.read_text())
    svg_text = render_svg(dashboard, asyncio.run(collect(opts.seconds)))
    with tempfile.TemporaryDirectory() as tmp:
        svg = opts.svg or pathlib.Path(tmp) / "dashboard.svg"
        svg.write_text(svg_text)
        if opts.png:
            to_png(svg, opts.png, int(re.search(r"height='(\d+)'", svg_text).group(1)))


if __name__ == "__main__":
    main()
