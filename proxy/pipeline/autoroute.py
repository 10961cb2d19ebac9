"""Cost routing (Cast AI's ROUTE mode, docs/providers.md, routing): pick the model by price and quality.

It applies when the request names `auto` or a configured alias (`catalog.autoModels`), or sends
`X-Router-Quality-Weight`. The candidates are the models that have a price and a quality score
(bundled or from the config), that the caller may use, that suit the endpoint (chat or
embeddings) and that a registered provider serves; a model whose every provider has an open
circuit is left out, unless that leaves nothing (the router, too, never drops a provider).

Price p of a model, USD per 1M tokens: (3 × input + output) / 4 of its list price, the usual
3:1 blend of prompt to completion tokens; a model a closed-circuit hosted provider serves is
priced instead by its catalog hardware: pricePerHour / (3600 × tokensPerSecond) per token.
Quality q is the catalog's 0..1 score. For a weight w in [0, 1]:

    q̂ = (q − q_min) / (q_max − q_min)                                   (0 when all are equal)
    p̂ = (ln(1 + p) − ln(1 + p_min)) / (ln(1 + p_max) − ln(1 + p_min))   (0 when all are equal)
    score = w · q̂ − (1 − w) · p̂

The highest score wins; ties go to the cheaper, then the better, then the first by name. So
w = 0 picks the cheapest and w = 1 the best. Prices are compared on a log scale because they
span three orders of magnitude: on a linear one the single dearest model would squeeze every
other price to about 0 and w would barely matter below 1.
"""

from __future__ import annotations

import math

import msgspec

from proxy.catalog import specs as catalogs
from proxy.errors import InvalidRequest, ModelNotFound
from proxy.pipeline.auth import Caller
from proxy.pipeline.parts import Parts
from proxy.providers.base import ChatRequest

HEADER = "X-Router-Quality-Weight"


class Candidate(msgspec.Struct, frozen=True):
    model: str
    quality: float
    price: float  # USD per 1M tokens, blended


def quality_weight(headers, default: float) -> float:
    """The weight from `X-Router-Quality-Weight`, or `default` without it; 400 when malformed."""
    raw = headers.get(HEADER)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise InvalidRequest(f"{HEADER} must be a number from 0 to 1, not {raw!r}", param=HEADER,
                             code="invalid_quality_weight")
    return value


def _order(candidates: list[Candidate], weight: float) -> list[Candidate]:
    qualities = [c.quality for c in candidates]
    prices = [math.log1p(c.price) for c in candidates]
    q_low, q_span = min(qualities), max(qualities) - min(qualities)
    p_low, p_span = min(prices), max(prices) - min(prices)

    def key(c: Candidate) -> tuple:
        q = (c.quality - q_low) / q_span if q_span else 0.0
        p = (math.log1p(c.price) - p_low) / p_span if p_span else 0.0
        score = round(weight * q - (1.0 - weight) * p, 9)  # round: float noise must not break ties
        return (-score, c.price, -c.quality, c.model)

    return sorted(candidates, key=key)


def choose(candidates: list[Candidate], weight: float) -> Candidate:
    """The candidate with the best score for `weight` (see the module docstring)."""
    if not candidates:
        raise ValueError("no candidates")
    return _order(candidates, weight)[0]


def _price(model: str, providers, catalog, prices) -> float | None:
    if any(p.hosted for p in providers):
        hosted = catalog.hosted_price(model)
        if hosted is not None:
            return hosted
    listed = prices.get(model)
    return None if listed is None else (3 * listed.input + listed.output) / 4


def _suits(info, kind: str) -> bool:
    embedding = "embedding" in info.modalities
    return embedding if kind == "embeddings" else not embedding and "text" in info.modalities


def candidates(parts: Parts, allowed: frozenset[str] | None, kind: str,
               among: tuple[str, ...] | None = None) -> list[Candidate]:
    """The models `auto` may pick for this caller and endpoint (see the module docstring)."""
    catalog, router = catalogs.of(parts), parts.router
    usable, fallback = [], []
    for model, serving in parts.registry.by_model.items():
        if (allowed is not None and model not in allowed) or (among is not None and model not in among):
            continue
        info = catalog.models.get(model)
        if info is None or info.quality is None or not _suits(info, kind):
            continue
        closed = [p for p in serving if not router.is_open(p.name)]
        price = _price(model, closed or serving, catalog, parts.prices)
        if price is None:
            continue
        (usable if closed else fallback).append(Candidate(model, info.quality, price))
    return usable or fallback


def apply(parts: Parts, request: ChatRequest, caller: Caller, headers) -> str | None:
    """Replace an `auto`/alias model (or any, with the weight header) by the model chosen for it.

    Returns the model the record's savings compare against: for an alias, the best-quality
    candidate; None for a named model (its savings compare against that model, as always).
    """
    alias = catalogs.of(parts).aliases.get(request.model)
    if alias is None and HEADER not in headers:
        return None
    default = parts.cfg.routing.quality_weight
    if alias is not None and alias.quality_weight is not None:
        default = alias.quality_weight
    weight = quality_weight(headers, default)
    found = candidates(parts, caller.models, request.kind, alias.models if alias else None)
    if not found:
        raise ModelNotFound(f"no model is available for {request.model!r}: none that this key may use has "
                            "a price, a quality score and a registered provider", param="model")
    request.model = choose(found, weight).model
    return choose(found, 1.0).model if alias is not None else None
