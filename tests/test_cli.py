"""The command line, as a user runs it: a real process on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from proxy.pipeline.auth import digest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ADMIN_API_KEY", "PORT")}
    return {**env, "DATA_DIR": str(tmp_path / "data"), **extra}


def _wait_ready(port: int, proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not become ready")


def _chat(port: int) -> dict:
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/openai/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_serve_on_embedded_defaults_answers_the_demo_model_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port)], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        answer = _chat(port)
        assert answer["model"] == "mock-gpt" and answer["choices"][0]["finish_reason"] == "stop"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    events = [line["event"] for line in lines]
    assert "listening" in events and "dev_mode" in events and "castai_sink_off" in events and "stopped" in events
    assert (tmp_path / "data" / "usage.db").exists()


def test_refuses_a_public_address_without_caller_keys(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "proxy", "serve", "--host", "0.0.0.0", "--port", str(_free_port())],
                          env=_env(tmp_path), capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"auth.keys" in proc.stderr and b"Traceback" not in proc.stderr


def test_a_bad_config_stops_the_start_naming_the_field(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 8080}\ntimeouts: {firstByte: soon}\n")
    proc = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(config)], env=_env(tmp_path),
                          capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"$.timeouts.firstByte" in proc.stderr and b"Traceback" not in proc.stderr


def test_workers_share_the_port(tmp_path):
    port = _free_port()
    config = tmp_path / "c.yaml"
    config.write_text("providers: [{name: mock, supportedProvider: MOCK, models: [mock-gpt], isHosted: true}]\n"
                      f"auth: {{keys: [{{id: a, sha256: {digest('worker-key')}}}]}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port),
                             "--workers", "2", "--host", "0.0.0.0"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        time.sleep(1.0)  # let both workers bind
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
        assert len(out.split()) >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_hash_key():
    out = subprocess.run([sys.executable, "-m", "proxy", "hash-key", "abc"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == digest("abc")


@pytest.mark.parametrize("argv", [["--version"]])
def test_version(argv):
    out = subprocess.run([sys.executable, "-m", "proxy", *argv], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip()


async def test_the_health_port_serves_probes_and_metrics_only(gateway_process):
    import aiohttp

    from tests.procs import free_port

    port = free_port()
    mock = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}
    gw = await gateway_process({"providers": [mock]}, env={"HEALTH_PORT": str(port)})
    probes = f"http://127.0.0.1:{port}"
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(probes + path) as r:
                assert r.status == 200, path
        async with session.post(probes + "/v1/chat/completions", json=body) as r:
            assert r.status == 404 and (await r.json())["error"]["type"]  # the data plane is not there
        async with session.get(probes + "/v1/llm/providers") as r:
            assert r.status == 404
        async with session.post(gw.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200


# -- help on every option ------------------------------------------------------------
def test_every_command_line_option_has_help():
    import argparse

    from proxy.cli import _parser

    def options(parser: argparse.ArgumentParser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from ((f"{name} {opt}", help_) for opt, help_ in options(sub))
            else:
                yield "/".join(action.option_strings) or action.dest, action.help

    missing = [name for name, help_ in options(_parser()) if not help_]
    assert not missing, missing


@pytest.mark.parametrize("argv", [["hash-key", "-"], ["hash-key"]])
def test_hash_key_reads_the_key_from_stdin(argv):
    """`-`, or no key with stdin not a terminal: one line of stdin, its line end and surrounding
    white space dropped (as the gateway drops them from a presented key)."""
    out = subprocess.run([sys.executable, "-m", "proxy", *argv], input="  s3cret-key-01\r\nignored\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == digest("s3cret-key-01") and "s3cret" not in out.stdout + out.stderr


@pytest.mark.parametrize("stdin", ["", "\n", "   \n"])
def test_hash_key_refuses_an_empty_key_from_stdin(stdin):
    out = subprocess.run([sys.executable, "-m", "proxy", "hash-key", "-"], input=stdin,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stdout == ""
    assert "no key given" in out.stderr and "Traceback" not in out.stderr


def test_hash_key_prompts_without_echo_on_a_terminal():
    """No key and stdin a terminal: a prompt, the key typed is not echoed, its hash printed."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty (getpass opens /dev/tty)
        os.execv(sys.executable, [sys.executable, "-m", "proxy", "hash-key"])
    seen, deadline, typed = b"", time.monotonic() + 30, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child has exited and the pty is closed
                    break
                if not chunk:
                    break
                seen += chunk
            if not typed and b"key (not echoed):" in seen:
                os.write(fd, b"typed-secret-0001\n")
                typed = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert typed, seen
    assert os.waitstatus_to_exitcode(status) == 0
    assert digest("typed-secret-0001").encode() in seen
    assert b"typed-secret" not in seen  # the terminal did not echo it
