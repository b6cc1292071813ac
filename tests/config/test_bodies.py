"""The one body reader of the gateway and the status service: its limit, chunks, disconnects."""

import asyncio

import pytest
from starlette.requests import Request

from hookrun.config.bodies import (
    BodyTooLarge,
    ClientDisconnected,
    declares_over,
    read_body,
    receive_body,
)


def receiver(*messages):
    queue = list(messages)

    async def receive():
        return queue.pop(0)

    return receive


async def never_read():
    raise AssertionError("read the body")


class TestReceiveBody:
    def test_one_message_is_the_body(self):
        receive = receiver({"type": "http.request", "body": b"abc"})
        assert asyncio.run(receive_body([], receive, 10)) == b"abc"

    def test_chunks_are_joined(self):
        receive = receiver(
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"cd", "more_body": False},
        )
        assert asyncio.run(receive_body([], receive, 10)) == b"abcd"

    def test_a_body_of_exactly_the_limit_is_read(self):
        receive = receiver({"type": "http.request", "body": b"x" * 10})
        assert asyncio.run(receive_body([(b"content-length", b"10")], receive, 10)) == b"x" * 10

    def test_a_declared_length_over_the_limit_reads_nothing(self):
        with pytest.raises(BodyTooLarge):
            asyncio.run(receive_body([(b"Content-Length", b"11")], never_read, 10))

    def test_a_chunked_body_is_refused_once_the_bytes_pass_the_limit(self):
        receive = receiver(
            {"type": "http.request", "body": b"x" * 6, "more_body": True},
            {"type": "http.request", "body": b"x" * 6, "more_body": True},
        )
        with pytest.raises(BodyTooLarge):
            asyncio.run(receive_body([], receive, 10))

    def test_a_client_that_goes_away_mid_body_is_a_disconnect(self):
        receive = receiver(
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.disconnect"},
        )
        with pytest.raises(ClientDisconnected):
            asyncio.run(receive_body([], receive, 10))


class TestReadBody:
    def request(self, headers, receive) -> Request:
        return Request({"type": "http", "method": "POST", "headers": headers}, receive)

    def test_a_starlette_request_is_read_by_the_same_rule(self):
        receive = receiver(
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"cd"},
        )
        assert asyncio.run(read_body(self.request([], receive), 4)) == b"abcd"
        with pytest.raises(BodyTooLarge):
            asyncio.run(read_body(self.request([(b"content-length", b"5")], never_read), 4))


class TestDeclaresOver:
    @pytest.mark.parametrize(
        ("value", "over"),
        [
            ("10", False),
            ("11", True),
            ("0000000011", True),
            ("00000000000000000000000010", False),
            ("9" * 5000, True),
            ("", False),
            ("-1", False),
            ("1e3", False),
            ("²", False),
        ],
    )
    def test_only_a_number_over_the_limit_is_over(self, value, over):
        assert declares_over(value, 10) is over
