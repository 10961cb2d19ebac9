"""The provider registry: items from the config file and the admin API, indexed by model.

Admin registrations persist in SQLite with their keys sealed by the vault; config items are
read from the file at every start and cannot be changed through the API. Readers use the
immutable index (`by_model`), swapped whole on every change. The workers of one gateway share
the SQLite file: each reloads it when another one changed it (`refresh`, driven by the store).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec

from proxy import providers
from proxy.config import ProviderItem, ProviderTLS, resolve_secret
from proxy.errors import Conflict, InvalidRequest, NotFound, Unavailable
from proxy.keys import last4
from proxy.net import egress, netguard
from proxy.providers import credentials
from proxy.providers.base import Adapter, Target
from proxy.state.base import StateUnavailable
from proxy.state.sqlite import ProviderRows
from proxy.upstream.vault import Vault

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class Provider:
    """A registered provider, ready to route to."""

    __slots__ = ("item", "adapter", "source", "hosted", "weight", "egress", "_key", "_target")

    def __init__(self, item: ProviderItem, adapter: Adapter, source: str, key: str | None) -> None:
        self.item = item
        self.adapter = adapter
        self.source = source  # "config" | "api"
        self.hosted = item.is_hosted
        self.weight = max(item.weight, 1)
        self.egress = egress.override(item)  # None unless the item sets proxy, noProxy or tls
        self._key = key
        self._target = Target(item.name, item.url, None if (key or "").startswith("env:") else key,
                              item.api_version, dict(item.headers), item.region, item.credentials)

    @property
    def name(self) -> str:
        return self.item.name

    def target(self) -> Target:
        if self._key and self._key.startswith("env:"):
            return msgspec.structs.replace(self._target, api_key=resolve_secret(self._key))
        return self._target

    def public(self) -> dict:
        """The item as listed: the key only as its last 4 characters."""
        out = msgspec.to_builtins(self.item)
        key = self._key or ""
        out["apiKey"] = key if key.startswith("env:") else last4(key)
        if out.get("headers"):  # static headers may carry credentials too: shown like keys
            out["headers"] = {name: last4(value) for name, value in out["headers"].items()}
        if credentials.is_inline(out.get("credentials")):
            out["credentials"] = last4(out["credentials"])
        if out.get("proxy"):  # its password never shown
            out["proxy"] = egress.mask(out["proxy"])
        out["source"] = self.source
        return out


def _bad(index: int, field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"providers[{index}].{field}: {why}", param=f"providers[{index}].{field}")


def check_url(url: str, index: int, private_ok: bool = True) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise _bad(index, "url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(index, "url", "must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc or parts.query \
            or parts.fragment:
        raise _bad(index, "url", "must not carry credentials, a query or a fragment")
    if netguard.literal_address(parts.hostname) is None and \
            not all(c.isalnum() or c in "-." for c in parts.hostname):
        raise _bad(index, "url", "has an invalid host name")
    try:
        netguard.check_host(parts.hostname, private_ok)
    except netguard.Refused as exc:
        raise _bad(index, "url", str(exc)) from None


def validate(items: Iterable[ProviderItem], allow_private: bool = True) -> list[ProviderItem]:
    """Check a whole registration; one bad item fails all of them."""
    checked, seen = [], set()
    for i, item in enumerate(items):
        if not item.name or len(item.name) > 128 or not set(item.name) <= _NAME_CHARS:
            raise _bad(i, "name", "must be 1-128 characters of letters, digits, '.', '_' or '-'")
        if item.name in seen:
            raise _bad(i, "name", f"duplicate name {item.name!r} in this request")
        seen.add(item.name)
        if item.supported_provider not in providers.TABLE:
            raise _bad(i, "supportedProvider",
                       f"unknown provider type {item.supported_provider!r}; one of {', '.join(providers.names())}")
        caps = providers.adapter(item.supported_provider).caps
        if not item.models or any(not m or len(m) > 256 or not m.isprintable() for m in item.models):
            raise _bad(i, "models", "must be a non-empty list of model names")
        if caps.needs_url and not item.url:
            raise _bad(i, "url", f"is required for {item.supported_provider}")
        if item.url:
            check_url(item.url, i, private_ok=allow_private or item.is_hosted)
        if caps.needs_api_version and not item.api_version:
            raise _bad(i, "apiVersion", f"is required for {item.supported_provider}")
        _check_cloud(i, item, caps)
        if item.weight < 1 or item.weight > 1000:
            raise _bad(i, "weight", "must be between 1 and 1000")
        for name, value in item.headers.items():
            if not name.isascii() or not all(0x20 <= ord(c) < 0x7F for c in name + value):
                raise _bad(i, "headers", "names and values must be printable ASCII")
        if item.api_key is not None and not all(0x20 < ord(c) < 0x7F for c in item.api_key):
            raise _bad(i, "apiKey", "must be printable ASCII without spaces")
        _check_egress(item, i)
        checked.append(item)
    return checked


def _check_cloud(index: int, item: ProviderItem, caps) -> None:
    """A provider signed with a cloud credential needs its extra installed, and a region when it has no URL."""
    extra = caps.extra or (caps.keyless_extra if item.api_key is None else None)
    if extra is not None and not credentials.installed(extra):
        raise _bad(index, "supportedProvider", f"{item.supported_provider} needs the '{extra}' extra: "
                   f"pip install 'ai-enabler-proxy[{extra}]'")
    if caps.needs_region and not item.region and not item.url:
        raise _bad(index, "region", f"is required for {item.supported_provider} (or a `url`)")
    # refused rather than ignored: keys put there by mistake would be stored, and the default chain used
    if item.credentials is not None and not {caps.extra, caps.keyless_extra} & credentials.SPEC_EXTRAS:
        raise _bad(index, "credentials", f"is not used by {item.supported_provider}")


def _check_egress(item: ProviderItem, index: int) -> None:
    """A proxy URL that can be used, TLS files that load: refused at registration, not at first call."""
    tls = item.tls or ProviderTLS()
    for field, files in (("proxy", (item.proxy, None, None, None)),
                         ("tls", (None, tls.ca_file, tls.cert_file, tls.key_file))):
        try:
            egress.check(*files)
        except ValueError as exc:
            raise _bad(index, field, str(exc)) from None
    if tls.server_name is not None and (not tls.server_name or not all(c.isalnum() or c in "-." for c in
                                                                       tls.server_name)):
        raise _bad(index, "tls.serverName", "must be a host name")
    if item.no_proxy is not None and any(not e.isprintable() or "," in e for e in item.no_proxy):
        raise _bad(index, "noProxy", "entries must be printable, one host or range each")


_SEALED = "sealed:"  # a static header value stored sealed by the vault


class Registry:
    """Config items and admin registrations. With a `shared` table (proxy.state, Redis mode)
    the registrations live there, shared by every replica, and `refresh` reloads them when
    another replica changed them; otherwise they persist in a SQLite file (`table`) that the
    other workers of this gateway share, and `refresh` reloads it when one of them changed it."""

    def __init__(self, config_items: Iterable[ProviderItem], vault: Vault, db_path: str | None,
                 allow_private: bool = True, shared=None) -> None:
        self._vault = vault
        self.allow_private = allow_private
        self._private_hosts: frozenset[str] = frozenset()
        self._shared = shared
        self._writes = 0  # admin changes completed here through shared state
        self.table = ProviderRows(db_path) if db_path and shared is None else None
        self._config = {p.name: p for p in self._make(validate(config_items, allow_private), "config")}
        self._api: dict[str, Provider] = self._load(self.table.rows()) if self.table else {}
        self.by_name: dict[str, Provider] = {}
        self.by_model: dict[str, tuple[Provider, ...]] = {}
        self._reindex()

    def _load(self, rows: list[tuple[bytes, str | None]]) -> dict[str, Provider]:
        loaded = {}
        for raw, sealed in rows:
            item = msgspec.json.decode(raw, type=ProviderItem)
            if item.headers:
                item = msgspec.structs.replace(item, headers={
                    name: self._vault.open(value[len(_SEALED):]) if value.startswith(_SEALED) else value
                    for name, value in item.headers.items()})
            if item.credentials and item.credentials.startswith(_SEALED):
                item = msgspec.structs.replace(item, credentials=self._vault.open(item.credentials[len(_SEALED):]))
            if item.proxy and item.proxy.startswith(_SEALED):
                item = msgspec.structs.replace(item, proxy=self._vault.open(item.proxy[len(_SEALED):]))
            key = self._vault.open(sealed) if sealed else None
            loaded[item.name] = Provider(item, providers.adapter(item.supported_provider), "api", key)
        return loaded

    def _make(self, items: list[ProviderItem], source: str) -> list[Provider]:
        made = []
        for item in items:
            key = item.api_key
            stripped = msgspec.structs.replace(item, api_key=None)
            made.append(Provider(stripped, providers.adapter(item.supported_provider), source, key))
        return made

    def _reindex(self) -> None:
        by_name = {**self._api, **self._config}  # the file wins over the API
        by_model: dict[str, list[Provider]] = {}
        for provider in by_name.values():
            for model in provider.item.models:
                by_model.setdefault(model, []).append(provider)
        self.by_name = by_name
        self.by_model = {m: tuple(ps) for m, ps in by_model.items()}
        self._private_hosts = frozenset(urlsplit(p.item.url).hostname or "" for p in by_name.values()
                                        if p.item.url and p.hosted)

    def private_ok(self, host: str) -> bool:
        """May a connection to `host` reach loopback or private addresses? (connect-time check)"""
        return self.allow_private or host in self._private_hosts

    def _prepare(self, items: list[ProviderItem]) -> tuple[list[Provider], list[tuple[str, bytes, str | None]]]:
        """Validate a registration; the providers and their rows, keys sealed."""
        items = validate(items, self.allow_private)
        for i, item in enumerate(items):
            if item.name in self._config:
                raise Conflict(f"providers[{i}].name: {item.name!r} is defined in the config file",
                               param=f"providers[{i}].name")
        made = self._make(items, "api")
        rows = []
        for provider, item in zip(made, items, strict=True):
            sealed = self._vault.seal(item.api_key) if item.api_key else None
            stored = provider.item
            if stored.headers:  # static headers may carry credentials: sealed like the key
                stored = msgspec.structs.replace(stored, headers={
                    name: _SEALED + self._vault.seal(value) for name, value in stored.headers.items()})
            if credentials.is_inline(stored.credentials):  # a service account's private key: sealed too
                stored = msgspec.structs.replace(stored, credentials=_SEALED + self._vault.seal(stored.credentials))
            if stored.proxy:  # a proxy URL may carry its password: sealed too
                stored = msgspec.structs.replace(stored, proxy=_SEALED + self._vault.seal(stored.proxy))
            rows.append((item.name, msgspec.json.encode(stored), sealed))
        return made, rows

    def _adopt(self, made: list[Provider]) -> None:
        for provider in made:
            self._api[provider.name] = provider
        self._reindex()

    def upsert(self, items: list[ProviderItem]) -> list[Provider]:
        made, rows = self._prepare(items)
        if self.table:
            self.table.put(rows)
        self._adopt(made)
        return made

    def _removable(self, name: str) -> None:
        if name in self._config:
            raise Conflict(f"provider {name!r} is defined in the config file and cannot be removed here")

    def delete(self, name: str) -> None:
        self._removable(name)
        if name not in self._api:
            raise NotFound(f"no provider named {name!r}", code="provider_not_found")
        if self.table:
            self.table.delete(name)
        del self._api[name]
        self._reindex()

    # -- the admin API: through shared state when there is one -------------------------------
    async def register(self, items: list[ProviderItem]) -> list[Provider]:
        if self._shared is None:
            return self.upsert(items)
        made, rows = self._prepare(items)
        try:
            await self._shared.put(rows)  # stored and announced before this replica answers
        except StateUnavailable:
            raise Unavailable("the shared registry cannot be reached", retry_after=1) from None
        self._writes += 1
        self._adopt(made)
        return made

    async def remove(self, name: str) -> None:
        if self._shared is None:
            return self.delete(name)
        self._removable(name)
        try:
            deleted = await self._shared.delete(name)
        except StateUnavailable:
            raise Unavailable("the shared registry cannot be reached", retry_after=1) from None
        self._writes += 1
        if not deleted:
            raise NotFound(f"no provider named {name!r}", code="provider_not_found")
        self._api.pop(name, None)
        self._reindex()

    async def refresh(self) -> None:
        """Reload the admin registrations: another replica, or another worker, changed them."""
        if self._shared is None:
            if self.table is not None:  # read in one step: nothing of this worker writes meanwhile
                self._api = self._load(self.table.rows())
                self._reindex()
            return
        while True:  # rows read before a write of this replica completed would undo it here
            writes = self._writes
            rows = await self._shared.rows()
            if writes == self._writes:
                break
        self._api = self._load(rows)
        self._reindex()

    def close(self) -> None:
        if self.table:
            self.table.close()
