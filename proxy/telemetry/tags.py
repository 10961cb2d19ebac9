"""Request tags: body `tags` plus the `X-Tags` and `X-LiteLLM-Tags` headers, merged and checked."""

from __future__ import annotations

import re

from proxy.errors import InvalidTag

MAX_TAGS = 10
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?"
_TAG = re.compile(rf"{_PART}:{_PART}")
HEADERS = ("X-Tags", "X-LiteLLM-Tags")
_X_TAGS, _LITELLM_TAGS = HEADERS


def _shown(tag: str) -> str:
    return tag if len(tag) <= 80 and tag.isprintable() else repr(tag[:80])


_seen: dict[str, list[str]] = {}  # header values already split: apps send the same ones


def _split(value: str) -> list[str]:
    parts = _seen.get(value)
    if parts is None:
        parts = [part.strip() for part in value.split(",")]
        if len(_seen) >= 4096:
            _seen.clear()
        _seen[value] = parts
    return parts


_NONE: tuple = (None, None)
_checked: dict[tuple, list[str]] = {_NONE: []}  # header values already merged and valid, with no body tags


def header_values(headers) -> tuple[str | None, str | None]:
    """The `X-Tags` and `X-LiteLLM-Tags` values (a case-blind lookup each: the usage journal
    reads them once per request and the pipeline reuses them)."""
    get = headers.get
    return get(_X_TAGS), get(_LITELLM_TAGS)


def merge(body_tags: list[str] | None, headers, values: tuple[str | None, str | None] | None = None) -> list[str]:
    """Merge, de-duplicate (first seen wins the order) and validate; 400 names the bad tag.
    `values`: what `header_values(headers)` returned already, if it was asked."""
    if values is None:
        values = header_values(headers)
    if not body_tags:  # the usual case: the same headers on every request of an app
        known = _checked.get(values)
        if known is not None:
            return list(known)
    found: list[str] = list(body_tags) if body_tags else []
    for value in values:
        if value:
            found += _split(value)
    if not found:
        return []
    tags = _validated(found)
    if not body_tags and len(values[0] or "") + len(values[1] or "") <= 2048:  # long (padded) values: not kept
        if len(_checked) >= 4096:
            _checked.clear()
            _checked[_NONE] = []
        _checked[values] = tags
        return list(tags)
    return tags


def _validated(found: list) -> list[str]:
    tags = list(dict.fromkeys(found))
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise InvalidTag(
                f"invalid tag {_shown(str(tag))}: tags are key:value, each part 1-64 characters "
                "of A-Z a-z 0-9 . _ - starting and ending with a letter or digit",
                param="tags",
            )
    if len(tags) > MAX_TAGS:
        raise InvalidTag(f"too many tags: {len(tags)} given, at most {MAX_TAGS}", param="tags")
    return tags
