"""The published fault suite (:mod:`omniq.testing.faults`) on every multi-process first-party engine.

Each engine joins as a third-party backend does: a ``FaultSuite`` subclass and its ``fault_env``
fixture, the ``OMNIQ_*`` variables of a store private to the test (server data dropped after).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq.testing.faults import FaultSuite

from .conftest import server_env

pytestmark = pytest.mark.slow


class TestSQLiteFaults(FaultSuite):
    @pytest.fixture
    def fault_env(self, tmp_path: Path) -> dict[str, str]:
        return {"OMNIQ_BACKEND": "sqlite", "OMNIQ_BASE_DIR": str(tmp_path / "data")}


class TestFileFaults(FaultSuite):
    @pytest.fixture
    def fault_env(self, tmp_path: Path) -> dict[str, str]:
        return {"OMNIQ_BACKEND": "file", "OMNIQ_BASE_DIR": str(tmp_path / "data")}


@pytest.mark.servers
class TestRedisFaults(FaultSuite):
    @pytest.fixture
    def fault_env(self, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
        with server_env("redis", redis_url, tmp_path) as env:
            yield env


@pytest.mark.servers
class TestPostgresFaults(FaultSuite):
    @pytest.fixture
    def fault_env(self, postgres_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
        with server_env("postgres", postgres_url, tmp_path) as env:
            yield env


@pytest.mark.servers
class TestNatsFaults(FaultSuite):
    # nats-py fails a publish at once (OutboundBufferLimitError, as BackendUnavailableError) while it
    # reconnects, rather than buffering it: an enqueue that raised must never be delivered later
    reconnect_grace = 10.0

    @pytest.fixture
    def fault_env(self, nats_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
        with server_env("nats", nats_url, tmp_path) as env:
            yield env
