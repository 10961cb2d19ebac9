"""Provider keys at rest."""

from __future__ import annotations

import pytest

from proxy.keys import last4
from proxy.upstream.vault import SecretKeyError, Vault


def test_seal_and_open_with_a_key_file(tmp_path):
    vault = Vault(None, tmp_path)
    token = vault.seal("sk-secret-value-1234")
    assert "sk-secret" not in token and vault.open(token) == "sk-secret-value-1234"
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Vault(None, tmp_path).open(token) == "sk-secret-value-1234"  # the same file, the same key


def test_a_different_secret_cannot_open(tmp_path):
    token = Vault("one", tmp_path).seal("x")
    with pytest.raises(SecretKeyError):
        Vault("two", tmp_path).open(token)


def test_last4():
    assert last4("sk-abcdefgh") == "…efgh" and last4("abc") == "…" and last4(None) == ""


def test_a_worker_starting_beside_the_one_writing_the_key_file_waits_for_the_key(tmp_path):
    import threading

    key_file = tmp_path / "secret.key"
    key_file.touch(0o600)  # created by the first worker, its key not yet written
    first = Vault("key-file-test", tmp_path / "elsewhere")  # (stands in for the key the first one writes)
    writer = threading.Timer(0.05, lambda: key_file.write_bytes(first._key))
    writer.start()
    second = Vault(None, tmp_path)
    writer.join()
    assert second.open(first.seal("sk-secret-value-1234")) == "sk-secret-value-1234"


def test_a_key_file_left_empty_is_a_clear_error(tmp_path):
    (tmp_path / "secret.key").touch(0o600)
    with pytest.raises(SecretKeyError, match="is empty"):
        Vault(None, tmp_path)
