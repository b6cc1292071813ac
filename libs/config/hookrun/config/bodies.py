"""Reading an HTTP request body within a size limit, for the gateway and the status service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Protocol

__all__ = [
    "BodyTooLarge",
    "ClientDisconnected",
    "declares_over",
    "read_body",
    "receive_body",
]

#: An ASGI ``receive`` callable.
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class BodyTooLarge(Exception):
    """The request body is over the limit (HOOKRUN_MAX_BODY_BYTES)."""


class ClientDisconnected(Exception):
    """The client went away before it sent the whole body."""


class StarletteRequest(Protocol):
    """What :func:`read_body` needs of a Starlette (or FastAPI) ``Request``."""

    @property
    def scope(self) -> MutableMapping[str, Any]: ...

    @property
    def receive(self) -> Receive: ...


def declares_over(content_length: str, limit: int) -> bool:
    """Whether a Content-Length value declares more than ``limit`` bytes (False if no number)."""
    # isascii() keeps out digits like "²" that isdigit() accepts but int() rejects.
    if not (content_length.isascii() and content_length.isdigit()):
        return False
    digits = content_length.lstrip("0")
    # int() refuses thousands of digits (ValueError); far fewer are over any limit already.
    return len(digits) > 18 or int(digits or "0") > limit


async def receive_body(
    headers: Iterable[tuple[bytes, bytes]], receive: Receive, limit: int
) -> bytes:
    """The body of an ASGI request with these raw ``headers``, read from ``receive``.

    Raises :class:`BodyTooLarge` without reading anything when the declared Content-Length is
    over ``limit``, and as soon as the bytes received pass it (a chunked body);
    :class:`ClientDisconnected` when the client goes away first.
    """
    for name, value in headers:
        if name.lower() == b"content-length":
            if declares_over(value.decode("latin-1"), limit):
                raise BodyTooLarge
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def read_body(request: StarletteRequest, limit: int) -> bytes:
    """As :func:`receive_body`, for a Starlette ``Request`` whose body nothing has read yet."""
    return await receive_body(request.scope["headers"], request.receive, limit)
