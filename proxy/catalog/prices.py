"""Cost from the bundled list-price table (`proxy/data/prices.json`), overridable per model."""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping

import msgspec

from proxy.config import Price


class _Table(msgspec.Struct):
    asOf: str
    source: str
    models: dict[str, Price]


# A dated or numbered snapshot of a listed model, priced as the model: providers answer with these
# names (OpenAI `gpt-4o-mini-2024-07-18`, `gpt-3.5-turbo-0125`; Google `gemini-1.5-flash-001`), and
# an unpriced served model would record a cost of 0 and the whole list price as savings.
_SNAPSHOT = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{3,4})$")


# A cross-region inference profile (`us.anthropic.claude-…`, `global.…`) runs the listed model at its
# list price; newer models are served only through one, and unpriced they would record a cost of 0.
_PROFILE = re.compile(r"^(?:us|us-gov|eu|apac|jp|au|ca|global)\.(?=[a-z0-9-]+\.)")
_NAMES_KEPT = 4096  # model names whose answers are kept: a few in use, bounded since providers name them


@functools.lru_cache(maxsize=_NAMES_KEPT)  # a few models, asked for at every request
def _base(model: str) -> str:
    """`model` without a snapshot suffix or a cross-region profile prefix."""
    return _SNAPSHOT.sub("", _PROFILE.sub("", model))


def bundled() -> dict[str, Price]:
    raw = importlib.resources.files("proxy.data").joinpath("prices.json").read_bytes()
    return msgspec.json.decode(raw, type=_Table).models


class Prices:
    """The bundled table with the config's `prices` on top. An override's key is a model
    (`gpt-4o`) or a provider name and a model (`my-azure/gpt-4o`): the latter wins for that
    provider only, for example a negotiated rate or a deployment name."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.table = {**bundled(), **(overrides or {})}
        # What `get` found for (model, provider): a record asks for its served and its requested
        # model's price at every request, and a snapshot's name (`gpt-4o-mini-2024-07-18`) costs
        # three lookups and two regular expressions to resolve.
        self._found: dict[tuple[str, str | None], Price | None] = {}

    def get(self, model: str | None, provider: str | None = None) -> Price | None:
        if not model:
            return None
        key = (model, provider)
        try:
            return self._found[key]
        except KeyError:
            pass
        found = self._lookup(model, provider)
        if found is None and (base := _base(model)) != model:
            found = self._lookup(base, provider)
        if len(self._found) >= _NAMES_KEPT:
            self._found.clear()
        self._found[key] = found
        return found

    @staticmethod
    def same_model(a: str | None, b: str | None) -> bool:
        """`a` and `b` name one model, or a snapshot of it (`gpt-4o-mini-2024-07-18`): no savings."""
        if a == b:
            return True
        if not a or not b:
            return False
        return _base(a.rsplit("/", 1)[-1]) == _base(b.rsplit("/", 1)[-1])

    def _lookup(self, model: str, provider: str | None) -> Price | None:
        if provider is not None and (found := self.table.get(f"{provider}/{model}")) is not None:
            return found
        found = self.table.get(model)
        if found is None and "/" in model:
            found = self.table.get(model.rsplit("/", 1)[1])
        return found

    def cost(self, model: str | None, prompt: int, completion: int, cached: int = 0,
             provider: str | None = None) -> float | None:
        price = self.get(model, provider)
        if price is None:
            return None
        cached = min(cached, prompt)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        return ((prompt - cached) * price.input + cached * cached_rate + completion * price.output) / 1e6
