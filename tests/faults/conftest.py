"""Fault tests: real worker processes (`omniq worker ... `) on every multi-process backend.

The published fault suite (:mod:`omniq.testing.faults`) runs on each first-party engine through
test_fault_suite.py, exactly as a backend distribution runs it: a ``FaultSuite`` subclass per
engine with its ``fault_env`` fixture. The other tests here (engine-specific corruption, flow
control, workflows, typed arguments, the operator's commands, restarts...) run on the engines of
``backend_env``, with the published :class:`~omniq.testing.faults.Cluster` on this directory's
``faultapp`` (the published app plus their tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from omniq.config import COMPONENTS
from omniq.testing import faults
from omniq.testing.faults import FAULT_TIMINGS, wait_for as wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["FAULT_TIMINGS", "HERE", "Cluster", "drop_server_data", "server_env", "wait_until"]

HERE = Path(__file__).parent


SERVER_BACKENDS = ("redis", "postgres", "nats")


@pytest.fixture(
    params=[
        "sqlite",
        "file",
        pytest.param("redis", marks=pytest.mark.servers),
        pytest.param("postgres", marks=pytest.mark.servers),
        pytest.param("nats", marks=pytest.mark.servers),
    ]
)
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """OMNIQ_* variables for one backend, isolated to this test (server data is dropped afterwards)."""
    if request.param in ("sqlite", "file"):
        yield {"OMNIQ_BACKEND": request.param, "OMNIQ_BASE_DIR": str(tmp_path / "data")}
        return
    if request.param not in SERVER_BACKENDS:  # pragma: no cover
        raise AssertionError(request.param)
    url: str = request.getfixturevalue(f"{request.param}_url")
    with server_env(request.param, url, tmp_path) as env:
        yield env


@contextlib.contextmanager
def server_env(backend: str, url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """OMNIQ_* variables for a server backend under a fresh prefix; the prefix's data is dropped on exit."""
    # one name serves as Redis key prefix, PostgreSQL schema and NATS stream/bucket prefix
    prefix = f"omniq_fault_{uuid.uuid4().hex[:12]}"
    env = {
        "OMNIQ_BACKEND": backend,
        "OMNIQ_URL": url,
        "OMNIQ_KEY_PREFIX": prefix,
        "OMNIQ_BASE_DIR": str(tmp_path / "data"),
    }
    if backend == "postgres":
        # explicit, although the schema defaults to the key prefix
        options = json.dumps({"schema": prefix})
        env |= {f"OMNIQ_{component.upper()}_OPTIONS": options for component in COMPONENTS}
    try:
        yield env
    finally:
        asyncio.run(drop_server_data(backend, url, prefix))


async def drop_server_data(backend: str, url: str, prefix: str) -> None:
    """Delete everything a test stored on a server under ``prefix``."""
    if backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        try:
            # every key of the prefix contains it: "{P:q}:...", "{P}:...", "P:r:..." and "P:events"
            doomed = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
            if doomed:
                await client.unlink(*doomed)
        finally:
            await client.aclose()
    elif backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
        finally:
            await conn.close()
    else:
        from omniq_nats import drop_prefix

        await drop_prefix(url, prefix)


class Cluster(faults.Cluster):
    """The published cluster, its workers running this directory's ``faultapp`` (cwd and PYTHONPATH here)."""

    def __init__(self, env: Mapping[str, str], tmp_path: Path) -> None:
        super().__init__(env, tmp_path, app="faultapp:app", pythonpath=[str(HERE)], cwd=HERE)


@pytest.fixture
def cluster(backend_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    """A Cluster for this test; every worker it started is killed afterwards."""
    c = Cluster(backend_env, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
