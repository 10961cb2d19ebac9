"""The catalogs as data: the memory formula, the bundled files' consistency, config overlays,
filters, paging and the provider-type catalog."""

from __future__ import annotations

import math

import msgspec
import pytest

from proxy.catalog import specs as catalog
from proxy.catalog.prices import Prices
from proxy.catalog.specs import Architecture, Catalog, CatalogConfig, Filters, memory_mib
from proxy.config import ConfigError, decode
from proxy.errors import InvalidRequest

LLAMA_8B = Architecture(layers=32, kv_heads=8, head_dim=128)
LLAMA_70B = Architecture(layers=80, kv_heads=8, head_dim=128)


# -- memory_mib, against figures worked by hand ------------------------------------------------
@pytest.mark.parametrize(("parameters", "quantization", "architecture", "context", "expected"), [
    # weights 8,030,261,248 × 4.90 / 8 B = 4690.69 MiB; KV 2·32·8·128·2 B × 8192 = 1024 MiB;
    # runtime 512 + 469.07 MiB; total 6695.76 → 27 × 256 = 6912
    (8_030_261_248, "Q4_K_M", LLAMA_8B, 8192, 6912),
    # the same at 16K context: KV 2048 MiB; total 7719.76 → 31 × 256 = 7936
    (8_030_261_248, "Q4_K_M", LLAMA_8B, 16384, 7936),
    # weights × 8.51 / 8 = 8146.42 MiB; + 1024 + 512 + 814.64 = 10497.06 → 42 × 256 = 10752
    (8_030_261_248, "Q8_0", LLAMA_8B, 8192, 10752),
    # 70,553,706,496 × 4.90 / 8 B = 41212.60 MiB; KV 2560 MiB; runtime 512 + 4121.26; 48405.86 → 190 × 256
    (70_553_706_496, "Q4_K_M", LLAMA_70B, 8192, 48640),
    # an embedding model, no KV cache: 22,713,216 × 2 B = 43.32 MiB; × 1.1 + 512 = 559.66 → 768
    (22_713_216, "F16", None, 512, 768),
    # 64 Mi parameters in F16 = 128 MiB; 128 + 12.8 + 512 = 652.8 → 768
    (64 * 2**20, "F16", None, 8192, 768),
])
def test_memory_mib_matches_hand_computed_figures(parameters, quantization, architecture, context, expected):
    assert memory_mib(parameters, quantization, architecture, context) == expected


def test_memory_mib_is_monotonic_in_bits_and_always_a_multiple_of_256():
    ordered = sorted(catalog.BITS_PER_WEIGHT, key=catalog.BITS_PER_WEIGHT.get)
    figures = [memory_mib(7_000_000_000, q, LLAMA_8B) for q in ordered]
    assert figures == sorted(figures)
    assert all(f % 256 == 0 for f in figures)


# -- the bundled files -------------------------------------------------------------------------
def test_hosted_bundle_is_versioned_and_covers_the_families():
    bundle = catalog.hosted_bundle()
    assert bundle.as_of and bundle.sources
    names = {s.model for s in bundle.models}
    assert len(bundle.models) >= 20
    for family in ("llama3.2:1b", "llama3.2:3b", "llama3.1:8b", "llama3.3:70b", "qwen2.5:7b", "mistral:7b",
                   "mixtral:8x7b", "gemma2:9b", "phi3:3.8b", "phi3.5:3.8b", "deepseek-r1:8b",
                   "nomic-embed-text", "all-minilm", "bge-m3"):
        assert family in names
    assert {s.provider for s in bundle.models} == {"ollama", "vllm"}
    keys = [s.key for s in bundle.models]
    assert len(keys) == len(set(keys))


def test_every_bundled_spec_fits_the_hardware_it_lists():
    bundle = catalog.hosted_bundle()
    for spec in bundle.models:
        need = memory_mib(spec.parameters, spec.quantization, spec.architecture, spec.context_tokens)
        assert spec.hardware, spec.model
        for key in spec.hardware:
            assert need <= bundle.hardware[key].memory_mib, (spec.model, key, need)


def test_every_hosted_model_has_metadata_with_a_quality_score():
    models = catalog.models_bundle().models
    for spec in catalog.hosted_bundle().models:
        assert models[spec.model].quality is not None, spec.model


def test_models_bundle_is_versioned_and_priced_models_have_metadata():
    bundle = catalog.models_bundle()
    assert bundle.as_of and bundle.sources
    for name in Prices().table:
        assert name in bundle.models, f"{name} has a price but no metadata"


# -- the merged catalog ------------------------------------------------------------------------
def _config(raw: dict) -> CatalogConfig:
    return msgspec.convert(raw, type=CatalogConfig)


def test_config_overrides_and_adds_hosted_specs_and_quality():
    cfg = _config({
        "hostedModels": [
            {"model": "llama3.1:8b", "provider": "ollama", "parameters": 8_030_261_248, "quantization": "Q4_K_M",
             "createTime": "2024-07-23T00:00:00Z", "tokensPerSecond": 400, "hardware": ["1xL4"]},
            {"model": "my-model", "provider": "vllm", "parameters": 1_000_000_000, "quantization": "F16",
             "createTime": "2025-01-01T12:00:00+00:00", "tokensPerSecond": 100,
             "regions": [{"name": "onprem", "pricePerHour": 0.36, "cloud": "onprem", "instanceType": "rack-1"}]},
        ],
        "qualityScores": {"my-model": 0.5, "gpt-4o": 0.1},
    })
    built = Catalog(cfg)
    items = {i["model"]: i for _, i in built.hosted_specs(Filters())}
    assert len(built.specs) == len(catalog.hosted_bundle().models) + 1  # one replaced, one added
    assert items["llama3.1:8b"]["tokensPerSecond"] == 400
    assert [r["instanceType"] for r in items["llama3.1:8b"]["regions"]] == ["g6.xlarge", "g2-standard-4"]
    assert items["my-model"]["memoryMib"] == memory_mib(1_000_000_000, "F16")
    assert items["my-model"]["createTime"] == "2025-01-01T12:00:00Z"
    assert built.quality("my-model") == 0.5 and built.quality("gpt-4o") == 0.1
    # 0.36 USD/h at 100 tokens/s: 0.36 / 360000 per token = 1 USD per 1M
    assert built.hosted_price("my-model") == pytest.approx(1.0)
    # 0.7068 USD/h (the cheaper L4 region) at 400 tokens/s
    assert built.hosted_price("llama3.1:8b") == pytest.approx(0.7068 / (400 * 3600) * 1e6)


@pytest.mark.parametrize(("entry", "where"), [
    ({"provider": "OLLAMA"}, "$.catalog.hostedModels[0]"),
    ({"provider": "nosuch"}, "$.catalog.hostedModels[0]"),
    ({"quantization": "Q9_Z"}, "$.catalog.hostedModels[0].quantization"),
    ({"createTime": "2024-07-23T00:00:00"}, "$.catalog.hostedModels[0].createTime"),
    ({"hardware": ["1xNOPE"]}, "hostedModels[0].hardware"),
    ({"hardware": []}, "$.catalog.hostedModels[0]"),
])
def test_config_errors_name_the_field(entry, where):
    spec = {"model": "m", "provider": "ollama", "parameters": 1000, "quantization": "F16",
            "createTime": "2024-07-23T00:00:00Z", "hardware": ["cpu-4"], **entry}
    with pytest.raises(ConfigError, match=r".*" + where.replace("$", r"\$").replace("[", r"\[").replace("]", r"\]")):
        decode(msgspec.json.encode({"catalog": {"hostedModels": [spec]}}), suffix=".json")


def test_config_refuses_a_quality_score_outside_0_1():
    with pytest.raises(ConfigError, match=r"\$\.catalog\.qualityScores"):
        decode(b'{"catalog": {"qualityScores": {"x": 1.5}}}', suffix=".json")


def test_aliases_always_include_auto():
    built = Catalog(_config({"autoModels": [{"name": "cheap", "models": ["a"], "qualityWeight": 0.2}]}))
    assert set(built.aliases) == {"auto", "cheap"}
    assert built.aliases["cheap"].quality_weight == 0.2 and built.aliases["auto"].models is None


# -- filters -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return Catalog(CatalogConfig())


def test_filters(bundled):
    def models(**kw):
        return [i for _, i in bundled.hosted_specs(Filters(**kw))]

    everything = models()
    assert {i["provider"] for i in models(provider="VLLM")} == {"vllm"}
    assert {i["quantization"] for i in models(quantization="q4_k_m")} == {"Q4_K_M"}
    assert all(i["memoryMib"] <= 4096 for i in models(max_memory_mib=4096))
    assert 0 < len(models(max_memory_mib=4096)) < len(everything)
    gcp = models(cloud="gcp")
    assert gcp and all(r["cloud"] == "gcp" for i in gcp for r in i["regions"])  # regions narrowed
    assert all(r["name"] == "eastus" for i in models(region="eastus") for r in i["regions"])
    assert models(cloud="aws", region="us-central1") == []
    assert models(provider="nosuch") == []


# -- paging ------------------------------------------------------------------------------------
def test_pages_walk_every_item_once_and_cursors_survive_inserts():
    keyed = [(f"k{i:02}", {"i": i}) for i in range(7)]
    first = catalog.page(keyed, 3, None)
    assert [x["i"] for x in first["items"]] == [0, 1, 2]
    second = catalog.page([("k00a", {"i": "new"}), *keyed], 3, first["nextCursor"])  # an insert before the cursor
    assert [x["i"] for x in second["items"]] == [3, 4, 5]
    last = catalog.page(keyed, 3, second["nextCursor"])
    assert [x["i"] for x in last["items"]] == [6] and last["nextCursor"] is None
    assert catalog.page(keyed, 7, None)["nextCursor"] is None


def test_a_bad_cursor_is_a_400():
    with pytest.raises(InvalidRequest) as caught:
        catalog.page([], 3, "!!not base64")
    assert caught.value.param == "cursor"


# -- supported providers -----------------------------------------------------------------------
class _Item(msgspec.Struct):
    supported_provider: str
    models: tuple[str, ...]


class _Provider:
    def __init__(self, kind: str, models: tuple[str, ...]) -> None:
        self.item = _Item(kind, models)


class _Registry:
    def __init__(self, **providers) -> None:
        self.by_name = providers


def test_supported_providers_lists_every_type_with_models_prices_and_routability(bundled):
    from proxy import providers

    registry = _Registry(a=_Provider("OPENAI", ("gpt-4o", "my-finetune")), b=_Provider("OLLAMA", ("llama3.1:8b",)))
    listed = dict(catalog.supported_providers(bundled, registry, Prices()))
    assert list(listed) == providers.names()
    openai = listed["OPENAI"]
    assert openai["routable"] is True and openai["provider"] == "openai" and "embedding" in openai["modalities"]
    models = {m["model"]: m for m in openai["models"]}
    assert models["gpt-4o"]["pricing"] == {"inputPer1M": 2.5, "outputPer1M": 10.0, "cachedInputPer1M": 1.25}
    assert models["gpt-4o"]["contextWindow"] == 128000 and models["gpt-4o"]["modalities"] == ["text", "image"]
    assert models["gpt-4o"]["served"] is True and models["gpt-4o"]["autoRoutable"] is True
    assert models["text-embedding-3-small"]["type"] == "embedding"
    assert models["my-finetune"]["served"] is True and models["my-finetune"]["qualityScore"] is None
    assert models["o3"]["served"] is False
    ollama = {m["model"]: m for m in listed["OLLAMA"]["models"]}
    assert listed["OLLAMA"]["routable"] is True and listed["OLLAMA"]["needsUrl"] is True
    assert ollama["llama3.1:8b"]["pricing"] is None and ollama["llama3.1:8b"]["hostedPricePer1M"] > 0
    assert listed["GROQ"]["routable"] is False
    assert not math.isnan(sum(m["qualityScore"] or 0 for m in ollama.values()))
