"""The data plane's HTTP/1.1 client, against a raw TCP server that answers exactly the bytes given."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import socket
import ssl
import struct
import threading
import time
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.net import httpclient
from proxy.net.netguard import GuardedResolver

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Wire:
    """A TCP server on loopback: records every request's bytes and answers with `answer(n)`."""

    def __init__(self, answer) -> None:
        self.answer = answer  # request index -> bytes to write (None: close without answering)
        self.requests: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Wire:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(len(self.requests) - 1)
                if answer is None:
                    break
                if callable(answer):
                    await answer(writer)
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def wire():
    made = []

    async def make(answer) -> Wire:
        made.append(await Wire(answer if callable(answer) else (lambda n: answer)).start())
        return made[-1]

    yield make
    for w in made:
        await w.stop()


@pytest.fixture
async def client():
    made = httpclient.Client(GuardedResolver(lambda host: True), user_agent="test-agent/1")
    yield made
    await made.close()


async def _body(response: httpclient.Response) -> bytes:
    parts = []
    while chunk := await response.chunk():
        parts.append(chunk)
    return b"".join(parts)


async def _post(client, url, body=b"{}", headers=None, **kwargs) -> httpclient.Response:
    return await client.request("POST", url, headers or {"Content-Type": "application/json"}, body,
                                connect_timeout=kwargs.pop("connect_timeout", 2.0), **kwargs)


async def test_the_request_on_the_wire_and_the_answer(wire, client):
    w = await wire(OK)
    response = await _post(client, w.url + "/v1/chat/completions?api-version=2024-10-21", b'{"a":1}',
                           {"Content-Type": "application/json", "Authorization": "Bearer sk-test"})
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"  # case-insensitive
    assert await _body(response) == b"{}"
    head, _, body = w.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?api-version=2024-10-21 HTTP/1.1"
    assert f"Host: 127.0.0.1:{w.port}".encode() in lines
    assert b"Authorization: Bearer sk-test" in lines and b"User-Agent: test-agent/1" in lines
    assert b"Content-Length: 7" in lines and b"Accept-Encoding: gzip, deflate" in lines
    assert body == b'{"a":1}'


async def test_connections_are_kept_alive_and_reused(wire, client):
    w = await wire(OK)
    for _ in range(20):
        response = await _post(client, w.url + "/x")
        assert await _body(response) == b"{}"
    assert w.connections == 1 and len(w.requests) == 20


async def test_only_a_connection_idle_a_while_is_asked_whether_its_peer_closed(wire, client, monkeypatch):
    """The socket check (a syscall that hands the GIL to other threads) is for connections that sat
    idle long enough for a provider's keep-alive timer; one answered moments ago is reused as is."""
    asked = []
    real = client._peer_closed
    monkeypatch.setattr(client, "_peer_closed", lambda fd: asked.append(fd) or real(fd))
    w = await wire(OK)
    for _ in range(5):
        assert await _body(await _post(client, w.url + "/x")) == b"{}"
    assert asked == []  # back to back: fresh each time
    await asyncio.sleep(httpclient._FRESH_IDLE * 2)
    assert await _body(await _post(client, w.url + "/x")) == b"{}"
    assert len(asked) == 1 and w.connections == 1


async def test_concurrent_requests_each_get_a_connection_then_share_the_pool(wire, client):
    async def slow(writer):
        await asyncio.sleep(0.05)
        writer.write(OK)

    w = await wire(lambda n: slow)
    responses = await asyncio.gather(*(_post(client, w.url + "/x") for _ in range(5)))
    assert [await _body(r) for r in responses] == [b"{}"] * 5
    assert w.connections == 5
    for _ in range(5):
        await _body(await _post(client, w.url + "/x"))
    assert w.connections == 5


async def test_connection_close_from_the_server_is_not_reused(wire, client):
    w = await wire(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    for _ in range(3):
        assert await _body(await _post(client, w.url + "/x")) == b"{}"
    assert w.connections == 3


async def test_an_idle_connection_the_server_closed_is_not_used_again(wire, client):
    w = await wire(OK)
    assert await _body(await _post(client, w.url + "/x")) == b"{}"
    for writer in w.writers:
        writer.close()
    await asyncio.sleep(0.05)
    assert await _body(await _post(client, w.url + "/x")) == b"{}"
    assert w.connections == 2


async def test_idle_connections_are_closed_after_the_keepalive_time(wire):
    w = await wire(OK)
    client = httpclient.Client(GuardedResolver(lambda host: True), user_agent="t", keepalive=0.1)
    try:
        await _body(await _post(client, w.url + "/x"))
        origin = next(iter(client._origins.values()))
        assert len(origin.idle) == 1
        await asyncio.sleep(0.35)
        assert len(origin.idle) == 0  # closed by the sweeper, with no request to notice
        await _body(await _post(client, w.url + "/x"))
        assert w.connections == 2
    finally:
        await client.close()


async def test_chunked_body_arrives_as_sent(wire, client):
    w = await wire(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"6\r\ndata: \r\n3\r\n1\n\n\r\n0\r\n\r\n")
    response = await _post(client, w.url + "/x", decompress=False)
    assert await _body(response) == b"data: 1\n\n"
    await _body(await _post(client, w.url + "/x"))
    assert w.connections == 1  # the chunked answer ended cleanly: the connection is reused


async def test_a_body_without_length_ends_with_the_connection(wire, client):
    w = await wire(lambda n: (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\": 1}" if n == 0 else OK))

    async def answer_then_close(writer):
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil-close")
        await writer.drain()
        writer.close()

    w.answer = lambda n: answer_then_close
    assert await _body(await _post(client, w.url + "/x")) == b"until-close"


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_compressed_bodies_are_decoded_when_asked(wire, client, coding):
    data = b'{"choices": []}' * 100
    packed = gzip.compress(data) if coding == "gzip" else zlib.compress(data)
    w = await wire(b"HTTP/1.1 200 OK\r\nContent-Encoding: " + coding.encode() + b"\r\nContent-Length: "
                   + str(len(packed)).encode() + b"\r\n\r\n" + packed)
    assert await _body(await _post(client, w.url + "/x")) == data
    raw = await _post(client, w.url + "/x", decompress=False)
    assert await _body(raw) == packed
    assert b"Accept-Encoding" not in w.requests[1]


async def test_a_broken_compressed_body_is_an_error(wire, client):
    w = await wire(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz")
    response = await _post(client, w.url + "/x")
    with pytest.raises(httpclient.BadResponse):
        await _body(response)


async def test_informational_answers_are_skipped(wire, client):
    w = await wire(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    response = await _post(client, w.url + "/x")
    assert response.status == 200 and await _body(response) == b"{}"


async def test_a_close_without_an_answer_is_disconnected(wire, client):
    w = await wire(None)
    with pytest.raises(httpclient.Disconnected) as caught:
        await _post(client, w.url + "/x")
    assert caught.value.stale is False  # a new connection: not a pool's stale one


async def test_a_body_cut_short_is_body_broken(wire, client):
    async def cut(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    w = await wire(lambda n: cut)
    response = await _post(client, w.url + "/x")
    with pytest.raises(httpclient.BodyBroken):
        await _body(response)


async def test_not_http_is_a_bad_response(wire, client):
    w = await wire(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    with pytest.raises(httpclient.BadResponse):
        await _post(client, w.url + "/x")


async def test_a_head_over_the_cap_is_refused(wire, client):
    huge = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(80))
    w = await wire(b"HTTP/1.1 200 OK\r\n" + huge + b"Content-Length: 2\r\n\r\n{}")
    with pytest.raises(httpclient.BadResponse, match="head is larger"):
        await _post(client, w.url + "/x")


async def test_a_large_body_in_the_same_read_as_the_head_is_fine(wire, client):
    body = b"x" * 300_000
    w = await wire(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + body)
    assert await _body(await _post(client, w.url + "/x")) == body


async def test_a_reader_that_stops_pauses_the_connection(wire, client):
    block = b"data: " + b"x" * 1018 + b"\n\n"  # 1 KiB events
    sent = asyncio.Event()

    async def flood(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4096):  # 4 MiB, far more than the socket buffers hold
            writer.write(b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        sent.set()

    w = await wire(lambda n: flood)
    response = await _post(client, w.url + "/x", decompress=False)
    await asyncio.sleep(0.3)
    assert not sent.is_set()  # the server is held back by the socket: the client stopped reading
    assert response._size <= client.high + 256 * 1024  # at most one read past the mark
    total = 0
    while chunk := await response.chunk():
        total += len(chunk)
    assert total == 4096 * len(block) and sent.is_set()


async def test_refused_connection_is_connect_failed(client):
    with pytest.raises(httpclient.ConnectFailed):
        await _post(client, "http://127.0.0.1:1/x")


async def test_the_network_guard_refusing_is_connect_failed():
    client = httpclient.Client(GuardedResolver(lambda host: False), user_agent="t")
    try:
        with pytest.raises(httpclient.ConnectFailed, match="metadata"):
            await _post(client, "http://metadata.google.internal/x")
    finally:
        await client.close()


async def test_a_slow_connect_is_connect_timeout():
    class Slow:
        async def resolve(self, host, port, family):
            await asyncio.sleep(5)

    client = httpclient.Client(Slow(), user_agent="t")
    try:
        with pytest.raises(httpclient.ConnectTimeout):
            await _post(client, "http://provider.example/x", connect_timeout=0.05)
    finally:
        await client.close()


@pytest.mark.parametrize("headers", [{"X-Evil": "a\r\nX-Injected: 1"}, {"X-Evil\r\nX": "a"}, {"X-Evil": "a\nb"}])
async def test_a_header_carrying_a_line_break_is_refused(wire, client, headers):
    w = await wire(OK)
    with pytest.raises(ValueError):
        await _post(client, w.url + "/x", headers=headers)
    assert w.requests == []


async def test_the_path_is_quoted_and_userinfo_becomes_basic_auth(wire, client):
    w = await wire(OK)
    url = f"http://user:pw@127.0.0.1:{w.port}/deployments/my model\r\nX: 1/chat?api-version=1 2"
    await _body(await _post(client, url))
    line = w.requests[0].split(b"\r\n")[0]
    assert line == b"POST /deployments/my%20modelX:%201/chat?api-version=1%202 HTTP/1.1"  # CR, LF dropped by urlsplit
    assert b"Authorization: Basic dXNlcjpwdw==" in w.requests[0]


async def test_a_response_closed_before_its_end_closes_its_connection(wire, client):
    w = await wire(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    response = await _post(client, w.url + "/x")
    assert await response.chunk() == b"12345"
    response.close()
    w.answer = lambda n: OK
    await _body(await _post(client, w.url + "/x"))
    assert w.connections == 2


async def test_a_cancelled_request_closes_its_connection(wire, client):
    async def never(writer):
        await asyncio.sleep(30)

    w = await wire(lambda n: never)
    task = asyncio.ensure_future(_post(client, w.url + "/x"))
    while not w.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    w.answer = lambda n: OK
    await _body(await _post(client, w.url + "/x"))
    assert w.connections == 2


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for `localhost` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_https_verifies_the_provider_and_keeps_the_connection(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)
    w = Wire(lambda n: OK)
    w.server = await asyncio.start_server(w._serve, "127.0.0.1", 0, ssl=server_ctx)
    port = w.server.sockets[0].getsockname()[1]

    class Loopback:  # `localhost` resolves to the test server
        async def resolve(self, host, port, family):
            return [{"family": socket.AF_INET, "host": "127.0.0.1", "port": port}]

    trusting = ssl.create_default_context(cafile=cert)
    client = httpclient.Client(Loopback(), user_agent="t", ssl_context=trusting)
    stranger = httpclient.Client(Loopback(), user_agent="t")  # the system's trust store only
    try:
        for _ in range(3):
            assert await _body(await _post(client, f"https://localhost:{port}/x")) == b"{}"
        assert w.connections == 1 and names == ["localhost"]  # SNI sent, one TLS connection reused
        with pytest.raises(httpclient.ConnectFailed):  # an unknown issuer is refused
            await _post(stranger, f"https://localhost:{port}/x")
    finally:
        await client.close()
        await stranger.close()
        await w.stop()


async def test_a_pooled_connection_closed_as_it_is_reused_is_stale_and_fresh_skips_the_pool(wire, client):
    w = await wire(lambda n: OK if n != 1 else None)  # the second request is read, then the connection closed
    assert await _body(await _post(client, w.url + "/x")) == b"{}"
    with pytest.raises(httpclient.Disconnected) as caught:
        await _post(client, w.url + "/x")
    assert caught.value.stale is True and w.connections == 1
    assert await _body(await _post(client, w.url + "/x", fresh=True)) == b"{}"
    assert await _body(await _post(client, w.url + "/x", fresh=True)) == b"{}"
    assert w.connections == 3  # fresh: a new connection although one was idle in the pool


class Blocking:
    """A provider served from its own thread, one connection at a time by `serve(server, conn)`:
    what it does happens while the test's event loop is not running, so the client's loop has
    not seen it yet when the next request starts."""

    def __init__(self, serve) -> None:
        self.serve = serve
        self.requests = 0
        self.connections = 0
        self.go = threading.Event()  # the test says when the provider may act
        self.done = threading.Event()  # the provider says it did
        self.current: socket.socket | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # shut down by stop()
                return
            self.connections += 1
            self.current = conn
            with conn:
                conn.settimeout(10)
                try:
                    self.serve(self, conn)
                except OSError:
                    pass

    def read_request(self, conn: socket.socket) -> bool:
        """One whole request (head and Content-Length body); False at the connection's end."""
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return False
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            more = conn.recv(1 << 20)
            if not more:
                return False
            body += more
        self.requests += 1
        return True

    def stop(self) -> None:
        self.go.set()
        for sock in (self.current, self.listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


def _answer_then_close_the_first_when_told(server: Blocking, conn: socket.socket) -> None:
    first = server.connections == 1
    while server.read_request(conn):
        conn.sendall(OK)
        if first:
            server.go.wait(5)
            conn.close()  # an idle close: FIN, with no request on the connection
            server.done.set()
            return


async def test_a_pooled_connection_the_provider_closed_is_never_written_to(client):
    server = Blocking(_answer_then_close_the_first_when_told)
    try:
        assert await _body(await _post(client, server.url + "/x")) == b"{}"
        server.go.set()
        assert server.done.wait(5)
        time.sleep(0.05)  # the close reaches this side's socket; the loop does not run to see it
        assert await _body(await _post(client, server.url + "/x")) == b"{}"  # on a new connection
        assert (server.requests, server.connections) == (2, 2)  # the closed one was never written to
    finally:
        server.stop()


def _read_late_then_reset(server: Blocking, conn: socket.socket) -> None:
    server.go.wait(5)  # the request waits, partly in the client's buffer, until the test says
    if server.read_request(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.done.set()  # `with conn` closes it: a reset, no answer


async def _kernel_takes(port: int) -> int:
    """How many bytes the kernel accepts on a new connection to `port` that nobody reads."""
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        transport.writelines([b"x" * 8_000_000])
        await asyncio.sleep(0.1)
        return 8_000_000 - transport.get_write_buffer_size()
    finally:
        transport.abort()


async def test_a_request_the_provider_read_whole_is_not_called_unsent(client):
    """The request's tail waits in the client's buffer (less than a buffer's high-water mark) until
    the provider reads it all, then resets: that is a close after the whole request (the provider
    may have charged it), never a reset before it was sent (which the caller may send again)."""
    server = Blocking(_read_late_then_reset)
    try:
        size = await _kernel_takes(server.port) + 20_000
        call = asyncio.ensure_future(_post(client, server.url + "/x", b"x" * size))
        await asyncio.sleep(0.2)  # written as far as the kernel takes; 20 kB wait in the buffer
        server.go.set()
        with pytest.raises(httpclient.Disconnected):
            await call
        assert server.done.is_set() and server.requests == 1
    finally:
        server.stop()


async def _held_request(client, url: str):
    """Start a request on a pooled connection, with the client's end of turn caught: (the task,
    the held write)."""
    held = []
    client.end_of_turn = held.append  # an instance attribute over the client's own
    task = asyncio.create_task(_post(client, url))
    await asyncio.sleep(0)  # the task ran until it waits for the head
    del client.end_of_turn
    assert len(held) == 1  # taken, and held for the end of the turn rather than written
    return task, held[0]


async def test_a_request_is_written_when_its_turn_ends(wire, client):
    w = await wire(OK)
    assert await _body(await _post(client, w.url + "/first")) == b"{}"
    task, write = await _held_request(client, w.url + "/second")
    assert not write.__self__._flushed  # a reset now would be one of a request never sent
    write()
    assert await _body(await task) == b"{}"
    assert [r.split(b" ")[1] for r in w.requests] == [b"/first", b"/second"]


async def test_a_request_whose_connection_dies_before_its_turn_ends_is_never_written(wire, client):
    w = await wire(OK)
    assert await _body(await _post(client, w.url + "/first")) == b"{}"
    task, write = await _held_request(client, w.url + "/second")
    write.__self__.transport.abort()  # the provider's reset, seen in the same turn
    await asyncio.sleep(0)  # connection_lost
    write()
    with pytest.raises(httpclient.ResetBeforeSent) as caught:
        await task
    assert caught.value.stale  # not written, on a reused connection: the caller may send it again
    await asyncio.sleep(0.05)
    assert len(w.requests) == 1
