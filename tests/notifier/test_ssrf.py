"""The SSRF guard: address forms that must be refused, and the address connected to."""

import asyncio
import ipaddress

import pytest

from hookrun.notifier.adapters import HttpSender
from hookrun.notifier.ssrf import (
    TargetRefused,
    TargetUnresolved,
    is_public,
    system_resolver,
    vet,
)

NAMES = {
    "internal.example": ["127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["10.0.0.5", "93.184.216.34"],
    "public.example": ["93.184.216.34"],
    "v6local.example": ["::1"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    if host in NAMES:
        return NAMES[host]
    if host.endswith(".example"):
        raise OSError("no such name")
    return await system_resolver(host, port)  # numeric forms: getaddrinfo, never DNS


REFUSED = [
    "127.0.0.1",
    "127.1",  # short form
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0177.0.0.1",  # octal
    "017700000001",  # octal, one number
    "0",  # 0.0.0.0
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "198.18.0.1",  # benchmarking
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",  # IPv4-mapped, hex
    "[::127.0.0.1]",  # IPv4-compatible
    "[fe80::1]",  # link-local
    "[fc00::1]",  # unique local
    "[ff02::1]",  # multicast
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[2002:a9fe:a9fe::]",  # 6to4 of 169.254.169.254
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
    "[2001:db8::1]",  # documentation
    "internal.example",  # a hostname resolving to 127.0.0.1
    "metadata.example",
    "v6local.example",
]


@pytest.mark.parametrize("host", REFUSED)
async def test_non_public_targets_are_refused(host):
    with pytest.raises(TargetRefused):
        await vet(host, 80, fake_resolver, allow_private=False)


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700::1111]", "public.example"])
async def test_public_targets_pass(host):
    assert await vet(host, 80, fake_resolver, allow_private=False)


async def test_only_the_public_addresses_of_a_mixed_name_are_used():
    assert await vet("mixed.example", 80, fake_resolver, allow_private=False) == ["93.184.216.34"]


async def test_allow_private_targets_lets_loopback_through():
    assert await vet("internal.example", 80, fake_resolver, allow_private=True) == ["127.0.0.1"]


def test_teredo_and_nat64_embedded_addresses_are_checked():
    assert not is_public(ipaddress.ip_address("64:ff9b::a00:1"))  # NAT64 of 10.0.0.1
    assert is_public(ipaddress.ip_address("64:ff9b::5db8:d822"))  # NAT64 of 93.184.216.34


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://127.1:9/x",
        "http://2130706433:9/x",
        "http://0177.0.0.1:9/x",
        "http://0x7f000001:9/x",
        "https://0x7f000001:9/x",
        "http://[::1]:9/x",
        "http://[::ffff:127.0.0.1]:9/x",
        "http://1.2.3.4.5:9/x",  # looks like an address, is none: never looked up as a name
        "http://localhost:9/x",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_the_http_sender_refuses_before_connecting(url):
    sender = HttpSender(timeout_s=2, allow_private=False, concurrency=1)
    try:
        result = await sender.send("s", url, b"{}", {})
    finally:
        await sender.close()
    assert result.refused, result


async def test_a_name_that_does_not_resolve_is_a_failed_attempt_that_is_retried():
    with pytest.raises(TargetUnresolved):
        await vet("missing.example", 80, fake_resolver, allow_private=False)
    sender = HttpSender(timeout_s=2, allow_private=False, concurrency=1, resolver=fake_resolver)
    try:
        result = await sender.send("s", "http://missing.example/hook", b"{}", {})
    finally:
        await sender.close()
    assert not result.refused, result
    assert result.status_code is None and "does not resolve" in (result.error or "")


async def test_the_sender_connects_to_the_vetted_address_not_a_second_lookup():
    answers = iter([["127.0.0.1"]])  # a rebinding name: any later lookup finds nothing
    lookups = 0

    async def rebinding(host, port):
        nonlocal lookups
        lookups += 1
        try:
            return next(answers)
        except StopIteration:
            raise OSError("no such name") from None

    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = HttpSender(timeout_s=2, allow_private=True, concurrency=1, resolver=rebinding)
    try:
        # connected on the address the guard approved: the system cannot resolve this name
        result = await sender.send("s", f"http://rebind.example:{port}/hook", b"{}", {})
    finally:
        await sender.close()
        server.close()
    assert result.status_code == 204, result
    assert lookups == 1


async def test_the_sender_refuses_a_name_that_resolves_to_a_private_address():
    async def private(host, port):
        return ["10.9.9.9"]

    sender = HttpSender(timeout_s=2, allow_private=False, concurrency=1, resolver=private)
    try:
        result = await sender.send("s", "http://rebind.example/hook", b"{}", {})
    finally:
        await sender.close()
    assert result.refused and "10.9.9.9" in (result.error or ""), result
