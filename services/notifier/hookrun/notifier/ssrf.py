"""SSRF guard: resolve a target once and refuse non-public addresses.

The notifier's HTTP client (aiohttp) connects only to the addresses :func:`vet` returns: names
are resolved through :class:`VettedResolver`, and :class:`hookrun.notifier.adapters.HttpSender`
vets the hosts aiohttp takes for addresses (and never resolves) before it sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses it resolves to (strings); a fake one in unit tests.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # CGNAT shared address space
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "255.255.255.255/32",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "2001:db8::/32",  # documentation
        "100::/64",  # discard-only
    )
)


class TargetRefused(Exception):
    """The target resolves only to addresses the policy refuses: final, never retried."""


class TargetUnresolved(OSError):
    """The target's name does not resolve now: a failed attempt, retried like a refused
    connection (DNS fails for a while as often as a server does)."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client; the server part is a public relay by design
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """True when ``ip`` is a globally routable unicast address (and so is any v4 it embeds)."""
    inner = embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and (
        ip.ipv4_mapped is not None or any(ip in net for net in _NAT64)
    ):
        # Traffic to these goes to the embedded IPv4 address, which was just checked.
        return inner is not None
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        or any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version)
        or not ip.is_global
    )


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with getaddrinfo (which also accepts 2130706433, 0177.0.0.1, 127.1 ...)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def vet(host: str, port: int, resolver: Resolver, *, allow_private: bool) -> list[str]:
    """Return the addresses of ``host`` that may be connected to, in resolver order.

    Raises :class:`TargetRefused` when there is none, :class:`TargetUnresolved` when the name
    does not resolve. When a name resolves to public and non-public addresses, only the public
    ones are returned.
    """
    literal = host.strip("[]")
    try:
        addresses = [str(ipaddress.ip_address(literal.split("%")[0]))]
    except ValueError:
        try:
            addresses = await resolver(literal, port)
        except OSError as exc:
            raise TargetUnresolved(f"{host} does not resolve: {exc}") from exc
    allowed: list[str] = []
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%")[0])  # drop an IPv6 zone id
        if allow_private or is_public(ip):
            allowed.append(text)
    if not allowed:
        shown = ", ".join(addresses) or "nothing"
        raise TargetRefused(f"{host} resolves to non-public address(es) ({shown}): refused")
    return allowed


class VettedResolver(AbstractResolver):
    """aiohttp's resolver for the notifier: a name resolves to the addresses :func:`vet` allowed.

    aiohttp connects to the numeric address of a result as it is, and takes TLS SNI, the
    certificate check and ``Host`` from the URL, so a name is looked up once per connection
    made and never a second time: DNS rebinding has no window. :class:`TargetRefused` passes
    through aiohttp as it is; :class:`TargetUnresolved` comes back as the ``os_error`` of
    aiohttp's ``ClientConnectorError``.
    """

    def __init__(self, resolver: Resolver, *, allow_private: bool) -> None:
        self._resolver = resolver
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await vet(host, port, self._resolver, allow_private=self._allow_private)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass
