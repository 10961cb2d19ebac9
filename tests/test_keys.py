import pytest
from multidict import CIMultiDict

from proxy.errors import AuthError
from proxy.keys import MAX_KEY_LENGTH, digest, last4, presented_key


def test_a_key_is_shown_by_its_last_4_characters_only():
    assert last4("sk-abcdef1234") == "…1234"
    assert last4("1234") == "…" and last4("") == "" and last4(None) == ""


def test_the_digest_is_sha256_hex_and_takes_any_string():
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert len(digest("\udcff")) == 64  # a lone surrogate from a header does not raise


@pytest.mark.parametrize(("headers", "key"), [
    ({}, None),
    ({"Authorization": "Bearer  sk-1 "}, "sk-1"),
    ({"X-API-Key": "sk-2"}, "sk-2"),
    ({"X-API-Key": "sk-3", "Authorization": "bearer sk-3"}, "sk-3"),
])
def test_the_presented_key(headers, key):
    assert presented_key(CIMultiDict(headers)) == key


@pytest.mark.parametrize("headers", [
    {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"X-API-Key": " "},
    {"X-API-Key": "sk-a", "Authorization": "Bearer sk-b"}, {"X-API-Key": "k" * (MAX_KEY_LENGTH + 1)},
])
def test_a_malformed_or_contradictory_key_is_a_401(headers):
    with pytest.raises(AuthError):
        presented_key(CIMultiDict(headers))
