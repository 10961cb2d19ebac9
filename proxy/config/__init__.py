"""One frozen, typed configuration, decoded once from YAML or JSON, then overlaid by env.

Keys are camelCase like the Helm values; durations are seconds. Unknown fields are refused
and every error names the path of the bad field (``$.auth.keys[0].sha256``).
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
import yaml
from msgspec import Meta

from proxy.config.catalog import CatalogConfig
from proxy.net import egress


class Price(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """A list price: USD per 1M tokens (`prices:` in the config, and the bundled table's rows)."""

    input: float  # USD per 1M prompt tokens
    output: float  # USD per 1M completion tokens
    cached_input: float | None = None


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field and the reason."""


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    pass


class Listen(_Struct):
    host: str = "127.0.0.1"
    port: int = 8080
    health_port: int | None = None
    workers: int = 1


class CallerKey(_Struct):
    id: str
    sha256: str
    name: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    admin: bool = False
    models: tuple[str, ...] | None = None  # None: every model


class Verification(_Struct):
    """Cast AI key verification (`auth.castaiVerification`): cache lifetimes and the outage policy.

    While the Cast AI API is down (no answer, or one that is not 200/401/403), `serveCached`
    accepts keys it verified within `staleTtl` seconds; `refuse` accepts only fresh answers.
    Every other key gets 503 with `Retry-After: retryAfter`.
    """

    positive_ttl: Annotated[float, Meta(gt=0)] = 60.0
    negative_ttl: Annotated[float, Meta(gt=0)] = 5.0
    outage: Literal["serveCached", "refuse"] = "serveCached"
    stale_ttl: Annotated[float, Meta(gt=0)] = 86400.0
    timeout: Annotated[float, Meta(gt=0)] = 5.0
    retry_after: Annotated[int, Meta(ge=1)] = 5


class Auth(_Struct):
    keys: tuple[CallerKey, ...] = ()
    fallback_key: str | None = None
    castai_verification: bool = False
    admin_key: str | None = None
    verification: Verification = Verification()


class Cache(_Struct):
    """The response cache (proxy.pipeline.cache): off unless enabled here, and then per request opt-in."""

    enabled: bool = False
    ttl: Annotated[float, Meta(gt=0)] = 300.0
    max_entry_bytes: Annotated[int, Meta(ge=1)] = 1024 * 1024


class Timeouts(_Struct):
    connect: float = 5.0
    first_byte: float = 300.0
    idle: float = 120.0
    max_stream: float = 1800.0


class ProviderTimeouts(_Struct):
    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None


class ProviderTLS(_Struct):
    """A provider's own TLS: a CA added to the trust store, a client certificate, the name to verify."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # SNI and the name the certificate must carry, when not the URL's host


class ProviderItem(_Struct):
    """A registration item, exactly Cast AI's schema plus our optional extensions."""

    name: str
    supported_provider: str
    models: tuple[str, ...]
    api_key: str | None = None
    url: str | None = None
    api_version: str | None = None
    region: str | None = None  # a cloud region, for providers addressed by one
    credentials: str | None = None  # a cloud credential (JSON inline, `env:NAME` or `file:/path`)
    is_hosted: bool = False
    weight: int = 1
    headers: dict[str, str] = {}
    timeouts: ProviderTimeouts | None = None
    proxy: str | None = None  # egress proxy URL for this provider; "" = direct (proxy.net.egress)
    no_proxy: tuple[str, ...] | None = None
    tls: ProviderTLS | None = None


class Egress(_Struct):
    """Outbound calls through a forward proxy and with extra trust (proxy.net.egress); None: from the env."""

    proxy: str | None = None
    no_proxy: tuple[str, ...] | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class Security(_Struct):
    allow_private_upstreams: bool = False


class RetryBudget(_Struct):
    """Retries (any attempt after a request's first) allowed over the last `window` seconds:
    `ratio` of the requests in it plus `minPerSecond` × `window` (while every provider is
    down, the providers see at most 1.2 × the client rate + 3/s)."""

    ratio: Annotated[float, Meta(ge=0)] = 0.2
    min_per_second: Annotated[float, Meta(ge=0)] = 3.0
    window: Annotated[float, Meta(gt=0)] = 10.0


class Routing(_Struct):
    max_attempts: int = 3
    quality_weight: float = 0.5
    failure_threshold: int = 5
    ejection_seconds: float = 30.0
    # A connection closed with no answer after the request was written whole: the provider may
    # have read (and charged) it, so by default it is a 502, never sent again. True: it is retried
    # on the next candidate (every attempt in the request's record), at the risk of paying twice.
    retry_on_reset: bool = False
    retry_budget: RetryBudget = RetryBudget()
    # The longest a request waits on a provider's 429 (its Retry-After, or a backoff when that is
    # missing or unreadable) to try it again; a longer wait returns the 429 at once. 0: never wait.
    retry_after_cap: Annotated[float, Meta(ge=0)] = 0.0


class Telemetry(_Struct):
    """Usage records: batching, the disk spool, the sinks (docs/records.md, docs/reliability.md E)."""

    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 500  # a sink gets a batch every N records…
    flush_ms: Annotated[int, Meta(ge=1)] = 1000  # …or every T ms
    queue_size: Annotated[int, Meta(ge=1)] = 100_000  # records held in memory while the disk refuses writes
    commit_ms: Annotated[int, Meta(ge=1, le=100)] = 50  # group commit (fsync) of the spool
    spool_max_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 256 * 1024 * 1024
    when_full: Literal["drop_oldest", "reject"] = "drop_oldest"
    otlp_url: str | None = None  # any OTLP/HTTP collector (its logs endpoint, or a base URL)
    otlp_headers: dict[str, str] = {}
    export_timeout: Annotated[float, Meta(gt=0)] = 10.0  # seconds per export request
    retry_initial: Annotated[float, Meta(gt=0)] = 1.0  # first retry after ≥ this many seconds
    retry_max: Annotated[float, Meta(gt=0)] = 32.0  # backoff cap (jitter adds up to half again)
    heartbeat_seconds: Annotated[float, Meta(gt=0)] = 60.0
    retention_days: Annotated[float, Meta(gt=0)] = 30.0  # the local usage store
    dead_letter_max_bytes: Annotated[int, Meta(ge=0)] = 64 * 1024 * 1024


class Drain(_Struct):
    """SIGTERM: readiness fails at once; the listener stays open `acceptSeconds` (preStop), then
    in-flight requests get until `deadlineSeconds` after the signal; telemetry gets `flushSeconds`."""

    accept_seconds: Annotated[float, Meta(ge=0)] = 5.0
    deadline_seconds: Annotated[float, Meta(ge=0)] = 20.0
    flush_seconds: Annotated[float, Meta(ge=0)] = 3.0


class CastAI(_Struct):
    api_key: str | None = None
    api_url: str = "https://api.cast.ai"
    cluster_id: str | None = None


class Limits(_Struct):
    """Admission and HTTP server limits (docs/reliability.md B and C). 0 turns a cap off."""

    max_body_bytes: int = 32 * 1024 * 1024
    # request bodies being read at once, in bytes (a body of unknown length counts as maxBodyBytes):
    # past it a request waits up to bodyBufferWait seconds, then gets a fast 503
    max_body_buffer: Annotated[int, Meta(ge=0)] = 256 * 1024 * 1024
    body_buffer_wait: Annotated[float, Meta(ge=0)] = 5.0
    max_response_bytes: int = 32 * 1024 * 1024
    max_in_flight: Annotated[int, Meta(ge=0)] = 0  # chat/embeddings served at once; more: fast 503
    max_rss_mib: Annotated[int, Meta(ge=0)] = 0  # above this resident size new requests get 503
    max_connections: Annotated[int, Meta(ge=0)] = 4096  # open client connections
    keep_alive: Annotated[float, Meta(gt=0)] = 75.0  # idle keep-alive connections close after
    header_timeout: Annotated[float, Meta(gt=0)] = 10.0  # first byte of a request to its last header
    min_body_rate: Annotated[int, Meta(ge=0)] = 1024  # bytes/s a request body must keep up…
    body_rate_window: Annotated[float, Meta(gt=0)] = 10.0  # …measured over windows this long
    max_header_line: Annotated[int, Meta(ge=256)] = 8190  # request line and each header line
    max_headers: Annotated[int, Meta(ge=8)] = 100
    max_header_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024  # the whole header section


class State(_Struct):
    """The shared store (STORE_URL) while it cannot be reached. `local`: each replica counts limits
    alone (RPM and TPM shared out between the replicas alive; budgets on the spend last known plus
    its own) and adds its counts to the store once it is back. `refuse`: keys with limits get 503."""

    outage: Literal["local", "refuse"] = "local"
    heartbeat_seconds: Annotated[float, Meta(gt=0)] = 2.0  # replicas count each other alive by this beat


class ResponsesDialect(_Struct):
    # Hosted tools (web_search, file_search, …) a translation to chat cannot offer: a 400 naming
    # the tool (`reject`), or left out, logged and tagged `dropped_tools:TYPE` (`drop`).
    hosted_tools: Literal["reject", "drop"] = "reject"


class Dialects(_Struct):
    responses: ResponsesDialect = ResponsesDialect()


class Config(_Struct):
    listen: Listen = Listen()
    data_dir: str = "~/.local/share/ai-enabler-proxy"
    auth: Auth = Auth()
    providers: tuple[ProviderItem, ...] = ()
    security: Security = Security()
    timeouts: Timeouts = Timeouts()
    routing: Routing = Routing()
    telemetry: Telemetry = Telemetry()
    castai: CastAI = CastAI()
    limits: Limits = Limits()
    drain: Drain = Drain()
    catalog: CatalogConfig = CatalogConfig()  # hosted specs, quality scores, auto aliases
    cache: Cache = Cache()  # the response cache
    egress: Egress = Egress()  # forward proxy, NO_PROXY, CA and client certificate for outbound calls
    dialects: Dialects = Dialects()  # the inbound APIs besides chat (proxy/dialects/)
    prices: dict[str, Price] = {}  # USD per 1M tokens, over the bundled table: "model" or "provider/model"
    store_url: str | None = None
    state: State = State()  # the shared store's outage policy
    cache_url: str | None = None
    secret_key: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    demo: bool = False  # true when running on the embedded defaults

    @property
    def data_path(self) -> pathlib.Path:
        return pathlib.Path(os.path.expanduser(self.data_dir))


_ENV_INT = {"PORT", "HEALTH_PORT"}


def _validate(cfg: Config) -> Config:
    if not 1 <= cfg.listen.workers <= 256:
        raise ConfigError("$.listen.workers: must be between 1 and 256")
    for i, key in enumerate(cfg.auth.keys):
        digest = key.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"$.auth.keys[{i}].sha256: must be 64 hex characters")
    if cfg.routing.max_attempts < 1:
        raise ConfigError("$.routing.maxAttempts: must be at least 1")
    if not 0.0 <= cfg.routing.quality_weight <= 1.0:
        raise ConfigError("$.routing.qualityWeight: must be between 0 and 1")
    _check_egress(cfg, files=False)
    return cfg


def _check_egress(cfg: Config, files: bool) -> Config:
    """The proxy URL always; the TLS files only where they will be used (`load`): a config
    rendered elsewhere (a chart's) names files that exist only where the gateway runs."""
    e = cfg.egress
    try:
        egress.check(e.proxy, e.ca_file, e.cert_file, e.key_file, files=files)
    except ValueError as exc:
        raise ConfigError(f"$.egress: {exc}") from None
    return cfg


def decode(raw: bytes, *, suffix: str = ".yaml") -> Config:
    """Decode a config document; YAML unless the file is .json."""
    try:
        if suffix == ".json":
            return _validate(msgspec.json.decode(raw, type=Config))
        data = yaml.safe_load(raw) or {}
        return _validate(msgspec.convert(data, type=Config))
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}") from None


def _overlay(cfg: Config, env: Mapping[str, str]) -> Config:
    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value else None

    listen, auth, castai = cfg.listen, cfg.auth, cfg.castai
    for name in _ENV_INT:
        if get(name) is not None and not get(name).isdigit():
            raise ConfigError(f"env {name}: must be a port number")
    if get("PORT"):
        listen = msgspec.structs.replace(listen, port=int(get("PORT")))
    if get("HEALTH_PORT"):
        listen = msgspec.structs.replace(listen, health_port=int(get("HEALTH_PORT")))
    if get("API_KEY_FALLBACK"):
        auth = msgspec.structs.replace(auth, fallback_key=get("API_KEY_FALLBACK"))
    if get("ADMIN_API_KEY"):
        auth = msgspec.structs.replace(auth, admin_key=get("ADMIN_API_KEY"))
    castai = msgspec.structs.replace(
        castai,
        api_key=get("API_KEY") or castai.api_key,
        api_url=get("API_URL") or castai.api_url,
        cluster_id=get("CLUSTER_ID") or castai.cluster_id,
    )
    log_level = (get("LOG_LEVEL") or cfg.log_level).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("env LOG_LEVEL: must be debug, info, warning or error")
    return msgspec.structs.replace(
        cfg,
        log_level=log_level,
        listen=listen,
        auth=auth,
        castai=castai,
        data_dir=get("DATA_DIR") or cfg.data_dir,
        store_url=get("STORE_URL") or cfg.store_url,
        cache_url=get("CACHE_URL") or cfg.cache_url,
        secret_key=get("PROXY_SECRET_KEY") or cfg.secret_key,
    )


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the file (or the embedded defaults when there is none) and overlay the env."""
    env = os.environ if env is None else env
    if path is None:
        # The embedded defaults are data shipped in the package (the demo provider and its model).
        defaults = importlib.resources.files("proxy.data").joinpath("defaults.json").read_bytes()
        cfg = msgspec.structs.replace(decode(defaults, suffix=".json"), demo=True)
    else:
        file = pathlib.Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        cfg = decode(raw, suffix=file.suffix.lower())
    cfg = _check_egress(_validate(_overlay(cfg, env)), files=True)
    if cfg.egress.proxy is None:  # HTTPS_PROXY / HTTP_PROXY are used: a bad one named now, not a crash later
        try:
            egress.check_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return cfg


def resolve_secret(value: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """A secret given as ``env:NAME`` is read from the environment at use time."""
    if value is None or not value.startswith("env:"):
        return value
    env = os.environ if env is None else env
    return env.get(value[4:]) or None
