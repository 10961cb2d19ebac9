"""Gemini embeddings: OpenAI's `embeddings` request → `batchEmbedContents` → OpenAI's answer (sans-IO).

One EmbedContentRequest per input string, `dimensions` → `outputDimensionality`, vectors back as
floats or, for `encoding_format: base64`, as OpenAI sends them (little-endian float32). Gemini
reports no token usage for embeddings: it is estimated from the input text and marked estimated.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Literal

import msgspec
import orjson

from proxy.errors import InvalidRequest
from proxy.providers.base import ChatRequest, Parsed, Usage, estimate_tokens


class EmbeddingParams(msgspec.Struct):
    """The OpenAI embeddings fields the translation reads; `user` and the rest are dropped."""

    texts: list[str]
    dimensions: int | None = None
    encoding_format: str | None = None


_INPUT = str | list[str]  # token arrays (lists of ints) do not decode: a 400 naming `input`
_DIMENSIONS = Annotated[int, msgspec.Meta(ge=1)] | None
_ENCODING = Literal["float", "base64"] | None


def _embedding_field(request: ChatRequest, name: str, type_, what: str):
    try:
        return request.decode(name, type_)
    except msgspec.ValidationError:
        raise InvalidRequest(f"'{name}' must be {what}", param=name) from None
    except (UnicodeDecodeError, msgspec.DecodeError):  # subtrees `request.parse` skipped (a body crafted to break the decoder)
        raise InvalidRequest(f"'{name}' is not valid UTF-8", param=name) from None


def read_embedding_params(request: ChatRequest) -> EmbeddingParams:
    if request.stream:
        raise InvalidRequest("embeddings are not streamed", param="stream")
    given = _embedding_field(request, "input", _INPUT,
                             "a string or an array of strings: this provider embeds text, not token arrays")
    texts = [given] if isinstance(given, str) else given
    if not texts:
        raise InvalidRequest("'input' must not be an empty array", param="input")
    return EmbeddingParams(texts, _embedding_field(request, "dimensions", _DIMENSIONS, "a positive integer"),
                           _embedding_field(request, "encoding_format", _ENCODING, "'float' or 'base64'"))


def to_gemini_embeddings(params: EmbeddingParams, model_name: str | None) -> dict:
    """One EmbedContentRequest per input string; with `model_name` None the URL alone names the model."""
    named = {"model": model_name} if model_name else {}
    sized = {"outputDimensionality": params.dimensions} if params.dimensions else {}
    return {"requests": [{**named, "content": {"parts": [{"text": text}]}, **sized} for text in params.texts]}


class _ContentEmbedding(msgspec.Struct):
    values: list[float]


class _Embeddings(msgspec.Struct):
    embeddings: list[_ContentEmbedding] = []


_embeddings = msgspec.json.Decoder(_Embeddings)


def float32_base64(values: list[float]) -> str:
    """What OpenAI sends for `encoding_format: base64`: the vector as little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def from_gemini_embeddings(params: EmbeddingParams, model: str, body: bytes) -> Parsed:
    """OpenAI's embeddings list; usage estimated from the input text, since Gemini reports none."""
    return openai_embeddings(params, model, [e.values for e in _embeddings.decode(body).embeddings])


def openai_embeddings(params: EmbeddingParams, model: str, vectors: list[list[float]],
                      tokens: int | None = None) -> Parsed:
    """OpenAI's embeddings answer for `vectors` in input order, with the provider's token count or,
    when it reports none (`tokens` None), the gateway's estimate, marked as one."""
    if len(vectors) != len(params.texts):  # vectors that cannot be matched to their inputs: a 502
        raise ValueError(f"{len(vectors)} embeddings for {len(params.texts)} inputs")
    if params.encoding_format == "base64":
        vectors = [float32_base64(v) for v in vectors]
    estimated = tokens is None
    if tokens is None:
        tokens = estimate_tokens(sum(len(text.encode()) for text in params.texts))
    data = [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)]
    answer = orjson.dumps({"object": "list", "data": data, "model": model,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
    return Parsed(body=answer, usage=Usage(prompt_tokens=tokens, total_tokens=tokens, estimated=estimated), model=None)
