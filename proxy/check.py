"""`ai-enabler-proxy check --config FILE`: validate a config and print what the gateway would run.

The same checks `serve` makes before it listens (the file, the environment overlay, the listen
address against the caller keys, every provider item), then a summary an operator can read
before a rollout: providers with their keys shown only as the last 4 characters, listeners,
the shared store, the usage sinks. Nothing is started and nothing is called.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from proxy.config import Config, ConfigError, load
from proxy.keys import last4


def listen_check(cfg: Config) -> None:
    """A listener off loopback needs caller keys or key verification: refuse to start without."""
    from proxy.pipeline.auth import is_loopback

    if not cfg.auth.keys and not cfg.auth.castai_verification and not is_loopback(cfg.listen.host):
        raise ConfigError(
            f"refusing to listen on {cfg.listen.host} with no caller keys: add auth.keys to the config "
            "file (see `ai-enabler-proxy hash-key`) or enable auth.castaiVerification, "
            "or listen on 127.0.0.1 for local development")


def masked_url(url: str) -> str:
    """A URL with its credentials hidden: `redis://user:***@host:6379/0`, `https://***@host`
    (a user alone is often a token). The host part is kept as written: urlsplit's `port` cannot
    read the host lists of Sentinel and Cluster URLs (`h1:26379,h2:26379`)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return urlunsplit(parts._replace(netloc=f"{shown}@{hosts}"))


def _key(key: str | None) -> str:
    if not key:
        return "none"
    if key.startswith("env:"):
        from proxy.config import resolve_secret

        return f"{key} ({last4(resolve_secret(key))})" if resolve_secret(key) else f"{key} (not set)"
    return last4(key)


def describe(cfg: Config) -> list[str]:
    from proxy.telemetry import castai

    listen = cfg.listen
    lines = [f"listen: http://{listen.host}:{listen.port} ({listen.workers} worker"
             f"{'s' if listen.workers > 1 else ''})"]
    if listen.health_port:
        lines.append(f"probes: http://{listen.host}:{listen.health_port} (/healthz, /readyz, /metrics)")
    lines.append(f"providers: {len(cfg.providers)}{' (the embedded demo)' if cfg.demo else ''}")
    for item in cfg.providers:
        lines.append(f"  {item.name}: {item.supported_provider} {item.url or '(default URL)'} "
                     f"models={','.join(item.models)} key={_key(item.api_key)}")
    lines.append(f"store: {'redis ' + masked_url(cfg.store_url) if cfg.store_url else 'embedded'}; "
                 f"data in {cfg.data_path}")
    sinks = [f"local ({cfg.data_path / 'usage.db'})"]
    if castai.api_key(cfg):
        sinks.append(f"castai ({cfg.castai.api_url}, key {last4(castai.api_key(cfg))})")
    if cfg.telemetry.otlp_url:
        sinks.append(f"otlp ({masked_url(cfg.telemetry.otlp_url)})")
    lines.append("sinks: " + ", ".join(sinks))
    auth = cfg.auth
    admin = "on" if auth.admin_key or any(k.admin for k in auth.keys) else "off"
    verification = "on" if auth.castai_verification else "off"
    lines.append(f"auth: {len(auth.keys)} caller key(s), admin API {admin}, Cast AI key verification {verification}")
    lines.append(f"log level: {cfg.log_level}")
    return lines


def command(args) -> int:
    """Exit 0 and the summary when the config would serve; a `ConfigError` otherwise (main
    prints it and exits 2)."""
    from proxy.config import ConfigError
    from proxy.errors import ProxyError
    from proxy.upstream.registry import validate

    cfg = load(args.config)
    listen_check(cfg)
    try:
        validate(cfg.providers, cfg.security.allow_private_upstreams)
    except ProxyError as exc:
        raise ConfigError(f"$.{exc}") from None
    print(f"{args.config or '(embedded defaults)'}: ok")
    for line in describe(cfg):
        print(line)
    return 0
