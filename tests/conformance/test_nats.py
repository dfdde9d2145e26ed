"""The NATS JetStream backend against the conformance suite.

Each test gets its own prefix (so its own streams and buckets), deleted afterwards.
"""

import uuid

import msgspec
import nats
import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_nats import NatsEventStorage, NatsResultStorage, NatsTaskQueue, drop_prefix, subjects

pytestmark = pytest.mark.servers


@pytest.fixture
async def prefix(nats_url):
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    await drop_prefix(nats_url, name)


#: a value per corruptible field that a task envelope can hold but no task can have
#: (a naive datetime is what msgspec writes as a string without an offset).
_CORRUPT = {"expires_at": "2030-01-01T00:00:00", "result_ttl": float("inf"), "error": "not an error", "depends_on": 7}


class TestNatsTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, nats_url, prefix):
        return lambda: NatsTaskQueue(nats_url, prefix=prefix)

    @pytest.fixture
    async def corrupt_record(self, nats_url, prefix):
        """Rewrites a task's KV record (``[task, ack]``) with one field of the task corrupted."""
        nc = await nats.connect(nats_url)
        bucket = await nc.jetstream().key_value(subjects.tasks_bucket(prefix))

        async def corrupt(task_id, field):
            key = subjects.token(task_id)
            entry = await bucket.get(key)
            assert entry is not None and entry.value is not None
            record = msgspec.msgpack.decode(entry.value)
            record[0][field] = _CORRUPT[field]
            await bucket.put(key, msgspec.msgpack.encode(record))

        yield corrupt
        await nc.close()

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
