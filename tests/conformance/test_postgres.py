"""The PostgreSQL backend against the conformance suite (one fresh schema per test)."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import asyncpg
import pytest

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_postgres import PostgresEventStorage, PostgresResultStorage, PostgresTaskQueue

pytestmark = pytest.mark.servers


@pytest.fixture
async def schema(postgres_url):
    name = f"omniq_test_{uuid.uuid4().hex[:16]}"
    yield name
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


#: a value per corruptible field that its column can hold but no task can have.
_CORRUPT = {
    "result_ttl": "'Infinity'::float8",
    "error": """'"not an error"'::jsonb""",
    "depends_on": """'{"a": 1}'::jsonb""",
}


class TestPostgresTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, postgres_url, schema):
        return lambda: PostgresTaskQueue(postgres_url, schema=schema, min_size=1, max_size=4)

    @pytest.fixture
    def corrupt_record(self, postgres_url, schema):
        async def corrupt(task_id, field):
            if field not in _CORRUPT:
                pytest.skip(f"a PostgreSQL column cannot hold a corrupted {field} (timestamptz is never naive)")
            conn = await asyncpg.connect(postgres_url)
            try:
                await conn.execute(f'UPDATE "{schema}".tasks SET {field} = {_CORRUPT[field]} WHERE id = $1', task_id)
            finally:
                await conn.close()

        return corrupt

    @pytest.fixture
    def fused_result_storage_factory(self, postgres_url, schema):
        return lambda: PostgresResultStorage(postgres_url, schema=schema, min_size=1, max_size=2)

    @pytest.fixture
    def fused_event_storage_factory(self, postgres_url, schema):
        return lambda: PostgresEventStorage(postgres_url, schema=schema, min_size=1, max_size=2)

    @pytest.fixture
    def caller_transaction(self, postgres_url):
        @asynccontextmanager
        async def transaction(commit):
            conn = await asyncpg.connect(postgres_url)
            try:
                tx = conn.transaction()
                await tx.start()
                yield conn
                await (tx.commit() if commit else tx.rollback())
            finally:
                await conn.close()

        return transaction


class TestPostgresResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, postgres_url, schema):
        return lambda: PostgresResultStorage(postgres_url, schema=schema, min_size=1, max_size=2)


class TestPostgresEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, postgres_url, schema):
        return lambda: PostgresEventStorage(postgres_url, schema=schema, min_size=1, max_size=2)
