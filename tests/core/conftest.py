"""Factories for core tests: apps on a fresh in-process memory store each."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from omniq import AsyncOmniQ, Settings

#: fast timings for tests: short leases and sweeps, near-instant retries.
FAST: dict[str, Any] = {
    "lease_duration": 2.0,
    "heartbeat_interval": 0.5,
    "sweep_interval": 0.2,
    "poll_interval": 0.2,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.05,
    "shutdown_grace": 5.0,
}


@pytest.fixture
def make_settings() -> Any:
    """Return a factory of memory-backed settings isolated to this test."""
    name = f"memory://{uuid.uuid4().hex}"

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"backend": "memory", "url": name, **FAST}
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def make_app(make_settings: Any) -> Any:
    """Return a factory of AsyncOmniQ apps sharing this test's memory store."""

    def factory(**overrides: Any) -> AsyncOmniQ:
        return AsyncOmniQ(make_settings(**overrides))

    return factory
