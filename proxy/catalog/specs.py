"""The two catalogs (docs/dialects.md, endpoints) and the model facts cost routing reads.

* Hosted model specs: self-hostable models with the hardware that fits them and what it costs
  (`proxy/data/hosted_models.json`).
* Model metadata: context window, modalities, quality score 0..1 and the provider types that
  serve each model (`proxy/data/models.json`).

Both are bundled, versioned data (sources and as-of date in each file and in
`proxy/data/CATALOG.md`); the config's `catalog:` section adds or overrides entries. Memory
figures are never stored: `memory_mib` computes every one of them from the parameter count, so
they all follow one formula.
"""

from __future__ import annotations

import base64
import binascii
import math
import weakref

import msgspec

from proxy import providers
from proxy.config.catalog import (  # the section's schema and the bundled data it is checked against
    ACTIVATION_SHARE,
    AUTO,
    BITS_PER_WEIGHT,
    DEFAULT_CONTEXT,
    KV_BYTES,
    ROUND_MIB,
    RUNTIME_MIB,
    Architecture,
    AutoModel,
    CatalogConfig,
    Hardware,
    HostedModel,
    ModelInfo,
    hosted_bundle,
    models_bundle,
)
from proxy.errors import InvalidRequest


def memory_mib(parameters: int, quantization: str, architecture: Architecture | None = None,
               context_tokens: int = DEFAULT_CONTEXT) -> int:
    """The memory (MiB) to serve a model: the one formula behind every `memoryMib`.

        weights = parameters × bits per weight of the quantization / 8
        kv      = 2 × layers × kv_heads × head_dim × 2 bytes × context_tokens   (0 without architecture)
        runtime = 512 MiB + 10 % of the weights
        memory  = weights + kv + runtime, rounded up to a multiple of 256 MiB
    """
    weights = parameters * BITS_PER_WEIGHT[quantization] / 8 / 2**20
    kv = 0.0
    if architecture is not None:
        a = architecture
        kv = 2 * a.layers * a.kv_heads * a.head_dim * KV_BYTES * context_tokens / 2**20
    total = weights + kv + RUNTIME_MIB + ACTIVATION_SHARE * weights
    return math.ceil(total / ROUND_MIB) * ROUND_MIB


def _resolve(spec: HostedModel, hardware: dict[str, Hardware]) -> dict:
    """A spec as the endpoint lists it (docs/dialects.md, endpoints), with its memory computed."""
    regions = [r for key in spec.hardware for r in hardware[key].regions] + list(spec.regions)
    return {
        "model": spec.model, "description": spec.description, "cpu": spec.cpu,
        "memoryMib": memory_mib(spec.parameters, spec.quantization, spec.architecture, spec.context_tokens),
        "provider": spec.provider, "tokensPerSecond": spec.tokens_per_second,
        "createTime": spec.create_time.isoformat().replace("+00:00", "Z"),
        "quantization": spec.quantization, "parameters": spec.parameters,
        "contextTokens": spec.context_tokens, "regions": [msgspec.to_builtins(r) for r in regions],
    }


class Filters(msgspec.Struct, frozen=True):
    provider: str | None = None
    quantization: str | None = None
    cloud: str | None = None
    region: str | None = None
    max_memory_mib: int | None = None


def _matches(item: dict, f: Filters) -> dict | None:
    """The item when it passes, its regions narrowed to the cloud and region asked for."""
    if f.provider is not None and item["provider"] != f.provider.lower():
        return None
    if f.quantization is not None and item["quantization"] != f.quantization.upper():
        return None
    if f.max_memory_mib is not None and item["memoryMib"] > f.max_memory_mib:
        return None
    if f.cloud is None and f.region is None:
        return item
    regions = [r for r in item["regions"]
               if (f.cloud is None or r["cloud"] == f.cloud.lower()) and (f.region is None or r["name"] == f.region)]
    return {**item, "regions": regions} if regions else None


class Catalog:
    """The bundled catalogs merged with the config's `catalog:` section, built once per gateway."""

    def __init__(self, cfg: CatalogConfig) -> None:
        bundle = hosted_bundle()
        specs = {s.key: s for s in bundle.models}
        specs.update((s.key, s) for s in cfg.hosted_models)  # the config wins
        self.specs = tuple(specs[k] for k in sorted(specs))
        self.hosted = tuple((s.key, _resolve(s, bundle.hardware)) for s in self.specs)
        self.models = dict(models_bundle().models)
        for spec in self.specs:
            self.models.setdefault(spec.model, ModelInfo())
        for name, score in cfg.quality_scores.items():
            self.models[name] = msgspec.structs.replace(self.models.get(name, ModelInfo()), quality=score)
        self.aliases = {AUTO: AutoModel(AUTO), **{a.name: a for a in cfg.auto_models}}
        self._hourly = self._hosted_prices()

    def _hosted_prices(self) -> dict[str, float]:
        """USD per 1M tokens on the cheapest listed hardware, at the spec's throughput."""
        best: dict[str, float] = {}
        for spec, (_, item) in zip(self.specs, self.hosted, strict=True):
            if not spec.tokens_per_second or not item["regions"]:
                continue
            hourly = min(r["pricePerHour"] for r in item["regions"])
            per_million = hourly / (spec.tokens_per_second * 3600) * 1e6
            best[spec.model] = min(per_million, best.get(spec.model, math.inf))
        return best

    def hosted_price(self, model: str) -> float | None:
        """USD per 1M tokens when `model` runs on hardware the catalog prices by the hour."""
        return self._hourly.get(model)

    def quality(self, model: str) -> float | None:
        info = self.models.get(model)
        return None if info is None else info.quality

    def hosted_specs(self, filters: Filters) -> list[tuple[str, dict]]:
        out = []
        for key, item in self.hosted:
            found = _matches(item, filters)
            if found is not None:
                out.append((key, found))
        return out


_built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def of(parts) -> Catalog:
    """The catalog of a process's parts (proxy.pipeline.parts.Parts: the one holder cost routing
    and the catalog routes share), built on first use from its config and kept beside it."""
    found = _built.get(parts)
    if found is None:
        found = _built[parts] = Catalog(parts.cfg.catalog)
    return found


# -- supported providers ---------------------------------------------------------------------
def _type_modalities(caps) -> list[str]:
    out = ["text"] if caps.chat else []
    if caps.chat and caps.images:
        out.append("image")
    if caps.embeddings:
        out.append("embedding")
    return out


def _pricing(prices, catalog: Catalog, model: str) -> tuple[dict | None, float | None]:
    price = prices.get(model)
    listed = None if price is None else {"inputPer1M": price.input, "outputPer1M": price.output,
                                         "cachedInputPer1M": price.cached_input}
    hosted = catalog.hosted_price(model)
    return listed, None if hosted is None else round(hosted, 6)


def _model_entry(catalog: Catalog, prices, model: str, served: set[str]) -> dict:
    info = catalog.models.get(model, ModelInfo(modalities=()))
    listed, hosted = _pricing(prices, catalog, model)
    return {
        "model": model, "type": "embedding" if "embedding" in info.modalities else "chat",
        "contextWindow": info.context_window, "modalities": list(info.modalities),
        "qualityScore": info.quality, "pricing": listed, "hostedPricePer1M": hosted,
        "autoRoutable": info.quality is not None and (listed is not None or hosted is not None),
        "served": model in served,
    }


def _known_models(catalog: Catalog) -> dict[str, set[str]]:
    """Provider type → the model names the catalogs know it serves."""
    known: dict[str, set[str]] = {}
    for name, info in catalog.models.items():
        for kind in info.providers:
            known.setdefault(kind, set()).add(name)
    for spec in catalog.specs:
        known.setdefault(spec.provider.upper(), set()).add(spec.model)
    return known


def supported_providers(catalog: Catalog, registry, prices) -> list[tuple[str, dict]]:
    """Every provider type: its capabilities, known models with metadata and prices, and
    whether a provider of that type is registered (so requests can be routed to it)."""
    registered: dict[str, set[str]] = {}
    for provider in registry.by_name.values():
        registered.setdefault(provider.item.supported_provider, set()).update(provider.item.models)
    known = _known_models(catalog)
    out = []
    for kind in providers.names():
        caps = providers.adapter(kind).caps
        served = registered.get(kind, set())
        names = sorted(known.get(kind, set()) | served)
        out.append((kind, {
            "provider": kind.lower(), "supportedProvider": kind, "routable": kind in registered,
            "modalities": _type_modalities(caps), "defaultUrl": caps.default_url,
            "needsUrl": caps.needs_url, "hostedByDefault": caps.hosted_by_default,
            "models": [_model_entry(catalog, prices, m, served) for m in names],
        }))
    return out


# -- paging ----------------------------------------------------------------------------------
def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        key = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: also not UTF-8
        key = ""
    if not key:
        raise InvalidRequest("'cursor' is not a cursor this endpoint gave out", param="cursor")
    return key


def page(keyed: list[tuple[str, dict]], limit: int, cursor: str | None) -> dict:
    """`{"items", "nextCursor"}`: the items after `cursor` (keys sorted), at most `limit`.

    The cursor is the last key served, so a page stays right when entries come or go between calls.
    """
    after = decode_cursor(cursor) if cursor else None
    rest = [(k, item) for k, item in keyed if after is None or k > after]
    shown = rest[:limit]
    more = len(rest) > limit
    return {"items": [item for _, item in shown], "nextCursor": encode_cursor(shown[-1][0]) if more else None}
