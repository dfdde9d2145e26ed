"""The SQLite backend against the conformance suite (one database file per test)."""

from __future__ import annotations

import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_sqlite import SQLiteEventStorage, SQLiteResultStorage, SQLiteTaskQueue


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'omniq.db'}"


class TestSQLiteTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, db_url):
        return lambda: SQLiteTaskQueue(db_url)

    @pytest.fixture
    def fused_result_storage_factory(self, db_url):
        return lambda: SQLiteResultStorage(db_url)


class TestSQLiteResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, db_url):
        return lambda: SQLiteResultStorage(db_url)


class TestSQLiteEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, db_url):
        return lambda: SQLiteEventStorage(db_url)
