"""Decoding an OpenAI request body once: the fields the gateway reads, the known fields checked.

Two msgspec passes over the body, and no more. The first keeps every top-level field as
`msgspec.Raw`: the body is re-encoded for the upstream by splicing raw slices, so a 1 MB prompt
is never turned into Python objects on the passthrough path, and unknown fields travel
untouched. The second decodes the same bytes into a small typed view (`_Chat` or `_Embeddings`)
holding only the fields the API reference defines: msgspec checks their types and ranges while
it skips everything else (message contents, tool schemas, unknown fields) without building it.
A wrong type or range is then a 400 naming the field, before any upstream call, instead of
nonsense sent to a provider or a translating adapter failing late as a 502.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from proxy.errors import InvalidRequest
from proxy.providers.base import ChatRequest

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Ranges as the OpenAI API reference states them. `max_tokens` has no minimum in the reference,
# but the API itself refuses values below 1 ("integer below minimum value"), as does every
# provider behind a translating adapter, so a zero or negative budget is refused here.
_Count = Annotated[int, msgspec.Meta(ge=1)]
_Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
_Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
_Seed = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Stop = str | Annotated[list[str], msgspec.Meta(max_length=4)]


class _TokenArray(msgspec.Struct, array_like=True, gc=False):
    """One input of an embeddings batch given as tokens: an array that begins with an integer.
    Only its first token is built; msgspec skips the rest, about three times faster than it
    would build them (~15 ns a token: 120 µs for a batch of 16 × 500 tokens)."""

    first: int


class _Message(msgspec.Struct, gc=False):
    role: str  # the rest of a message (content, tool calls) is the provider's to judge


class _Typed(msgspec.Struct, gc=False):
    type: str  # a tool or a response format: an object naming its type; its other members are skipped


class _Object(msgspec.Struct, gc=False):
    """Any JSON object; its members are skipped unread."""


class _StreamOptions(msgspec.Struct, gc=False):
    include_usage: bool | None = None


class _Known(msgspec.Struct, gc=False):
    """The fields every request kind shares. Null is accepted wherever the API accepts it."""

    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    user: str | None = None
    tags: list[str] | None = None  # the gateway's own field, never forwarded


class _Chat(_Known, gc=False):
    messages: list[_Message] | None = None
    n: _Count | None = None
    max_tokens: _Count | None = None
    max_completion_tokens: _Count | None = None
    temperature: _Temperature | None = None
    top_p: _Unit | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    stop: _Stop | None = None
    tools: list[_Typed] | None = None
    tool_choice: str | _Object | None = None
    response_format: _Typed | None = None
    seed: _Seed | None = None
    logit_bias: dict[str, float] | None = None


# A string, or an array of strings, of tokens or of token arrays; never empty. A mix of those
# forms is left for the provider to refuse: telling them apart would mean a Python pass over
# every token of a flat token array.
_Input = (Annotated[str, msgspec.Meta(min_length=1)]
          | Annotated[list[str | int | _TokenArray], msgspec.Meta(min_length=1)])


class _Embeddings(_Known, gc=False):
    input: _Input | None = None
    dimensions: _Count | None = None
    encoding_format: Literal["float", "base64"] | None = None


_VIEWS = {"chat": msgspec.json.Decoder(_Chat), "embeddings": msgspec.json.Decoder(_Embeddings)}
# One decoder per known field, used only to name the field when the view's decode failed.
_BY_FIELD = {kind: {f.encode_name: msgspec.json.Decoder(f.type) for f in msgspec.structs.fields(view)}
             for kind, view in (("chat", _Chat), ("embeddings", _Embeddings))}


def _decode_fields(body: bytes) -> dict[str, msgspec.Raw]:
    try:
        return _fields.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequest("the request body must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not valid UTF-8") from None


def _which_field(fields: dict[str, msgspec.Raw], kind: str, failure: Exception) -> InvalidRequest:
    """The view's decode failed: decode the known fields one by one to name the one at fault.
    Runs only for a request that is refused anyway, so the hot path pays nothing for it."""
    for name, decoder in _BY_FIELD[kind].items():
        raw = fields.get(name)
        if raw is None:
            continue
        try:
            decoder.decode(raw)
        except RecursionError:
            return InvalidRequest(f"'{name}' is nested too deeply", param=name)
        except msgspec.ValidationError as exc:  # msgspec says what it expected, and where below the field
            return InvalidRequest(f"invalid '{name}': {str(exc).replace('`$', '`' + name)}", param=name)
        except (UnicodeDecodeError, msgspec.DecodeError):  # msgspec checks UTF-8 only where it decodes text
            return InvalidRequest(f"'{name}' is not valid UTF-8", param=name)
    return InvalidRequest(f"the request is invalid: {failure}")  # e.g. duplicate keys that disagree


def _view(body: bytes, fields: dict[str, msgspec.Raw], kind: str) -> _Chat | _Embeddings:
    try:
        return _VIEWS[kind].decode(body)
    except (RecursionError, UnicodeDecodeError, msgspec.DecodeError) as exc:  # ValidationError included
        raise _which_field(fields, kind, exc) from None


def _check_chat(view: _Chat) -> None:
    messages = view.messages
    if not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if message.role not in _ROLES:
            raise InvalidRequest(f"messages[{i}].role {message.role!r} is not a valid role",
                                 param=f"messages[{i}].role")


def _check_embeddings(view: _Embeddings) -> None:
    if view.input is None:
        raise InvalidRequest("'input' is required", param="input")


def parse(body: bytes, kind: str = "chat") -> ChatRequest:
    """Decode and check a request body; every problem is a 400 naming the field."""
    fields = _decode_fields(body)
    view = _view(body, fields, kind)
    model = view.model
    if not model:
        raise InvalidRequest("'model' is required", param="model")
    if len(model) > 256 or not model.isprintable():
        raise InvalidRequest("'model' has control characters or is too long", param="model")
    if kind == "chat":
        _check_chat(view)
    else:
        _check_embeddings(view)
    options = view.stream_options
    return ChatRequest(kind, fields, model, view.stream is True, bool(options and options.include_usage), view.tags)
