"""Fixtures for the NATS engine-specific tests: a unique prefix per test, dropped afterwards."""

import uuid

import nats
import pytest

from omniq_nats import NatsTaskQueue, drop_prefix


@pytest.fixture
async def prefix(nats_url):
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    await drop_prefix(nats_url, name)


@pytest.fixture
def make_queue(nats_url, prefix):
    """Factory of unconnected queues on the test's prefix; options go to NatsTaskQueue."""
    return lambda **options: NatsTaskQueue(nats_url, prefix=prefix, **options)


@pytest.fixture
async def raw(nats_url):
    """A plain nats-py connection, to look at streams from the outside."""
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()
