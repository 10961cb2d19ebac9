"""Where the gateway may connect (docs/providers.md, docs/reliability.md D): an SSRF guard.

Cloud metadata addresses are always refused, hosted providers and `allowPrivateUpstreams`
included. That is every link-local address: metadata and credential services live across
169.254.0.0/16 (169.254.169.254, 169.254.170.2 for ECS task roles, 169.254.170.23 for EKS Pod
Identity, 169.254.169.253 for the VPC resolver, …) and their IPv6 twins in fe80::/10 and
fd00:ec2::/32; no model server is reached at a link-local address. An IPv4 address carried
inside IPv6 (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d) is judged as the IPv4
address it reaches. Loopback, private and other non-public ranges are allowed only for hosted
providers (`isHosted`) or when the config allows private upstreams. Base URLs are checked at
registration; every address is checked again at connect time, IP literals included, so DNS
rebinding, or a registration stored before a rule changed, cannot reach a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "100.100.100.200", "fd00:ec2::254", "fd00:ec2::23"))
METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::/32"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: the low 32 bits are the IPv4 address
_NON_PUBLIC_V4 = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15")]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(ValueError):
    """This address or host may not be connected to; the message says why."""


def literal_address(host: str) -> IP | None:
    """The IP a host literal means, legacy IPv4 forms included (2852039166, 0xa9fea9fe, 0251.0376…)."""
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def reached(address: IP) -> IP:
    """The address a connection really reaches: the IPv4 one inside IPv4-mapped and NAT64 forms."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def classify(address: IP) -> str:
    """`metadata` (link-local included), `unspecified`, `private` (loopback, private, …) or `public`."""
    address = reached(address)
    if address in METADATA_ADDRESSES or any(address in n for n in METADATA_NETWORKS):
        return "metadata"
    if address.is_unspecified:
        return "unspecified"
    if (address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
            or address.is_multicast or any(address in n for n in _NON_PUBLIC_V4 if address.version == 4)):
        return "private"
    return "public"


def check_address(address: IP, private_ok: bool) -> None:
    kind = classify(address)
    if kind == "metadata":
        raise Refused(f"{address} is a cloud metadata or link-local address")
    if kind == "unspecified":
        raise Refused(f"{address} is not a connectable address")
    if kind == "private" and not private_ok:
        raise Refused(f"{address} is a loopback or private address: allowed only for isHosted providers "
                      "or with security.allowPrivateUpstreams")


def check_host(host: str, private_ok: bool) -> None:
    """Registration-time check of a URL's host."""
    name = host.lower().rstrip(".")
    if name in METADATA_HOSTS:
        raise Refused(f"{host} is a cloud metadata host")
    address = literal_address(name)
    if address is not None:
        check_address(address, private_ok)  # first, so a metadata address is named as such
        if str(address) != name.strip("[]") and address.version == 4 and ":" not in name:
            raise Refused(f"{host} is not a canonical IPv4 address")
    elif name in ("localhost",) or name.endswith(".localhost"):
        if not private_ok:
            raise Refused(f"{host} is a loopback host: allowed only for isHosted providers")


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then drops every address the guard refuses.
    An IP literal is checked without a lookup: the client resolves every host here, literals too,
    so a connection never skips the check."""

    def __init__(self, private_ok: Callable[[str], bool], inner: AbstractResolver | None = None) -> None:
        self._private_ok = private_ok
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        if host.lower().rstrip(".") in METADATA_HOSTS:
            raise OSError(f"refused to resolve {host}: a cloud metadata host")
        private_ok = self._private_ok(host)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            try:
                check_address(literal, private_ok)
            except Refused as exc:
                raise OSError(f"refused to connect to {host}: {exc}") from None
            return [{"hostname": host, "host": host, "port": port, "proto": 0, "flags": 0,
                     "family": socket.AF_INET6 if literal.version == 6 else socket.AF_INET}]
        results = await self._inner.resolve(host, port, family)
        allowed = []
        for result in results:
            try:
                check_address(ipaddress.ip_address(result["host"]), private_ok)
            except Refused:
                continue
            allowed.append(result)
        if not allowed:
            raise OSError(f"every address of {host} is refused by the gateway's network policy")
        return allowed

    def check_host(self, host: str) -> None:
        """Judge a name the gateway does not resolve itself (a forward proxy will): Refused if not."""
        check_host(host, self._private_ok(host))

    async def close(self) -> None:
        await self._inner.close()
