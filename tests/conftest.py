"""Shared test configuration.

Most fixtures live in the ``omniq.testing.plugin`` pytest plugin (loaded by
``-p omniq.testing.plugin`` in the root pyproject): ``anyio_backend`` and the
``redis_url`` / ``postgres_url`` / ``nats_url`` server fixtures.
"""
