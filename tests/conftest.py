"""Shared test configuration.

Most fixtures live in the ``omniq.testing.plugin`` pytest plugin (loaded by
``-p omniq.testing.plugin`` in the root pyproject): ``anyio_backend`` and the
``redis_url`` / ``postgres_url`` / ``nats_url`` server fixtures. Here:
``sqlite_or_redis``, app settings on each of the two engines a sync
request path is measured on (a store of the test's own).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq import Settings


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.servers)])
def sqlite_or_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a store of this test's own: a SQLite directory, or a unique key prefix on Redis (deleted after)."""
    if request.param == "sqlite":
        yield Settings(backend="sqlite", base_dir=tmp_path / "data", poll_interval=0.2)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = f"omniq-test-{uuid.uuid4().hex[:12]}"
    yield Settings(backend="redis", url=url, key_prefix=prefix, poll_interval=0.2)
    drop_redis_keys(url, prefix)


def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete every key of the Redis at ``url`` whose name holds ``prefix`` (a test's namespace)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        doomed = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if doomed:
            client.unlink(*doomed)
    finally:
        client.close()
