"""Vertex AI text embeddings: OpenAI's `embeddings` request → `:predict` → OpenAI's answer (sans-IO).

One instance per input string (`{"content": text}`), `dimensions` → `parameters.outputDimensionality`;
each prediction's `embeddings.values` is a vector and its `statistics.token_count` the tokens it
cost, so usage is the provider's, not an estimate. Served for the text-embedding models
(`text-embedding-005`, `text-multilingual-embedding-002`, `gemini-embedding-001`, which takes
one input per request: Vertex says so with a 400 for more).
"""

from __future__ import annotations

import msgspec

from proxy.providers.base import Parsed
from proxy.providers.gemini_embeddings import EmbeddingParams, openai_embeddings


def to_vertex_embeddings(params: EmbeddingParams) -> dict:
    body: dict = {"instances": [{"content": text} for text in params.texts]}
    if params.dimensions:
        body["parameters"] = {"outputDimensionality": params.dimensions}
    return body


class _Statistics(msgspec.Struct):
    token_count: float = 0  # a number in JSON; Vertex writes it as 6 or 6.0


class _Embedding(msgspec.Struct):
    values: list[float]
    statistics: _Statistics | None = None


class _Prediction(msgspec.Struct):
    embeddings: _Embedding


class _Predictions(msgspec.Struct):
    predictions: list[_Prediction] = []


_predictions = msgspec.json.Decoder(_Predictions)


def from_vertex_embeddings(params: EmbeddingParams, model: str, body: bytes) -> Parsed:
    predictions = _predictions.decode(body).predictions
    stats = [p.embeddings.statistics for p in predictions]
    tokens = int(sum(s.token_count for s in stats)) if stats and None not in stats else None
    return openai_embeddings(params, model, [p.embeddings.values for p in predictions], tokens)
