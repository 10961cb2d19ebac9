"""Capacity tests against a deployed gateway with locust (`python -m bench` does not need it).

    pip install locust
    BENCH_API_KEY=sk-... locust -f bench/locustfile.py --host https://gateway.example.com
    locust -f bench/locustfile.py --host http://127.0.0.1:8080 --tags stream --headless -u 200 -r 20 -t 2m

Users: `ChatUser` (non-stream, FastHttpUser) and `StreamUser` (SSE, read line by line), mixed
3:1. Tasks are tagged `nonstream` / `stream` (`--tags`, `--exclude-tags`). Each request picks
a model from a weighted mix. Streams report two extra entries per model: `ttfb <model>` (time
to the first `data:` line) and `stream <model>` (the whole stream), failing a stream that ends
without `data: [DONE]` or carries an error event.

Environment:
    BENCH_API_KEY      the caller key, sent as `Authorization: Bearer` (default: the bench's key)
    BENCH_MODELS       weighted mix, `model[:weight],…` (default: bench-model:3,bench-ttfb200-chunk20:1;
                       the bench's mock upstream understands these names, a real deployment wants its own)
    BENCH_BASE_PATH    the OpenAI base path on the host (default /openai/v1)
    BENCH_TAGS         the X-Tags header (default team:bench)
    BENCH_WAIT         seconds between a user's tasks, `min,max` (default 0.5,2)
"""

from __future__ import annotations

import os
import random
import time

from locust import FastHttpUser, HttpUser, between, tag, task

API_KEY = os.environ.get("BENCH_API_KEY", "sk-bench-caller-0123456789abcdef")
BASE_PATH = os.environ.get("BENCH_BASE_PATH", "/openai/v1").rstrip("/")
PATH = f"{BASE_PATH}/chat/completions"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "X-Tags": os.environ.get("BENCH_TAGS", "team:bench"),
           "Content-Type": "application/json"}
_WAIT = [float(x) for x in os.environ.get("BENCH_WAIT", "0.5,2").split(",")]


def _mix(spec: str) -> tuple[list[str], list[float]]:
    models, weights = [], []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, weight = item.partition(":")
        models.append(name)
        weights.append(float(weight or 1))
    return models, weights


MODELS, WEIGHTS = _mix(os.environ.get("BENCH_MODELS", "bench-model:3,bench-ttfb200-chunk20:1"))


def pick_model() -> str:
    return random.choices(MODELS, WEIGHTS)[0]


def body(model: str, stream: bool) -> dict:
    return {"model": model, "stream": stream, "max_tokens": 128, "temperature": 0.2, "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Say hello to the load test in one short sentence."}]}


class ChatUser(FastHttpUser):
    """Non-stream chat completions."""

    weight = 3
    wait_time = between(*_WAIT)

    @tag("nonstream")
    @task
    def chat(self) -> None:
        model = pick_model()
        with self.client.post(PATH, json=body(model, False), headers=HEADERS, name=f"chat {model}",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
            elif b'"choices"' not in (resp.content or b""):
                resp.failure("no choices in the answer")


class StreamUser(HttpUser):
    """SSE streams, read as they arrive (requests' streaming; FastHttpUser buffers differently)."""

    weight = 1
    wait_time = between(*_WAIT)

    @tag("stream")
    @task
    def stream(self) -> None:
        model = pick_model()
        started = time.perf_counter()
        with self.client.post(PATH, json=body(model, True), headers=HEADERS, name=f"open {model}", stream=True,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            events, done, error, ttfb = self._read(resp, started)
            if error or not done:
                resp.failure(error or f"the stream ended without [DONE] after {events} events")
            self._report(f"stream {model}", started, events, None if done and not error else "incomplete stream")
            if ttfb is not None:
                self._fire(f"ttfb {model}", ttfb, 0, None)

    @staticmethod
    def _read(resp, started: float) -> tuple[int, bool, str | None, float | None]:
        events, done, error, ttfb = 0, False, None, None
        for line in resp.iter_lines(chunk_size=None):
            if not line.startswith(b"data:"):
                continue
            if ttfb is None:
                ttfb = (time.perf_counter() - started) * 1000
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            if data.startswith(b'{"error"'):
                error = data.decode(errors="replace")[:200]
                break
            events += 1
        return events, done, error, ttfb

    def _report(self, name: str, started: float, events: int, failure: str | None) -> None:
        self._fire(name, (time.perf_counter() - started) * 1000, events, None if failure is None else Exception(failure))

    def _fire(self, name: str, millis: float, length: int, exception: Exception | None) -> None:
        self.environment.events.request.fire(request_type="SSE", name=name, response_time=millis,
                                             response_length=length, exception=exception, context={})
