"""Client addresses as the services group them: an IPv6 address by its /64, which one client
usually holds whole, so that a limit per address cannot be dodged by walking a subnet."""

from __future__ import annotations

import ipaddress


def source_address(remote_addr: str | None) -> str:
    """The address part of a source: the IP, an IPv6 one as its /64 network.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, as dual-stack sockets report IPv4 peers)
    is its IPv4 address; ``None`` is ``"unknown address"``; a text that is not an IP address
    is itself, cut to 100 characters.
    """
    if remote_addr is None:
        return "unknown address"
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return remote_addr[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
