"""The SQLite backend against the conformance suite (one database file per test)."""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager, closing

import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_sqlite import SQLiteEventStorage, SQLiteResultStorage, SQLiteTaskQueue


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'omniq.db'}"


#: a value per corruptible field that its column can hold but no task can have.
_CORRUPT = {"expires_at": "not a time", "result_ttl": float("inf"), "error": b"\xc1", "depends_on": b"\xc1"}


class TestSQLiteTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, db_url):
        return lambda: SQLiteTaskQueue(db_url)

    @pytest.fixture
    def corrupt_record(self, db_url):
        async def corrupt(task_id, field):
            # closed explicitly: `with connect()` only commits, and 3.13 warns about a connection left to the GC
            with closing(sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)) as conn:
                conn.execute(f"UPDATE omniq_tasks SET {field} = ? WHERE id = ?", (_CORRUPT[field], task_id))

        return corrupt

    @pytest.fixture
    def fused_result_storage_factory(self, db_url):
        return lambda: SQLiteResultStorage(db_url)

    @pytest.fixture
    def caller_transaction(self, db_url):
        @asynccontextmanager
        async def transaction(commit):
            # the driver's default mode: the first INSERT opens a transaction that commit() or rollback() ends
            with closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as conn:
                yield conn
                conn.commit() if commit else conn.rollback()

        return transaction


class TestSQLiteResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, db_url):
        return lambda: SQLiteResultStorage(db_url)


class TestSQLiteEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, db_url):
        return lambda: SQLiteEventStorage(db_url)
