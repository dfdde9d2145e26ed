"""The memory backend against the conformance suite."""

import pytest

from omniq.backends.memory import MemoryEventStorage, MemoryResultStorage, MemoryStore, MemoryTaskQueue
from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite


@pytest.fixture
def store():
    return MemoryStore()


class TestMemoryTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, store):
        return lambda: MemoryTaskQueue(store=store)

    @pytest.fixture
    def fused_result_storage_factory(self, store):
        return lambda: MemoryResultStorage(store=store)


class TestMemoryResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, store):
        return lambda: MemoryResultStorage(store=store)


class TestMemoryEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, store):
        return lambda: MemoryEventStorage(store=store)
