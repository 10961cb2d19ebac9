"""Streaming: the one SSE decoder and the relay that moves upstream bytes to the client."""
