"""The way through a forward proxy (`proxy.net.egress`): a TCP connection to it, and a CONNECT tunnel.

The proxy is operator configuration, so it may sit on a private address; it is still never
connected to on a cloud metadata address (a proxy name that resolves there is refused). The
origin behind it is resolved by the proxy: the caller judges the origin's name before asking
for a tunnel (`proxy.net.httpclient`).

A refusal (407, 403, 502 from the proxy) is a connect failure whose message names the proxy,
its password masked, and the status: the request is not retried through the same proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from proxy.net import netguard
from proxy.net.egress import Proxy

MAX_ANSWER_HEAD = 16 * 1024  # bytes of the proxy's answer to CONNECT


class ProxyFailed(ConnectionError):
    """The proxy could not be reached, or refused the tunnel; the message says which and why."""


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: its status line and headers, nothing after them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[tuple[int, str]] = loop.create_future()
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():  # answered already: TLS (the origin speaks second) fails on stray bytes
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_ANSWER_HEAD:
                self.answer.set_exception(ProxyFailed("answered CONNECT with a head too large"))
            return
        line = self.buffer[:self.buffer.find(b"\r\n")].decode("latin-1")
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            self.answer.set_exception(ProxyFailed("answered CONNECT with something that is not HTTP"))
        elif self.buffer[end + 4:]:
            self.answer.set_exception(ProxyFailed("sent data before the tunnel was used"))
        else:
            printable = "".join(c for c in reason[:80] if c.isprintable())
            self.answer.set_result((int(code), printable))

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyFailed("closed the connection before answering CONNECT"))


async def _addresses(loop: asyncio.AbstractEventLoop, proxy: Proxy) -> list[tuple[int, str]]:
    literal = netguard.literal_address(proxy.host)
    if literal is not None:
        found = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    else:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
        found = [(family, sockaddr[0]) for family, _, _, _, sockaddr in infos]
    allowed = [(family, host) for family, host in found
               if netguard.classify(ipaddress.ip_address(host)) not in ("metadata", "unspecified")]
    if not allowed:
        raise ProxyFailed(f"the egress proxy {proxy.shown} resolves only to a cloud metadata or unusable address")
    return allowed


async def connect(loop: asyncio.AbstractEventLoop, proxy: Proxy, factory) -> tuple[asyncio.Transport, object]:
    """A TCP connection to the proxy, with `factory()` as its protocol."""
    try:
        addresses = await _addresses(loop, proxy)
    except OSError as exc:
        if isinstance(exc, ProxyFailed):
            raise
        raise ProxyFailed(f"could not resolve the egress proxy {proxy.shown}: {exc.strerror or exc}") from None
    failure: OSError | None = None
    for family, host in addresses:
        try:
            return await loop.create_connection(factory, host, proxy.port, family=family)
        except OSError as exc:
            failure = exc
    raise ProxyFailed(f"could not connect to the egress proxy {proxy.shown}") from failure


async def open_tunnel(loop: asyncio.AbstractEventLoop, proxy: Proxy, host: str, port: int) -> asyncio.Transport:
    """A connection through the proxy to host:port, ready for TLS with the origin."""
    transport, handshake = await connect(loop, proxy, lambda: _Handshake(loop))
    try:
        transport.write(proxy.connect_head(host, port))
        try:
            status, reason = await handshake.answer
        except ProxyFailed as exc:
            raise ProxyFailed(f"the egress proxy {proxy.shown} {exc}") from None
    except BaseException:
        transport.abort()
        raise
    if status != 200:
        transport.abort()
        hint = " (it wants other credentials: check the user and password in the proxy URL)" if status == 407 else ""
        raise ProxyFailed(f"the egress proxy {proxy.shown} refused the tunnel to {host}:{port}: "
                          f"HTTP {status} {reason}{hint}".rstrip())
    return transport
