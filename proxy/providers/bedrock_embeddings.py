"""Bedrock embeddings through InvokeModel (`/model/{id}/invoke`), for Titan and Cohere models (sans-IO).

- Titan Text Embeddings (`amazon.titan-embed-text-v1`, `-v2:0`): one text per request,
  `{"inputText": …}` (`dimensions` as is, v2 only); the answer's `embedding` and
  `inputTextTokenCount` are the vector and the usage. More than one input is a 400: the model
  embeds one text per call and the gateway makes one upstream call per request.
- Cohere Embed (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`, `cohere.embed-v4:0`):
  `{"texts": [...], "input_type": "search_document"}` (OpenAI has no input type; documents are
  what an index embeds), `dimensions` → `output_dimension` (v4); vectors as a list (v3) or by
  type (`{"float": [...]}`, v4). Cohere reports no tokens here: usage is estimated and marked.
Other models are a 400 naming the two families.
"""

from __future__ import annotations

import msgspec

from proxy.errors import InvalidRequest
from proxy.providers.base import Parsed
from proxy.providers.gemini_embeddings import EmbeddingParams, openai_embeddings


def family(model: str) -> str:
    """`titan` or `cohere`, by the model id (a foundation id, an inference profile or an ARN)."""
    if "titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    raise InvalidRequest("this provider serves embeddings for Amazon Titan and Cohere embedding models only",
                         param="model", code="unsupported_endpoint")


def to_bedrock_embeddings(params: EmbeddingParams, model: str) -> dict:
    if family(model) == "cohere":
        body: dict = {"texts": params.texts, "input_type": "search_document"}
        if params.dimensions:
            body["output_dimension"] = params.dimensions
        return body
    if len(params.texts) != 1:
        raise InvalidRequest("this model embeds one text per request: send 'input' as one string", param="input")
    body = {"inputText": params.texts[0]}
    if params.dimensions:
        body["dimensions"] = params.dimensions
    return body


class _Titan(msgspec.Struct, rename="camel"):
    embedding: list[float]
    input_text_token_count: int | None = None


class _Cohere(msgspec.Struct):
    embeddings: list[list[float]] | dict[str, list[list[float]]]


_titan = msgspec.json.Decoder(_Titan)
_cohere = msgspec.json.Decoder(_Cohere)


def from_bedrock_embeddings(params: EmbeddingParams, model: str, body: bytes) -> Parsed:
    if family(model) == "titan":
        answer = _titan.decode(body)
        return openai_embeddings(params, model, [answer.embedding], answer.input_text_token_count)
    vectors = _cohere.decode(body).embeddings
    if isinstance(vectors, dict):  # by type: the floats are what OpenAI's answer carries
        vectors = vectors.get("float", [])
    return openai_embeddings(params, model, vectors)
