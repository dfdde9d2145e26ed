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

A backend of another engine writes its own URL fixture with :func:`server_url`,
giving its engine's usual port (``default_port=``) for URLs written without one.
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

__all__ = [
    "FIRST_PARTY_PORTS",
    "REQUIRE_SERVERS_ENV",
    "anyio_backend",
    "nats_url",
    "omniq_app",
    "postgres_url",
    "probe_address",
    "redis_url",
    "server_url",
]

#: set to "1" to turn "server not answering" from a skip into a failure.
REQUIRE_SERVERS_ENV = "OMNIQ_REQUIRE_SERVERS"

#: the port probed for a first-party scheme whose URL names none (``redis://127.0.0.1/0``).
FIRST_PARTY_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432, "nats": 4222, "tls": 4222}


def probe_address(url: str, default_port: int | None = None) -> tuple[str, int]:
    """The ``(host, port)`` a TCP probe of ``url`` connects to.

    The port is the URL's own, else ``default_port``, else the first-party
    scheme's (:data:`FIRST_PARTY_PORTS`). A URL whose port none of them gives
    (a new scheme written without one, ``mysql://root@127.0.0.1/test``) is an
    error, never a probe of port 0 that skips every test while the server is up.

    Raises:
        ValueError: no port for ``url``: give one in the URL or pass ``default_port``.
    """
    parts = urlsplit(url)
    port = parts.port or default_port or FIRST_PARTY_PORTS.get(parts.scheme.lower().split("+", 1)[0])
    if not port:
        raise ValueError(
            f"cannot tell which port to probe for {redact_url(url)}: write the port in the URL, "
            "or pass default_port= (the engine's usual port) to server_url"
        )
    return parts.hostname or "127.0.0.1", port


def _probe(address: tuple[str, int], timeout: float = 1.0) -> bool:
    """Whether something accepts a TCP connection at ``address``."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def server_url(env_var: str, default: str, *, default_port: int | None = None) -> str:
    """Return the server URL from ``env_var`` (or ``default``) if a TCP connect to it succeeds.

    Skips the calling test when the server is down, or fails it when
    ``OMNIQ_REQUIRE_SERVERS=1``. The port probed is the URL's, else
    ``default_port``, else a first-party scheme's; a URL with none of them
    fails the test (whatever ``OMNIQ_REQUIRE_SERVERS`` says), naming the URL::

        @pytest.fixture(scope="session")
        def acme_url():
            return server_url("ACME_TEST_URL", "acme://127.0.0.1/test", default_port=7777)
    """
    url = os.environ.get(env_var) or default
    try:
        address = probe_address(url, default_port)
    except ValueError as exc:
        pytest.fail(f"{exc} (the URL comes from {env_var} or its default)", pytrace=False)
    if _probe(address):
        return url
    reason = f"no server answers at {redact_url(url)} (port {address[1]}; set {env_var} to point elsewhere)"
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
