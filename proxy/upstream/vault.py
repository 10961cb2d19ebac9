"""Provider keys at rest: Fernet-encrypted, the data key from `PROXY_SECRET_KEY` or a 0600 file."""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import time

from proxy.config import ConfigError

KEY_FILE = "secret.key"


class SecretKeyError(ConfigError, ValueError):
    """Stored secrets do not open with this data key (PROXY_SECRET_KEY changed or the key file lost)."""


def _fernet(key: bytes):
    from cryptography.fernet import Fernet  # ~7 MB: loaded when a key is first sealed or opened

    return Fernet(key)


def _read_key(path: pathlib.Path) -> bytes:
    """The key file's key. The workers of `serve --workers N` start together: the file may exist
    and be empty for a moment while the worker that created it writes the key."""
    for _ in range(100):
        key = path.read_bytes().strip()
        if key:
            return key
        time.sleep(0.01)
    raise SecretKeyError(f"the key file {path} is empty: restore it, or remove it when nothing is stored yet")


def _key_file(data_dir: pathlib.Path) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    key = base64.urlsafe_b64encode(os.urandom(32))  # what Fernet.generate_key() makes
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


class Vault:
    def __init__(self, secret: str | None, data_dir: pathlib.Path) -> None:
        if secret:
            self._key = base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
        else:
            self._key = _key_file(data_dir)
        self._cipher = None

    @property
    def _fernet(self):
        if self._cipher is None:
            self._cipher = _fernet(self._key)
        return self._cipher

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored provider key cannot be decrypted with this secret key: "
                                 "set PROXY_SECRET_KEY (or restore the key file) used when it was stored") from None
