"""``omniq.testing.plugin.server_url``: the probe a backend's own URL fixture runs.

A scheme the plugin does not know, written without a port (``mysql://root@127.0.0.1/test``),
used to be probed on port 0: every test skipped while the server was up. Now the port comes
from the URL, else ``default_port=``, else the first-party table; with none of them the test
fails, naming the URL. A real listening socket stands in for the server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from omniq.testing.plugin import REQUIRE_SERVERS_ENV, probe_address, server_url


@pytest.fixture
def listening() -> Iterator[int]:
    """The port of a socket accepting connections on 127.0.0.1 (a server that is up)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_new_scheme_without_a_port_is_probed_on_the_default_port(
    listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_TEST_URL", raising=False)
    url = "mysql://root@127.0.0.1/test"
    assert server_url("ACME_TEST_URL", url, default_port=listening) == url
    monkeypatch.setenv("ACME_TEST_URL", "mysql://root:s3cret@127.0.0.1/other")
    assert server_url("ACME_TEST_URL", url, default_port=listening) == "mysql://root:s3cret@127.0.0.1/other"


def test_a_new_scheme_without_a_port_and_no_default_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_TEST_URL", raising=False)
    monkeypatch.delenv(REQUIRE_SERVERS_ENV, raising=False)  # a failure, not a skip, even then
    with pytest.raises(pytest.fail.Exception) as failed:
        server_url("ACME_TEST_URL", "mysql://root:s3cret@127.0.0.1/test")
    message = str(failed.value)
    assert "mysql://root:***@127.0.0.1/test" in message and "s3cret" not in message
    assert "default_port=" in message and "ACME_TEST_URL" in message


def test_the_port_in_the_url_wins(listening: int, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_TEST_URL", raising=False)
    url = f"mysql://root@127.0.0.1:{listening}/test"
    assert server_url("ACME_TEST_URL", url, default_port=closed_port) == url
    assert probe_address(url, closed_port) == ("127.0.0.1", listening)


def test_first_party_schemes_keep_their_ports() -> None:
    assert probe_address("redis://127.0.0.1/0") == ("127.0.0.1", 6379)
    assert probe_address("postgresql://postgres@db.example/test") == ("db.example", 5432)
    assert probe_address("postgresql+asyncpg://postgres@db.example/test") == ("db.example", 5432)
    assert probe_address("nats://127.0.0.1") == ("127.0.0.1", 4222)
    assert probe_address("nats://127.0.0.1", 4223) == ("127.0.0.1", 4223)  # the caller's default first


def test_a_server_that_is_down_skips_or_fails_under_require_servers(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_TEST_URL", raising=False)
    url = "mysql://root:s3cret@127.0.0.1/test"
    monkeypatch.delenv(REQUIRE_SERVERS_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        server_url("ACME_TEST_URL", url, default_port=closed_port)
    assert f"port {closed_port}" in str(skipped.value) and "s3cret" not in str(skipped.value)
    monkeypatch.setenv(REQUIRE_SERVERS_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_SERVERS_ENV):
        server_url("ACME_TEST_URL", url, default_port=closed_port)
