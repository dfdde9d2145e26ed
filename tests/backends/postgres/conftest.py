"""Fixtures for the PostgreSQL engine tests: a fresh schema per test, dropped afterwards."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from omniq_postgres import PostgresEventStorage, PostgresResultStorage, PostgresTaskQueue


@pytest.fixture
async def schema(postgres_url):
    name = f"omniq_test_{uuid.uuid4().hex[:16]}"
    yield name
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def admin(postgres_url):
    """A plain asyncpg connection for looking behind the backend's back."""
    conn = await asyncpg.connect(postgres_url)
    yield conn
    await conn.close()


@pytest.fixture
def old_database(postgres_url, schema):
    """``await old_database(version)`` leaves the schema as a release at that migration version did."""
    from omniq_postgres.schema import MIGRATIONS, Names

    async def build(version: int) -> None:
        names = Names(schema)
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f"CREATE TABLE {names.version} (version integer PRIMARY KEY, applied_at timestamptz)")
            for number, migration in MIGRATIONS[:version]:
                for statement in migration(names):
                    await conn.execute(statement)
                await conn.execute(f"INSERT INTO {names.version} VALUES ($1, now())", number)
        finally:
            await conn.close()

    return build


@pytest.fixture
def make_queue(postgres_url, schema):
    def factory(**options):
        options.setdefault("schema", schema)
        return PostgresTaskQueue(postgres_url, **options)

    return factory


@pytest.fixture
def make_results(postgres_url, schema):
    def factory(**options):
        options.setdefault("schema", schema)
        return PostgresResultStorage(postgres_url, **options)

    return factory


@pytest.fixture
def make_events(postgres_url, schema):
    def factory(**options):
        options.setdefault("schema", schema)
        return PostgresEventStorage(postgres_url, **options)

    return factory
