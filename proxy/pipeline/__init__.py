"""The one request pipeline: auth, decode, quota, cost routing, cache, dispatch, relay, and the
request's end (its outcome and usage record). `serve.py` runs it; the other modules are its stages."""
