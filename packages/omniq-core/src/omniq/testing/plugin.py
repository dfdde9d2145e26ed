"""pytest plugin shipped with OmniQ: the async backend and server URL fixtures.

Load it with ``-p omniq.testing.plugin`` (OmniQ's own ``addopts`` do). It
provides:

* ``anyio_backend``: ``"asyncio"``, for tests marked ``@pytest.mark.anyio``.
* ``omniq_app``: a connected :class:`~omniq.AsyncOmniQ` on a fresh in-memory store, closed after
  the test; with :func:`omniq.testing.drain`, the way to test code that enqueues.
* ``redis_url``, ``postgres_url``, ``nats_url``: the URL of a server to test
  against, read from ``OMNIQ_TEST_REDIS_URL``, ``OMNIQ_TEST_POSTGRES_URL`` and
  ``OMNIQ_TEST_NATS_URL``. When the server does not answer a TCP connect the
  test is skipped with a reason naming the (redacted) URL, or fails when
  ``OMNIQ_REQUIRE_SERVERS=1`` (CI sets it, so a missing server is never a
  silent green run).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from omniq.app import AsyncOmniQ
from omniq.errors import redact_url
from omniq.testing.apps import memory_app

__all__ = ["REQUIRE_SERVERS_ENV", "anyio_backend", "nats_url", "omniq_app", "postgres_url", "redis_url", "server_url"]

#: set to "1" to turn "server not answering" from a skip into a failure.
REQUIRE_SERVERS_ENV = "OMNIQ_REQUIRE_SERVERS"

_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432, "nats": 4222, "tls": 4222}


def _probe(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts a TCP connection at the URL's host and port."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def server_url(env_var: str, default: str) -> str:
    """Return the server URL from ``env_var`` (or ``default``) if it answers.

    Skips the calling test when the server is down, or fails it when
    ``OMNIQ_REQUIRE_SERVERS=1``.
    """
    url = os.environ.get(env_var) or default
    if _probe(url):
        return url
    reason = f"no server answers at {redact_url(url)} (set {env_var} to point elsewhere)"
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_SERVERS_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio."""
    return "asyncio"


@pytest.fixture
async def omniq_app() -> AsyncIterator[AsyncOmniQ]:
    """A connected app on a fresh in-memory store; register tasks on it, enqueue, then ``await drain(omniq_app)``."""
    async with memory_app() as app:
        yield app


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server under test (``OMNIQ_TEST_REDIS_URL``)."""
    return server_url("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the PostgreSQL server under test (``OMNIQ_TEST_POSTGRES_URL``)."""
    return server_url("OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the NATS JetStream server under test (``OMNIQ_TEST_NATS_URL``)."""
    return server_url("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222")
