"""One frozen, typed configuration, decoded once from YAML or JSON, then overlaid by env.

Keys are camelCase like the Helm values; durations are seconds. Unknown fields are refused
and every error names the path of the bad field (``$.auth.keys[0].sha256``).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import msgspec
import yaml

from proxy.catalog import CatalogConfig


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


class Auth(_Struct):
    keys: tuple[CallerKey, ...] = ()
    fallback_key: str | None = None
    castai_verification: bool = False
    admin_key: str | None = None


class Timeouts(_Struct):
    connect: float = 5.0
    first_byte: float = 300.0
    idle: float = 120.0
    max_stream: float = 1800.0


class ProviderTimeouts(_Struct):
    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None


class ProviderItem(_Struct):
    """A registration item, exactly Cast AI's schema plus our optional extensions."""

    name: str
    supported_provider: str
    models: tuple[str, ...]
    api_key: str | None = None
    url: str | None = None
    api_version: str | None = None
    is_hosted: bool = False
    weight: int = 1
    headers: dict[str, str] = {}
    timeouts: ProviderTimeouts | None = None


class Security(_Struct):
    allow_private_upstreams: bool = False


class Routing(_Struct):
    max_attempts: int = 3
    quality_weight: float = 0.5
    failure_threshold: int = 5
    ejection_seconds: float = 30.0
    retry_on_reset: bool = True


class Telemetry(_Struct):
    batch_size: int = 500
    flush_ms: int = 1000
    queue_size: int = 100_000


class CastAI(_Struct):
    api_key: str | None = None
    api_url: str = "https://api.cast.ai"
    cluster_id: str | None = None


class Limits(_Struct):
    max_body_bytes: int = 32 * 1024 * 1024
    max_response_bytes: int = 32 * 1024 * 1024


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
    catalog: CatalogConfig = CatalogConfig()  # hosted specs, quality scores, auto aliases
    store_url: str | None = None
    cache_url: str | None = None
    secret_key: str | None = None
    log_level: str = "info"
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
    return msgspec.structs.replace(
        cfg,
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
        from proxy.providers.mock import demo_item

        cfg = Config(providers=(demo_item(),), demo=True)
    else:
        file = pathlib.Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        cfg = decode(raw, suffix=file.suffix.lower())
    return _validate(_overlay(cfg, env))


def resolve_secret(value: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """A secret given as ``env:NAME`` is read from the environment at use time."""
    if value is None or not value.startswith("env:"):
        return value
    env = os.environ if env is None else env
    return env.get(value[4:]) or None
