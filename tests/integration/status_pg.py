"""A throwaway PostgreSQL server for the status tests (``hookrun.dev.postgres``), one per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hookrun.dev.postgres import new_database, pg_bin, server
from hookrun.dev.pytest_kafka import missing_part

__all__ = ["new_database", "postgres_server"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:<port>`` of a server running for the session."""
    bindir = pg_bin()
    if bindir is None:
        missing_part("PostgreSQL binaries not found (apt-get install -y postgresql)")
    with server(bindir) as url:
        yield url
