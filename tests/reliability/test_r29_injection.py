"""Header and URL injection (RELIABILITY R29): control characters in model names, tags, provider
names and other user values are 400s or travel only inside JSON; a model name reaches an upstream
path only as one percent-encoded segment, and never as a dot segment."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from urllib.parse import unquote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.procs import GatewayProcess

ADMIN = "sk-r29-admin-key-0001"
NASTY = "\r\n\x00\x7f\x85\u2028\t /.?#%:@\\\"'<>"
names = st.text(alphabet=st.sampled_from(NASTY) | st.characters(codec="utf-8"), min_size=1, max_size=24) | \
    st.sampled_from(["..", ".", "../admin", "%2e%2e", "%2e%2e/admin", "a/../../b", "x\r\nX-Injected: 1", "m\x00",
                     "./m", "m?x=1", "m#f", "é", "a b", "model\u2028"])


class Recorder(http.server.BaseHTTPRequestHandler):
    """A threaded OpenAI-compatible upstream that records raw paths and header lines."""

    seen: list[tuple[str, list[tuple[str, str]], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.seen.append((self.path, list(self.headers.items()), body))
        answer = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{upstream.server_address[1]}"
    proc = GatewayProcess(tmp_path_factory.mktemp("r29"), {"auth": {"adminKey": ADMIN}}, log_level="warning")
    asyncio.run(proc.start())
    session = requests.Session()
    yield proc, base, session
    session.close()
    proc.stop()
    upstream.shutdown()


def _register(session, proc, item: dict) -> requests.Response:
    return session.post(proc.url + "/v1/llm/providers", json={"providers": [item]},
                        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)


def _clean_headers(headers: list[tuple[str, str]]) -> bool:
    return all(not any(c in name + value for c in "\r\n\x00") and name.lower() != "x-injected"
               for name, value in headers)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(names, st.sampled_from(["OPENAI_COMPATIBLE", "AZURE"]))
def test_r29_model_names_never_change_the_upstream_path(stack, name, kind):
    proc, base, session = stack
    item = {"name": "p", "supportedProvider": kind, "url": base + ("" if kind == "AZURE" else "/v1"),
            "models": [name], "isHosted": True, "apiKey": "sk-upstream-key", "apiVersion": "2024-10-21"}
    registered = _register(session, proc, item)
    assert registered.status_code in (200, 400), registered.text
    if registered.status_code == 400:  # control characters or too long: refused at registration
        assert not name.isprintable() or len(name) > 256
        return
    before = len(Recorder.seen)
    resp = session.post(proc.url + "/v1/chat/completions", timeout=5,
                        json={"model": name, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code in (200, 400), (resp.status_code, resp.text)
    assert "X-Injected" not in resp.headers
    new = Recorder.seen[before:]
    if resp.status_code == 400:  # a dot segment, which the client library would resolve: refused
        assert resp.json()["error"]["code"] == "invalid_model_name" and new == []
        return
    (path, headers, body), = new
    if kind == "AZURE":  # exactly one segment, which decodes to the name (':' may travel unencoded)
        route, _, query = path.partition("?")
        segments = route.split("/")
        assert segments[:3] == ["", "openai", "deployments"] and segments[4:] == ["chat", "completions"], path
        assert unquote(segments[3]) == name and query == "api-version=2024-10-21"
    else:
        assert path == "/v1/chat/completions" and json.loads(body)["model"] == name
    assert _clean_headers(headers)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(names)
def test_r29_control_characters_in_provider_names_are_refused(stack, name):
    proc, base, session = stack
    resp = _register(session, proc, {"name": name, "supportedProvider": "OPENAI_COMPATIBLE", "url": base + "/v1",
                                     "models": ["m"], "isHosted": True})
    if any(c in name for c in "\r\n\x00\x7f\x85\u2028\t /?#%:@\\\"'<>"):
        assert resp.status_code == 400
    assert resp.status_code in (200, 400) and "X-Injected" not in resp.headers


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=st.sampled_from(NASTY + "ab:"), min_size=1, max_size=20), names)
def test_r29_tags_and_user_values_are_400s_or_stay_inside_json(stack, tag, user):
    proc, base, session = stack
    assert _register(session, proc, {"name": "p", "supportedProvider": "OPENAI_COMPATIBLE", "url": base + "/v1",
                                     "models": ["m"], "isHosted": True}).status_code == 200
    before = len(Recorder.seen)
    resp = session.post(proc.url + "/v1/chat/completions", timeout=5,
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "tags": [tag],
                              "user": user})
    if any(c in tag for c in NASTY):
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_tag"
        assert len(Recorder.seen) == before
        return
    assert resp.status_code in (200, 400)
    for _, headers, body in Recorder.seen[before:]:
        assert _clean_headers(headers)
        assert json.loads(body)["user"] == user and "tags" not in json.loads(body)


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x7fb", b"team:a\rX-Injected: 1"])
def test_r29_control_characters_in_tag_headers_are_refused(stack, value):
    import socket

    proc, base, session = stack
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    before = len(Recorder.seen)
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-Tags: " + value + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answer = sock.recv(65536)
    assert answer.split(b" ")[1] == b"400"
    assert len(Recorder.seen) == before
