"""Migrations, schema names, URLs, settings and plugin registration."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from omniq.config import Settings
from omniq.errors import ConfigurationError
from omniq.plugins import resolve_backend
from omniq_postgres import PostgresEventStorage, PostgresResultStorage, PostgresTaskQueue
from omniq_postgres.schema import LATEST_VERSION, Names, migrate

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def test_concurrent_migrations_from_many_pools_are_safe(make_queue, make_results, make_events, admin, schema):
    components = [make_queue(), make_results(), make_events(), make_queue(), make_results(), make_events()]
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for component in components:
                    tg.start_soon(component.connect)
        versions = await admin.fetch(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
        assert [row["version"] for row in versions] == list(range(1, LATEST_VERSION + 1))
        tables = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name", schema
        )
        assert [row["table_name"] for row in tables] == [
            "dependants",
            "events",
            "flow_keys",
            "paused_queues",
            "results",
            "schema_version",
            "tasks",
            "workers",
        ]
    finally:
        for component in components:
            await component.close()


async def test_concurrent_raw_migrations_apply_each_version_once(postgres_url, schema):
    names = Names(schema)
    conns = [await asyncpg.connect(postgres_url) for _ in range(4)]
    applied: list[int] = []
    try:

        async def run(conn):
            applied.append(await migrate(conn, names))

        async with anyio.create_task_group() as tg:
            for conn in conns:
                tg.start_soon(run, conn)
        assert sorted(applied) == [0, 0, 0, LATEST_VERSION]
        assert await migrate(conns[0], names) == 0
    finally:
        for conn in conns:
            await conn.close()


async def test_connect_and_close_are_idempotent(make_queue):
    queue = make_queue()
    await queue.connect()
    await queue.connect()
    assert await queue.count() == 0
    await queue.close()
    await queue.close()


async def test_methods_connect_lazily(make_queue):
    queue = make_queue()
    try:
        assert await queue.count() == 0
    finally:
        await queue.close()


def test_postgres_scheme_variants_are_accepted():
    assert PostgresTaskQueue("postgres://u@h/db").url == "postgresql://u@h/db"
    assert PostgresTaskQueue("postgresql+asyncpg://u@h/db").url == "postgresql://u@h/db"
    assert PostgresTaskQueue().url == "postgresql://127.0.0.1:5432/postgres"


def test_wrong_scheme_is_a_configuration_error_without_the_password():
    with pytest.raises(ConfigurationError) as info:
        PostgresTaskQueue("redis://user:hunter2@localhost:6379/0")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "1abc", "has-dash", 'quo"te', "x" * 64])
def test_invalid_schema_name_is_a_configuration_error(bad):
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresTaskQueue(schema=bad)


def test_from_settings_reads_prefix_and_event_ttl():
    settings = Settings(backend="postgres", url="postgresql://u@db:5432/app", key_prefix="tenant_a", event_ttl=120)
    queue = PostgresTaskQueue.from_settings(settings.component("task_queue"), settings)
    results = PostgresResultStorage.from_settings(settings.component("result_storage"), settings)
    events = PostgresEventStorage.from_settings(settings.component("event_storage"), settings)
    assert (queue.schema, results.schema, events.schema) == ("tenant_a", "tenant_a", "tenant_a")
    assert events._ttl == 120.0
    assert queue.can_fuse_results(results)
    explicit = Settings(backend="postgres", task_queue_options={"schema": "other", "max_size": 3})
    assert PostgresTaskQueue.from_settings(explicit.component("task_queue"), explicit).schema == "other"


def test_registered_through_the_entry_point():
    assert resolve_backend("task_queue", "postgres") is PostgresTaskQueue
    assert resolve_backend("result_storage", "postgres") is PostgresResultStorage
    assert resolve_backend("event_storage", "postgres") is PostgresEventStorage


def test_long_schema_names_get_valid_channels():
    names = Names("s" * 63)
    assert len(names.tasks_channel) <= 63 and len(names.results_channel) <= 63
    assert names.tasks_channel != names.results_channel


async def test_an_existing_database_upgrades_and_keeps_its_tasks_and_events(
    admin, schema, make_queue, make_events, old_database
):
    from omniq.models import EventType, TaskStatus
    from omniq.testing import make_event, make_task, now_ms

    names = Names(schema)
    await old_database(2)  # a database left at version 2 by an older release
    queue = make_queue()
    low, high, paused = make_task(priority=0), make_task(priority=5), make_task(priority=9)
    await admin.execute(
        f"""INSERT INTO {names.tasks} (id, func, queue, priority, status, ready_at, created_at, paused)
            SELECT id, 'f', 'default', p, 'pending', now(), now(), z
              FROM unnest($1::text[], $2::int[], $3::bool[]) AS u(id, p, z)""",
        [low.id, high.id, paused.id],
        [0, 5, 9],
        [False, False, True],
    )
    await admin.execute(
        f"INSERT INTO {names.events} (task_id, type, ts) VALUES ($1, 'enqueued', now()), ($1, 'started', now())",
        low.id,
    )
    events = make_events()
    try:
        assert await migrate(admin, names) == LATEST_VERSION - 2
        assert await queue.count(status=TaskStatus.PENDING) == 3
        claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert [t.id for t in claimed] == [high.id, low.id]  # the paused one stays
        assert await queue.count(status=TaskStatus.RUNNING) == 2
        await events.append([make_event(low.id, EventType.SUCCEEDED, timestamp=now_ms(1))])
        history = await events.query(task_id=low.id)
        assert [e.type for e in history] == [EventType.ENQUEUED, EventType.STARTED, EventType.SUCCEEDED]
    finally:
        await queue.close()
        await events.close()


async def test_status_filters_can_use_the_partial_indexes(make_queue, admin, schema):
    queue = make_queue()
    await queue.connect()
    sql = queue._sql
    try:
        await admin.execute("SET enable_seqscan = off")
        for statuses in (["pending"], ["running"], ["succeeded", "failed"], ["pending", "running", "cancelled"]):
            text, args = sql.filtered("SELECT count(*) FROM {tasks}", statuses, "default")
            plan = "\n".join(row[0] for row in await admin.fetch("EXPLAIN " + text, *args))
            assert "Seq Scan" not in plan, plan
    finally:
        await admin.execute("RESET enable_seqscan")
        await queue.close()
