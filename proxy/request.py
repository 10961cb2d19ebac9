"""Decoding an OpenAI request body once, into the few fields the gateway reads.

Top-level fields stay `msgspec.Raw`: the body is re-encoded for the upstream by splicing raw
slices, so a 1 MB prompt is never turned into Python objects on the passthrough path.
"""

from __future__ import annotations

import msgspec

from proxy.errors import InvalidRequest

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_str = msgspec.json.Decoder(str)
_bool = msgspec.json.Decoder(bool)
_tags = msgspec.json.Decoder(list[str])
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class _Message(msgspec.Struct):
    role: str


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


_messages = msgspec.json.Decoder(list[_Message])
_stream_options = msgspec.json.Decoder(_StreamOptions)
_encode = msgspec.json.encode
_TRUE_USAGE = msgspec.Raw(b'{"include_usage":true}')


class ChatRequest:
    """An OpenAI chat or embeddings request, decoded just enough to route and record it."""

    __slots__ = ("kind", "fields", "model", "stream", "wants_usage", "tags", "native")

    def __init__(self, kind: str, fields: dict[str, msgspec.Raw], model: str, stream: bool,
                 wants_usage: bool, tags: list[str] | None) -> None:
        self.kind = kind
        self.fields = fields
        self.model = model
        self.stream = stream
        self.wants_usage = wants_usage
        self.tags = tags
        self.native = None  # an inbound dialect's own request (providers.base.Native), for a passthrough

    def decode(self, name: str, type_, default=None):
        """Decode one field fully (for adapters that translate)."""
        raw = self.fields.get(name)
        if raw is None:
            return default
        return msgspec.json.decode(raw, type=type_)

    def openai_body(self, model: str, *, ask_usage: bool) -> bytes:
        """The body for an OpenAI-wire upstream: our own fields out, the served model in."""
        fields = self.fields
        out = {k: v for k, v in fields.items() if k != "tags"}
        out["model"] = model
        if self.stream and ask_usage and not self.wants_usage:
            out["stream_options"] = _TRUE_USAGE
        return _encode(out)


def _field(fields, name: str, decoder, what: str):
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except RecursionError:
        raise InvalidRequest(f"'{name}' is nested too deeply", param=name) from None
    except msgspec.ValidationError:
        raise InvalidRequest(f"'{name}' must be {what}", param=name) from None
    except (UnicodeDecodeError, msgspec.DecodeError):  # msgspec checks UTF-8 only where it decodes text (RELIABILITY R25)
        raise InvalidRequest(f"'{name}' is not valid UTF-8", param=name) from None


def parse(body: bytes, kind: str = "chat") -> ChatRequest:
    """Decode and check a request body; every problem is a 400 naming the field."""
    try:
        fields = _fields.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequest("the request body must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not valid UTF-8") from None
    model = _field(fields, "model", _str, "a string")
    if not model:
        raise InvalidRequest("'model' is required", param="model")
    if len(model) > 256 or not model.isprintable():
        raise InvalidRequest("'model' has control characters or is too long", param="model")
    if kind == "chat":
        messages = _field(fields, "messages", _messages, "an array of message objects with a role")
        if not messages:
            raise InvalidRequest("'messages' must be a non-empty array", param="messages")
        for i, message in enumerate(messages):
            if message.role not in _ROLES:
                raise InvalidRequest(f"messages[{i}].role {message.role!r} is not a valid role",
                                     param=f"messages[{i}].role")
    elif "input" not in fields:
        raise InvalidRequest("'input' is required", param="input")
    stream = bool(_field(fields, "stream", _bool, "a boolean"))
    options = _field(fields, "stream_options", _stream_options, "an object")
    tags = _field(fields, "tags", _tags, "an array of strings")
    return ChatRequest(kind, fields, model, stream, bool(options and options.include_usage), tags)
