"""A real HTTP forward proxy on loopback, as corporate egress proxies behave:

- `CONNECT host:port` opens a tunnel (200, then bytes both ways);
- an absolute-form request (`POST http://host:port/path HTTP/1.1`) is forwarded in origin form,
  one request per connection (`Connection: close` to both sides);
- with `user`/`password` set, a request without the right `Proxy-Authorization: Basic` gets
  407 with `Proxy-Authenticate`, and nothing is forwarded.

Every name in `hosts` is resolved by the proxy to 127.0.0.1 (the test origins listen there), so
the gateway's own resolver is never asked for them. `lines` logs every request line,
`connections` counts accepted connections, `auth` every Proxy-Authorization header seen.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket


class ForwardProxy:
    def __init__(self, user: str | None = None, password: str | None = None, hosts: tuple[str, ...] = ()) -> None:
        self.expected = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.hosts = set(hosts)
        self.lines: list[str] = []
        self.auth: list[str | None] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> ForwardProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, user: str | None = None, password: str | None = None) -> str:
        userinfo = f"{user}:{password}@" if user is not None else ""
        return f"http://{userinfo}127.0.0.1:{self.port}"

    @property
    def connects(self) -> list[str]:
        return [line for line in self.lines if line.startswith("CONNECT ")]

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def _address(self, authority: str) -> tuple[str, int]:
        host, _, port = authority.rpartition(":")
        host = host.strip("[]")
        return ("127.0.0.1" if host in self.hosts else host), int(port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *fields = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
            self.lines.append(line)
            self.auth.append(headers.get("proxy-authorization"))
            if self.expected is not None and headers.get("proxy-authorization") != self.expected:
                writer.write(b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="egress"'
                             b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            method, target, _ = line.split(" ")
            if method == "CONNECT":
                upstream_reader, upstream_writer = await asyncio.open_connection(*self._address(target))
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                upstream_reader, upstream_writer = await self._forward(method, target, fields, reader)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

    async def _forward(self, method: str, target: str, fields: list[str], reader: asyncio.StreamReader):
        """Send an absolute-form request on to its origin, in origin form, closing after it."""
        rest = target.split("://", 1)[1]
        authority, slash, path = rest.partition("/")
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._address(authority))
        kept = [f for f in fields if f and not f.lower().startswith(("proxy-", "connection:"))]
        head = "\r\n".join([f"{method} {slash}{path} HTTP/1.1", *kept, "Connection: close", "", ""])
        upstream_writer.write(head.encode("latin-1"))
        return upstream_reader, upstream_writer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes as they come, one way, until the end: a stream through the proxy stays incremental."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.write_eof()


class Hosts:
    """A fake DNS for the gateway's resolver: the names given are 127.0.0.1, others do not exist
    (`asked` logs every question, so a test can show the gateway did not resolve a name)."""

    def __init__(self, *names: str) -> None:
        self.names, self.asked = set(names), []

    async def resolve(self, host, port, family):
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"{host}: no such name")
        return [{"family": socket.AF_INET, "host": "127.0.0.1", "port": port}]

    async def close(self) -> None:
        pass
