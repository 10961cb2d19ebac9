"""Inbound dialects: other client APIs in front of the one chat pipeline.

`proxy/providers/` is the way out (one adapter per provider wire); this package is the way in
(one dialect per client API the gateway answers besides OpenAI chat). Every dialect request runs
the chat pipeline (`proxy.pipeline.serve.serve(http_request, "chat", DIALECT)`): auth, quotas,
routing, failover, relay, records and metrics are chat's; the record's `endpoint` and the
metrics' route are the dialect's `name`. A dialect is sans-IO, like an adapter:

    request(body, headers) -> (ChatRequest, Context)
        The caller's body as an OpenAI chat request (`proxy.dialects.completions.parse` of the chat body the
        dialect writes, so it is checked like any chat request), with `request.native` set to a
        `providers.base.Native` holding the body as it came; a 400 names the dialect's field.
        The Context (a subclass of `base.Context`) keeps what the answer needs.
    answer(chat_body, context) -> bytes
        A chat completion body as the dialect's answer body.
    stream(context) -> StreamTranslator
        Per request: `feed(Chunk)` gets each chat chunk decoded (`base.Chunk`), returns frames;
        `close(None)` the closing frames, `close(error)` the error frame of a failed stream.
        Incremental: the only buffering allowed is one tool call's argument pieces where the
        dialect's wire needs a call whole.
    error_body(error) -> bytes, id_header
        Every error of the dialect's routes in its shape (status unchanged), with the request
        id in `id_header` as well as X-Request-Id.

Passthrough: an adapter that speaks a dialect natively lists its `name` in
`Capabilities.dialects` and, for a request whose `native.dialect` it speaks
(`providers.base.speaks`), builds the upstream request from `native.fields` (model swapped),
returns the body untouched from `parse_response` and relays the events untouched from its
stream parser, reading usage off them. The pipeline then skips `answer`/`stream` (see
`base.answer`, `base.adopt_stream`); errors are still framed by the dialect. Never branch on a
provider's name: only on its declared capabilities.

The response cache keeps chat answers only: a translated answer is stored as the chat answer it
was, and a hit is translated like a live answer (`base.Replayed`); a passthrough answer is not
stored.

What a translation cannot carry (a server tool) is `Context.refusal`: `base.fit` keeps only the
routes that speak the dialect natively, or raises the refusal. `Context.reasoning` marks a
`reasoning_effort` that only `Capabilities.reasoning` providers take.

Adding a dialect: a module here with a `DIALECT` object of the shape above (see `messages.py`),
its routes in `proxy/routes/` calling `chat.serve(http_request, "chat", DIALECT)`, the paths in
`proxy.app.add_routes` and `proxy.app.dialect_of` (errors raised before the handler, such as a
503 at admission, are framed by path), the journal's recorded paths
(`proxy.telemetry.journal`), `proxy/data/openapi.json`, and `dialects=` on the adapters that
speak it natively.
"""

from proxy.dialects.base import DialectStream, adopt_stream, answer, fit, passthrough, replayed

__all__ = ["DialectStream", "adopt_stream", "answer", "fit", "passthrough", "replayed"]
