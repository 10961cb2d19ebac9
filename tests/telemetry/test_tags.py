"""Tag merging and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import InvalidTag
from proxy.telemetry.tags import merge


def test_merge_order_and_dedupe():
    assert merge(["a:1", "b:2"], {"X-Tags": "b:2, c:3", "X-LiteLLM-Tags": "a:1,d:4"}) == ["a:1", "b:2", "c:3", "d:4"]
    assert merge(None, {}) == []
    # header values read already (by the usage journal) are not looked up again
    assert merge(["a:1"], {"X-Tags": "z:9"}, ("b:2", "a:1")) == ["a:1", "b:2"]
    assert merge(None, {"X-Tags": "z:9"}, (None, None)) == []


@pytest.mark.parametrize("tag", ["a:b", "A.b_c-d:9", "x" * 64 + ":" + "y" * 64, "k:v.v"])
def test_valid(tag):
    assert merge([tag], {}) == [tag]


@pytest.mark.parametrize("tag", ["a", ":b", "a:", "a:b:c", "_a:b", "a:b_", "x" * 65 + ":y", "a:b\n", "a :b", "ä:b"])
def test_invalid(tag):
    with pytest.raises(InvalidTag):
        merge([tag], {})


@given(st.lists(st.text(max_size=80), max_size=12))
def test_fuzz_never_crashes(tags):
    try:
        merge(tags, {})
    except InvalidTag as err:
        assert err.status == 400
