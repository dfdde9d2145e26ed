"""Shared test configuration.

Most fixtures live in the ``omniq.testing.plugin`` pytest plugin (loaded by
``-p omniq.testing.plugin`` in the root pyproject): ``anyio_backend`` and the
``redis_url`` / ``postgres_url`` / ``nats_url`` server fixtures. Here:
helpers the test folders share.
"""

from __future__ import annotations


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
