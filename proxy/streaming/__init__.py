"""Streaming: the one incremental SSE decoder (and framer) every adapter and dialect reads events with."""
