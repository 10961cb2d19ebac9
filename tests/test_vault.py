"""Provider keys at rest."""

from __future__ import annotations

import pytest

from proxy.vault import SecretKeyError, Vault, last4


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
