"""`ai-enabler-proxy`: serve the gateway, check a config, hash a key for the config file."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import msgspec
import structlog

from proxy import __version__
from proxy.config import Config, ConfigError, load
from proxy.metrics.share import share_across_workers

log = structlog.get_logger("proxy")


async def _serve(cfg: Config, reuse_port: bool) -> None:
    from aiohttp import web

    from proxy import logs
    from proxy.app import build, build_health
    from proxy.edge import supervisor
    from proxy.edge.drain import DRAIN
    from proxy.edge.server import Runner
    from proxy.gateway import GATEWAY

    logs.configure(cfg.log_level)
    app = build(cfg)
    gw = app[GATEWAY]
    drain = app[DRAIN]
    # The drain owns the deadlines (proxy.edge.drain); aiohttp's own shutdown wait is a backstop.
    # Runner: aiohttp's, plus header/keep-alive limits, the connection cap and the header and
    # body deadlines (proxy.edge.server: slow or malformed clients).
    runner = Runner(app, cfg.limits, handler_cancellation=True, access_log=None, shutdown_timeout=2)
    gw.metrics.registry.register(runner.guard.collector())
    await runner.setup()
    sites = [web.TCPSite(runner, cfg.listen.host, cfg.listen.port, reuse_port=reuse_port, backlog=2048)]
    for site in sites:
        await site.start()
    probes = None  # the probe port serves only /healthz, /readyz and /metrics, through the drain too
    if cfg.listen.health_port:
        probes = web.AppRunner(build_health(gw), access_log=None)
        await probes.setup()
        await web.TCPSite(probes, cfg.listen.host, cfg.listen.health_port, reuse_port=reuse_port).start()
    _announce(cfg, gw)
    supervisor.serving()  # with --workers: this one counts as serving for /readyz
    _tune_gc()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain.begin, sig)
    await drain.requested.wait()
    await drain.run(sites)
    await runner.cleanup()
    if probes is not None:
        await probes.cleanup()
    log.info("stopped")


def _tune_gc() -> None:
    """Move start-up objects out of the collector's way and collect young garbage less often.

    Measured with bench/: full collections over ~60k long-lived objects cost ~21 ms each and
    were most of the c1 p99; freezing them and raising the thresholds cut CPU per request ~25%.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def _announce(cfg: Config, gw) -> None:
    where = f"http://{cfg.listen.host}:{cfg.listen.port}"
    log.info("listening", url=where, version=__version__, providers=len(gw.registry.by_name),
             data_dir=str(cfg.data_path))
    if gw.auth.dev_mode:
        log.warning("dev_mode", detail="no caller keys are configured: every request on loopback is accepted")
    from proxy.telemetry import castai

    if not castai.api_key(cfg):  # an `env:NAME` naming an empty variable is off too
        log.info("castai_sink_off", detail="API_KEY is not set: usage records are kept locally only")
    if cfg.demo:
        log.info("demo", detail=f"try: curl {where}/openai/v1/chat/completions -H 'Content-Type: application/json' "
                 "-d '{\"model\":\"mock-gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'")


def _worker(cfg_raw: bytes, reuse_port: bool) -> None:
    import uvloop

    cfg = msgspec.json.decode(cfg_raw, type=Config)
    uvloop.run(_serve(cfg, reuse_port))


def serve(cfg: Config) -> int:
    from proxy.check import listen_check

    listen_check(cfg)
    workers = cfg.listen.workers
    raw = msgspec.json.encode(cfg)
    if workers == 1:
        _worker(raw, reuse_port=False)
        return 0
    from proxy import logs
    from proxy.edge.supervisor import Supervisor

    logs.configure(cfg.log_level)
    share_across_workers()  # before the workers start: one /metrics answer for the group
    return Supervisor(_worker, (raw, True), workers).run()  # restarts workers that die (proxy.edge.supervisor)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-enabler-proxy", description="OpenAI-compatible LLM gateway")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("serve", help="run the gateway (the default)")
    run.add_argument("--config", help="YAML or JSON config file; embedded defaults without one")
    run.add_argument("--host", help="address to listen on (overrides listen.host; default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (overrides listen.port and PORT; default 8080)")
    run.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    check = sub.add_parser("check", help="validate a config and print what the gateway would run; exit 2 on errors")
    check.add_argument("--config", help="YAML or JSON config file; the embedded defaults without one")
    hash_key = sub.add_parser("hash-key", help="print the sha256 of a caller key, for auth.keys")
    hash_key.add_argument("key", nargs="?", help="the key; '-' or none: read from standard input "
                          "(a prompt without echo on a terminal), keeping it out of shell history and ps")
    report = sub.add_parser("report", help="the usage and savings report, from the local store in dataDir")
    report.add_argument("--config", help="the gateway's config file (for dataDir)")
    report.add_argument("--from", dest="start", help="RFC 3339, a date, Unix seconds, or an age (24h, 7d)")
    report.add_argument("--to", dest="end", help="as --from; default: now")
    report.add_argument("--group-by", default="model", help="model | provider | apiKey | tag | tag:KEY")
    report.add_argument("--filter", help="FIELD=VALUE[,…] on model, provider, apiKey, tag, status")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _hash_key(key: str | None) -> int:
    """Print a key's sha256. A key on the command line lands in shell history and `ps`, so `-` or
    no key reads it from stdin instead: one line, or a prompt without echo when stdin is a terminal.
    A key read so loses surrounding white space, as the gateway drops it from a presented key."""
    from proxy.keys import digest

    if key is None and sys.stdin.isatty():
        import getpass

        try:
            key = getpass.getpass("key (not echoed): ").strip()
        except (EOFError, KeyboardInterrupt):
            key = ""
    elif key is None or key == "-":
        key = sys.stdin.readline().strip()
    if not key:
        print("ai-enabler-proxy: hash-key: no key given (an empty line or end of input)", file=sys.stderr)
        return 2
    print(digest(key))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return _hash_key(args.key)
    try:
        if args.command == "report":
            from proxy.control.report import command

            return command(args)
        if args.command == "check":
            from proxy import check

            return check.command(args)
        cfg = load(getattr(args, "config", None))
        listen = cfg.listen
        listen = msgspec.structs.replace(
            listen,
            host=getattr(args, "host", None) or listen.host,
            port=getattr(args, "port", None) or listen.port,
            workers=getattr(args, "workers", None) or listen.workers,
        )
        cfg = msgspec.structs.replace(cfg, listen=listen)
        from proxy.edge import aiohttp_support

        if (problem := aiohttp_support.problem()) is not None:  # before any worker starts
            print(f"ai-enabler-proxy: cannot start: {problem}", file=sys.stderr)
            return 1
        return serve(cfg)
    except ConfigError as exc:
        print(f"ai-enabler-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ai-enabler-proxy: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
