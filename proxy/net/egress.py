"""Egress policy: which forward proxy an outbound call goes through, and the TLS it uses.

Every call the gateway makes (providers, the Cast AI sink and heartbeat, key verification, OTLP
export) asks this module, so one set of rules applies to all of them. Each setting is taken from
the first source that sets it:

1. the provider item: `proxy` (`""`: direct), `noProxy`, `tls: {caFile, certFile, keyFile, serverName}`;
2. the config's `egress: {proxy, noProxy, caFile, certFile, keyFile}`;
3. the environment: `https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/`HTTP_PROXY` for
   http URLs, `no_proxy`/`NO_PROXY`; as in curl, the lowercase form wins when both are set.

`noProxy` entries (comma-separated in the environment), as curl and Go read them: `*` (nothing
is proxied); a domain, with or without a leading dot, matching itself and every name under it on
a label boundary (`example.com` matches `api.example.com`, never `notexample.com`); an IP address;
a CIDR range (`10.0.0.0/8`); any of those with `:port`; IPv6 in brackets (`[::1]:8443`). IP
entries match hosts written as IP literals: no name is resolved to decide. `localhost` and
loopback literals are never proxied (a proxy elsewhere cannot reach this machine's loopback).

Only `http://` proxies are supported (the common corporate one): an https upstream is reached
with `CONNECT host:port` and TLS to the origin inside the tunnel. Credentials in the proxy URL
(percent-decoded) become `Proxy-Authorization: Basic`; wherever a proxy is named in a message
or log, its password is masked.

A `caFile` is added to the system trust store (which still honours `SSL_CERT_FILE` and
`SSL_CERT_DIR`), not put in its place; `certFile`/`keyFile` present a client certificate.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import ssl
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

_LOOPBACK_NAMES = ("localhost", "localhost.")


class Proxy:
    """A forward proxy: where to connect, the header that authenticates, and a safe name for it."""

    __slots__ = ("host", "port", "url", "shown", "auth_line", "user", "password")

    def __init__(self, url: str) -> None:
        text = url.strip()
        if "://" not in text:  # `proxy.corp:3128`, as curl and the environment variables allow
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise ValueError("is not a valid proxy URL") from None
        if parts.scheme.lower() != "http":
            raise ValueError(f"must be an http:// proxy URL (not {parts.scheme}://)")
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be an http://[user:password@]host[:port] URL")
        self.host = parts.hostname
        self.port = port or 80
        self.user = unquote(parts.username) if parts.username is not None else None
        self.password = unquote(parts.password or "") if parts.username is not None else None
        authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.url = f"http://{parts.netloc.rpartition('@')[0]}@{authority}" if self.user is not None \
            else f"http://{authority}"
        self.shown = f"http://{parts.username}:****@{authority}" if self.user is not None else self.url
        self.auth_line = ""
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            self.auth_line = f"Proxy-Authorization: Basic {token}\r\n"

    def connect_head(self, host: str, port: int) -> bytes:
        """The CONNECT request that opens a tunnel to host:port."""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{self.auth_line}\r\n".encode()

    def __repr__(self) -> str:  # never the password, wherever a proxy ends up printed
        return f"Proxy({self.shown})"


def mask(url: str | None) -> str | None:
    """A proxy URL as it may be shown: its password replaced by ****."""
    if not url:
        return url
    try:
        return Proxy(url).shown
    except ValueError:
        return "****"  # unreadable: it may still hold a secret


class NoProxy:
    """The hosts that are reached directly, from `noProxy` / `NO_PROXY` entries."""

    __slots__ = ("everything", "names", "networks")

    def __init__(self, entries: Iterable[str]) -> None:
        self.everything = False
        self.names: list[tuple[str, int | None]] = []
        self.networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        for raw in entries:
            entry = raw.strip().lower()
            if entry == "*":
                self.everything = True
            elif entry:
                self._add(entry)

    def _add(self, entry: str) -> None:
        host, port = _split_port(entry)
        try:
            self.networks.append((ipaddress.ip_network(host, strict=False), port))
            return
        except ValueError:
            pass
        name = host.lstrip("*").lstrip(".").rstrip(".")
        if name:
            self.names.append((name, port))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        if address is not None:
            return any(address in network and want in (None, port) for network, want in self.networks)
        return any((host == name or host.endswith("." + name)) and want in (None, port)
                   for name, want in self.names)


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or CIDR, or a name."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def is_loopback(host: str) -> bool:
    host = host.lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=64)
def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """The system trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured) plus `ca_file`, and a
    client certificate when given. One per distinct set of files: contexts are costly to build."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=os.path.expanduser(ca_file))
    if cert_file:
        context.load_cert_chain(os.path.expanduser(cert_file), os.path.expanduser(key_file) if key_file else None)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Route:
    """How connections to one origin are made: through `proxy` or direct, with this TLS."""

    __slots__ = ("proxy", "ssl", "server_name")

    def __init__(self, proxy: Proxy | None, ssl_context: ssl.SSLContext | None, server_name: str | None) -> None:
        self.proxy = proxy
        self.ssl = ssl_context  # None: the client's default context
        self.server_name = server_name  # None: the origin's host name


class Policy:
    """Settings resolved for one provider (or for every call without one of its own)."""

    __slots__ = ("http", "https", "no_proxy", "ssl", "server_name", "_routes")

    def __init__(self, http: Proxy | None, https: Proxy | None, no_proxy: NoProxy,
                 ssl_context: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self.http = http
        self.https = https
        self.no_proxy = no_proxy
        self.ssl = ssl_context
        self.server_name = server_name
        direct = Route(None, ssl_context, server_name)
        # One Route per proxy, so that connection pools keyed by route are keyed by (origin, proxy).
        self._routes = {None: direct, id(http): Route(http, ssl_context, server_name),
                        id(https): Route(https, ssl_context, server_name)}

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or is_loopback(host) or self.no_proxy.matches(host, port):
            return None
        return proxy

    def route(self, scheme: str, host: str, port: int) -> Route:
        proxy = self.proxy_for(scheme, host, port)
        return self._routes[None if proxy is None else id(proxy)]

    def proxy_url(self, url: str) -> str | None:
        """For aiohttp's `proxy=`: the proxy URL (credentials included) for `url`, or None."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.proxy_for(scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        return None if proxy is None else proxy.url

    def options(self, url: str) -> dict:
        """aiohttp request options for a call to `url`: `proxy` (None: direct) and `ssl` (None: default)."""
        return {"proxy": self.proxy_url(url), "ssl": self.ssl}


def options(settings, url: str) -> dict:
    """The aiohttp options for a call that has no provider: the config's `egress` and the env."""
    return Egress(settings).default.options(url)


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The lowercase variable when it is set (even empty), else the uppercase one: curl's rule."""
    value = env.get(name.lower())
    return value if value is not None else env.get(name.upper())


def _proxy(text: str | None) -> Proxy | None:
    return Proxy(text) if text else None


class Egress:
    """The gateway's settings (config `egress` section and environment) and the policies built
    from them: `default` for calls without settings of their own, `policy(override)` for a
    provider with `proxy`, `noProxy` or `tls`."""

    def __init__(self, settings=None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.settings = settings  # config.Egress, or None
        self._env_http, self._env_https = _env(env, "http_proxy"), _env(env, "https_proxy")
        self._env_no_proxy = (_env(env, "no_proxy") or "").split(",")
        self._policies: dict[object, Policy] = {}
        self.default = self._build(None)

    def policy(self, override) -> Policy:
        """The policy for a provider's `config.Override` (cached: one per distinct override)."""
        found = self._policies.get(override)
        if found is None:
            found = self._policies[override] = self._build(override)
        return found

    def _build(self, override) -> Policy:
        settings = self.settings
        chosen = _first(getattr(override, "proxy", None), getattr(settings, "proxy", None))
        if chosen is not None:  # set by the provider or the config: both schemes, "" is direct
            http = https = _proxy(chosen)
        else:
            http, https = _proxy(self._env_http), _proxy(self._env_https)
        no_proxy = _first(getattr(override, "no_proxy", None), getattr(settings, "no_proxy", None))
        tls = getattr(override, "tls", None)
        ca_file = _first(getattr(tls, "ca_file", None), getattr(settings, "ca_file", None))
        if getattr(tls, "cert_file", None):
            cert_file, key_file = tls.cert_file, tls.key_file
        else:
            cert_file, key_file = getattr(settings, "cert_file", None), getattr(settings, "key_file", None)
        context = tls_context(ca_file, cert_file, key_file) if ca_file or cert_file else None
        return Policy(http, https, NoProxy(self._env_no_proxy if no_proxy is None else no_proxy), context,
                      getattr(tls, "server_name", None))


class Override(NamedTuple):
    """A provider item's own egress settings (None where it has none): a dict key for its policy."""

    proxy: str | None
    no_proxy: tuple[str, ...] | None
    tls: object | None  # config.ProviderTLS


def override(item) -> Override | None:
    """The item's egress settings; None (the common case) when it has none of its own."""
    if item.proxy is None and item.no_proxy is None and item.tls is None:
        return None
    return Override(item.proxy, item.no_proxy, item.tls)


def _first(*values):
    return next((value for value in values if value is not None), None)


def check(proxy: str | None, ca_file: str | None, cert_file: str | None, key_file: str | None,
          files: bool = True) -> None:
    """Refuse settings that cannot work, at load or registration time: ValueError says why.
    `files`: also load the TLS files (where the gateway runs, they must exist)."""
    if proxy:
        Proxy(proxy)
    if key_file and not cert_file:
        raise ValueError("keyFile is given without certFile")
    try:
        if files and (ca_file or cert_file):
            tls_context(ca_file, cert_file, key_file)
    except OSError as exc:  # ssl.SSLError included
        raise ValueError(f"the TLS files cannot be loaded: {why(exc)}") from None


def check_env(env: Mapping[str, str]) -> None:
    """The environment's proxy variables, used when the config sets no `egress.proxy`: refused
    where the gateway starts, naming the variable (ValueError), not where a call is first made."""
    for name in ("https_proxy", "http_proxy"):
        value = _env(env, name)
        if value:
            try:
                Proxy(value)
            except ValueError as exc:
                raise ValueError(f"env {name if env.get(name) is not None else name.upper()}: {exc}") from None


def why(exc: Exception) -> str:
    """A setting's failure in words safe to show: the OS's or OpenSSL's reason, never a path's content."""
    if isinstance(exc, OSError):
        return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
    return str(exc)  # this module's own ValueErrors: written to be shown
