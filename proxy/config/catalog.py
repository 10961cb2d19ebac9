"""The config file's `catalog:` section and the bundled catalog data it is checked against:
hosted-model specs and their hardware, model metadata (docs/configuration.md, catalog)."""

from __future__ import annotations

import datetime
import functools
import importlib.resources
from typing import Annotated, Literal

import msgspec

# Effective bits per weight of each GGUF type: GGUF file size × 8 ÷ parameter count, measured on
# the Llama-3.1-8B-Instruct files. It includes the block scales and the tensors a _S/_M mix keeps
# at higher precision, which is why Q4_K_M is 4.90 and not the 4.5 of a bare Q4_K block.
BITS_PER_WEIGHT: dict[str, float] = {
    "Q2_K": 3.17, "Q3_K_M": 4.00, "Q4_0": 4.66, "Q4_K_S": 4.67, "Q4_K_M": 4.90, "Q5_K_S": 5.58,
    "Q5_K_M": 5.71, "Q6_K": 6.58, "Q8_0": 8.51, "F16": 16.0, "BF16": 16.0, "F32": 32.0,
}
Quantization = Literal["Q2_K", "Q3_K_M", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
                       "Q8_0", "F16", "BF16", "F32"]
KV_BYTES = 2  # the KV cache is kept in F16 by llama.cpp and vLLM unless told otherwise
RUNTIME_MIB = 512  # CUDA context, the server process, scratch buffers
ACTIVATION_SHARE = 0.10  # compute buffers and fragmentation, as a share of the weights
ROUND_MIB = 256
DEFAULT_CONTEXT = 8192
AUTO = "auto"

Quality = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Modality = Literal["text", "image", "embedding"]


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    pass


class Architecture(_Struct):
    """What sizes the KV cache: per token, 2 (K and V) × layers × KV heads × head size values."""

    layers: Annotated[int, msgspec.Meta(gt=0)]
    kv_heads: Annotated[int, msgspec.Meta(gt=0)]
    head_dim: Annotated[int, msgspec.Meta(gt=0)]


class Region(_Struct):
    name: str
    price_per_hour: Annotated[float, msgspec.Meta(ge=0.0)]
    cloud: str
    instance_type: str
    gpu_count: int = 0
    gpu_name: str | None = None


class Hardware(_Struct):
    memory_mib: int  # accelerator memory in all, or host memory without one
    regions: tuple[Region, ...]


class HostedModel(_Struct):
    """A self-hostable model as stored (bundled or in the config); identity: model, provider, quantization."""

    model: str
    provider: str  # the serving runtime: a provider type, lowercase
    parameters: Annotated[int, msgspec.Meta(gt=0)]
    quantization: Quantization
    create_time: Annotated[datetime.datetime, msgspec.Meta(tz=True)]
    description: str = ""
    cpu: float = 4
    tokens_per_second: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    context_tokens: Annotated[int, msgspec.Meta(gt=0)] = DEFAULT_CONTEXT
    architecture: Architecture | None = None
    hardware: tuple[str, ...] = ()  # keys of the bundled hardware table
    regions: tuple[Region, ...] = ()  # given inline

    def __post_init__(self) -> None:
        if self.provider not in provider_types():
            raise ValueError(f"provider {self.provider!r} must be a provider type in lowercase")
        if not self.hardware and not self.regions:
            raise ValueError(f"{self.model!r} needs `hardware` or `regions`: where it runs and at what price")

    @property
    def key(self) -> str:
        return f"{self.model}\x1f{self.provider}\x1f{self.quantization}"


class ModelInfo(_Struct):
    context_window: int | None = None
    modalities: tuple[Modality, ...] = ("text",)
    quality: Quality | None = None
    providers: tuple[str, ...] = ()  # provider types that serve it under this name
    reasoning: bool = False  # takes `reasoning_effort` (other models answer a request carrying it with a 400)


class AutoModel(_Struct):
    """A name that asks for cost routing, optionally among some models only, with its own weight."""

    name: str
    models: tuple[str, ...] | None = None
    quality_weight: Quality | None = None


class CatalogConfig(_Struct):
    """The config file's `catalog:` section."""

    hosted_models: tuple[HostedModel, ...] = ()
    quality_scores: dict[str, Quality] = {}
    auto_models: tuple[AutoModel, ...] = ()

    def __post_init__(self) -> None:
        for i, spec in enumerate(self.hosted_models):
            known = hosted_bundle().hardware  # read only when a spec names hardware to check
            unknown = [h for h in spec.hardware if h not in known]
            if unknown:
                raise ValueError(f"hostedModels[{i}].hardware: unknown {unknown}; one of {sorted(known)}")


class _HostedBundle(_Struct):
    as_of: str
    sources: tuple[str, ...]
    hardware: dict[str, Hardware]
    models: tuple[HostedModel, ...]


class _ModelsBundle(_Struct):
    as_of: str
    sources: tuple[str, ...]
    models: dict[str, ModelInfo]


@functools.cache
def provider_types() -> frozenset[str]:
    """The provider types a catalog entry may name, lowercase (bundled with the adapters' table,
    which a test holds equal to it: the config is read before any adapter is imported)."""
    return frozenset(msgspec.json.decode(_data("provider_types.json"), type=list[str]))


def _data(name: str) -> bytes:
    return importlib.resources.files("proxy.data").joinpath(name).read_bytes()


@functools.cache
def hosted_bundle() -> _HostedBundle:
    """The bundled hosted-model specs (immutable; read once)."""
    return msgspec.json.decode(_data("hosted_models.json"), type=_HostedBundle)


@functools.cache
def models_bundle() -> _ModelsBundle:
    """The bundled model metadata (immutable; read once)."""
    return msgspec.json.decode(_data("models.json"), type=_ModelsBundle)


def reasoning_model(model: str) -> bool:
    """The bundled catalog marks `model` as one that takes `reasoning_effort`."""
    info = models_bundle().models.get(model)
    return info is not None and info.reasoning
