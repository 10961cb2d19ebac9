"""Who is calling (docs/configuration.md): caller keys as SHA-256 hashes, the fallback key, dev mode, admin.

Raw key material is only ever hashed; hashes are compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import ipaddress

from proxy.config import Config, resolve_secret
from proxy.errors import AuthError, PermissionDenied, ProxyError
from proxy.keys import digest, presented_key


class Caller:
    __slots__ = ("id", "name", "admin", "models", "rpm", "tpm", "budget_usd")

    def __init__(self, id: str, *, name: str | None = None, admin: bool = False,
                 models: frozenset[str] | None = None, rpm=None, tpm=None, budget_usd=None) -> None:
        self.id = id
        self.name = name
        self.admin = admin
        self.models = models
        self.rpm = rpm
        self.tpm = tpm
        self.budget_usd = budget_usd


DEV = Caller("dev", name="local development")
# The admin key, where it is not also a caller key, reading what any caller key reads (the
# catalogs and the model list): every model, no caller limits (it makes no data-plane calls).
ADMIN = Caller("admin", name="admin key", admin=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    def __init__(self, cfg: Config, verifier=None) -> None:
        self._by_hash: dict[str, tuple[str, Caller]] = {}
        self._admin_hashes: list[str] = []
        for key in cfg.auth.keys:
            caller = Caller(key.id, name=key.name, admin=key.admin,
                            models=frozenset(key.models) if key.models is not None else None,
                            rpm=key.rpm, tpm=key.tpm, budget_usd=key.budget_usd)
            self._by_hash[key.sha256.lower()] = (key.sha256.lower(), caller)
            if key.admin:
                self._admin_hashes.append(key.sha256.lower())
        admin = resolve_secret(cfg.auth.admin_key)
        if admin:
            self._admin_hashes.append(digest(admin))
        fallback = resolve_secret(cfg.auth.fallback_key)
        self.fallback = fallback
        self.verifier = verifier  # Cast AI key verification (proxy.pipeline.verify), when configured
        self.dev_mode = not cfg.auth.keys and not cfg.auth.castai_verification
        self.has_admin = bool(self._admin_hashes)

    def _lookup(self, key: str) -> Caller | None:
        hashed = digest(key)
        found = self._by_hash.get(hashed)
        if found is not None and hmac.compare_digest(found[0], hashed):
            return found[1]
        return None

    def _resolve(self, headers) -> Caller | str:
        """The caller, or the presented key when the config does not know it."""
        key = presented_key(headers)
        if key is None:
            key = self.fallback
        if self.dev_mode:
            return (self._lookup(key) if key else None) or DEV
        if key is None:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        return self._lookup(key) or key

    def caller(self, headers) -> Caller:
        """The authenticated caller from the config's keys, or 401."""
        found = self._resolve(headers)
        if isinstance(found, str):
            raise AuthError("invalid API key")
        return found

    def resolve(self, headers) -> Caller | str | None:
        """`_resolve` for a first look (the usage journal): None where it would raise."""
        try:
            return self._resolve(headers)
        except ProxyError:
            return None

    async def authenticate(self, headers, resolved: Caller | str | None = None) -> Caller:
        """`caller`, and a key the config does not know asked of the verifier (Cast AI), if any.
        `resolved` is what `resolve` already found for these headers (None: look again)."""
        found = self._resolve(headers) if resolved is None else resolved
        if isinstance(found, str):
            if self.verifier is None:
                raise AuthError("invalid API key")
            return await self.verifier.caller(found)
        return found

    async def reader(self, headers) -> Caller:
        """`authenticate` for what any caller key may read (catalogs, model list): the admin key
        is accepted too, whether or not it is also a caller key, and reads as the admin (every model).
        Dev mode is unchanged (`_resolve`)."""
        found = self._resolve(headers)
        # Only a key the request presents: the fallback key (the very object) is not the admin's.
        if isinstance(found, str) and found is not self.fallback and self._is_admin_key(found):
            return ADMIN
        return await self.authenticate(headers, found)

    def _is_admin_key(self, key: str) -> bool:
        hashed = digest(key)
        return any(hmac.compare_digest(hashed, h) for h in self._admin_hashes)

    def admin(self, headers) -> None:
        """403 without an admin key configured; 401 for a missing or wrong one."""
        if not self.has_admin:
            raise PermissionDenied("the control plane is disabled: set ADMIN_API_KEY or an admin key")
        key = presented_key(headers)
        if key is None:
            raise AuthError("missing admin API key")
        if not self._is_admin_key(key):
            raise AuthError("invalid admin API key")
