"""The operations on PostgreSQL: the headers migration, page plans, the registry's table, stats buckets."""

from __future__ import annotations

import pytest

from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.monitoring import THROUGHPUT_MINUTES, TaskQuery, page_cursor
from omniq.testing import connected, make_task, make_worker, now_ms
from omniq_postgres.schema import LATEST_VERSION, Names, migrate

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def test_a_database_at_version_3_gains_headers_and_the_registry(admin, schema, make_queue, old_database):
    names = Names(schema)
    await old_database(3)  # left by the previous release, holding a task
    before = make_task()
    await admin.execute(
        f"""INSERT INTO {names.tasks} (id, func, queue, status, ready_at, created_at)
            VALUES ($1, 'f', 'default', 'pending', now(), $2)""",
        before.id,
        before.created_at,
    )
    assert await migrate(admin, names) == LATEST_VERSION - 3
    async with connected(make_queue) as (queue,):
        old_task = await queue.get(before.id)
        assert old_task is not None and old_task.headers is None
        fresh = make_task(headers={"traceparent": "00-abc-def-01"})
        await queue.enqueue(fresh)
        stored = await queue.get(fresh.id)
        assert stored is not None and stored.headers == {"traceparent": "00-abc-def-01"}
        assert [t.id for t in await queue.list_page(TaskQuery(limit=10))] == [fresh.id, before.id]
        worker = make_worker()
        await queue.register_worker(worker, 30)
        assert await queue.list_workers() == [worker]


async def test_headers_of_a_batch_travel_per_task(make_queue):
    async with connected(make_queue) as (queue,):
        tasks = [make_task(headers={"n": str(n)}) for n in range(3)] + [make_task(), make_task(headers={})]
        await queue.enqueue_many(tasks)
        stored = await queue.get_many([t.id for t in tasks])
        assert [t.headers if t else "missing" for t in stored] == [{"n": "0"}, {"n": "1"}, {"n": "2"}, None, {}]
        claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert {t.id: t.headers for t in claimed} == {t.id: t.headers for t in tasks}


async def test_a_page_filtered_by_status_reads_only_that_status(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        await queue.enqueue_many([make_task(created_at=now_ms(-n)) for n in range(200)])
        claimed = await queue.claim_ready(["default"], 30, lease=30, worker_id="w")
        await queue.finish(
            [Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.FAILED) for t in claimed]
        )
        await admin.execute(f'ANALYZE "{schema}".tasks')
        await admin.execute("SET enable_seqscan = off")
        try:
            failed = TaskQuery(status=TaskStatus.FAILED, limit=20)
            for query in (failed, TaskQuery(status=TaskStatus.PENDING, queue="default", limit=20)):
                sql, args = queue._operations.page_sql(query)
                plan = "\n".join(row[0] for row in await admin.fetch("EXPLAIN " + sql, *args))
                assert "Seq Scan" not in plan, plan
            page = await queue.list_page(failed)
            assert len(page) == 20 and {t.status for t in page} == {TaskStatus.FAILED}
            rest = await queue.list_page(
                TaskQuery(status=TaskStatus.FAILED, after=page_cursor(page[-1].created_at, page[-1].id))
            )
            assert len(rest) == 10 and not {t.id for t in rest} & {t.id for t in page}
        finally:
            await admin.execute("RESET enable_seqscan")


async def test_expired_workers_are_hidden_at_once_and_deleted_by_the_next_registration(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        await queue.register_worker(make_worker(-300, id="old"), 30)
        await queue.register_worker(make_worker(id="young"), 30)
        assert [w.id for w in await queue.list_workers()] == ["old", "young"]  # by started_at
        # The database clock decides: an entry whose expiry passed is not listed, before any cleanup.
        await admin.execute(
            f"UPDATE \"{schema}\".workers SET expires_at = now() - interval '1 second' WHERE id = 'old'"
        )
        assert [w.id for w in await queue.list_workers()] == ["young"]
        assert await admin.fetchval(f'SELECT count(*) FROM "{schema}".workers') == 2
        await queue.register_worker(make_worker(id="young"), 30)  # a heartbeat cleans up
        assert [r["id"] for r in await admin.fetch(f'SELECT id FROM "{schema}".workers')] == ["young"]
        await queue.unregister_worker("young")
        await queue.unregister_worker("never-registered")
        assert await queue.list_workers() == []


async def test_completions_fall_in_their_minute_and_older_ones_drop_out(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        tasks = [make_task() for _ in range(3)]
        await queue.enqueue_many(tasks)
        claimed = await queue.claim_ready(["default"], 3, lease=30, worker_id="w")
        await queue.finish(
            [Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.SUCCEEDED) for t in claimed]
        )
        ago = {tasks[0].id: 30, tasks[1].id: THROUGHPUT_MINUTES + 1, tasks[2].id: 0}
        for task_id, minutes in ago.items():
            await admin.execute(
                f"UPDATE \"{schema}\".tasks SET finished_at = now() - $2 * interval '1 minute' WHERE id = $1",
                task_id,
                float(minutes),
            )
        [stats] = await queue.queue_stats()
        assert stats.counts[TaskStatus.SUCCEEDED.value] == 3
        assert sum(stats.completed_per_minute) == 2  # the one finished an hour and more ago is out
        # a minute may roll over between the UPDATE and the stats: then each lands one minute earlier
        last = THROUGHPUT_MINUTES - 1
        expected = {last: 1, last - 30: 1}
        rolled = {last - 1: 1, last - 31: 1}
        counted = {minute: n for minute, n in enumerate(stats.completed_per_minute) if n}
        assert counted in (expected, rolled), counted


async def test_oldest_ready_age_is_measured_by_the_database_clock(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        task = make_task()
        await queue.enqueue(task)
        await admin.execute(
            f"UPDATE \"{schema}\".tasks SET created_at = now() - interval '90 seconds' WHERE id = $1", task.id
        )
        [stats] = await queue.queue_stats()
        assert stats.oldest_ready_age is not None and 90 <= stats.oldest_ready_age < 90 + 60


async def test_an_unreadable_registry_entry_is_skipped(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        worker = make_worker()
        await queue.register_worker(worker, 30)
        await admin.execute(
            f"""INSERT INTO "{schema}".workers (id, info, started_at, expires_at)
                VALUES ('bad', '{{"id": 1}}', now(), now() + interval '1 minute')"""
        )
        assert await queue.list_workers() == [worker]


async def test_corrupted_headers_fail_a_read_and_a_claim_salvages_the_task(make_queue, admin, schema):
    from omniq.base import CorruptTask
    from omniq.errors import SerializationError

    async with connected(make_queue) as (queue,):
        task = make_task(headers={"a": "b"})
        await queue.enqueue(task)
        await admin.execute(f"""UPDATE "{schema}".tasks SET headers = '{{"a": 1}}'::jsonb WHERE id = $1""", task.id)
        with pytest.raises(SerializationError, match="task headers"):
            await queue.get(task.id)
        [claimed] = await queue.claim_ready(["default"], 1, lease=30, worker_id="w")
        assert isinstance(claimed, CorruptTask) and claimed.id == task.id and claimed.headers is None
