"""The NATS JetStream backend against the conformance suite.

Each test gets its own prefix (so its own streams and buckets), deleted afterwards.
"""

import uuid

import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_nats import NatsEventStorage, NatsResultStorage, NatsTaskQueue, drop_prefix

pytestmark = pytest.mark.servers


@pytest.fixture
async def prefix(nats_url):
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    await drop_prefix(nats_url, name)


class TestNatsTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, nats_url, prefix):
        return lambda: NatsTaskQueue(nats_url, prefix=prefix)

    @pytest.fixture
    def fused_result_storage_factory(self, nats_url, prefix):
        return lambda: NatsResultStorage(nats_url, prefix=prefix)


class TestNatsResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, nats_url, prefix):
        return lambda: NatsResultStorage(nats_url, prefix=prefix)


class TestNatsEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, nats_url, prefix):
        return lambda: NatsEventStorage(nats_url, prefix=prefix)
