"""SQLite's operations beyond the conformance suite: the version-2 upgrade, the page plan, stats, retry order, registry."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.monitoring import TaskQuery, page_cursor
from omniq.testing.fixtures import make_task, make_worker, now_ms
from omniq.testing.task_queue.kit import LONG, claim_one, error, token
from omniq_sqlite import SQLiteTaskQueue
from omniq_sqlite.operations import page_sql
from omniq_sqlite.schema import (
    IDX_TASKS_CREATED,
    IDX_TASKS_HELD,
    IDX_TASKS_HELD_DUE,
    IDX_TASKS_HOLDERS,
    IDX_TASKS_STATUS,
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA_VERSION,
    TASKS,
    WORKERS,
)
from tests.backends.sqlite.versions import make_version_1


def _sql(db_path, statement, params=()):
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        return conn.execute(statement, params).fetchall()


@pytest.mark.anyio
async def test_a_version_1_database_is_upgraded_in_place(db_path):
    make_version_1(db_path)
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        old = await q.get("old")
        assert old is not None and old.headers is None  # the added column is NULL for existing rows
        new = make_task(headers={"traceparent": "00-abc-def-01", "tenant": "ä"})
        await q.enqueue(new)
        assert [t.id for t in await q.list_page(TaskQuery())] == [new.id, "old"]
        claimed = await claim_one(q)
        assert claimed.id == "old" and claimed.headers is None
        assert (await claim_one(q)).headers == new.headers
        worker = make_worker()
        await q.register_worker(worker, LONG)
        assert await q.list_workers() == [worker]
    versions = [row[0] for row in _sql(db_path, f"SELECT version FROM {SCHEMA_VERSION} ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    indexes = {row[0] for row in _sql(db_path, f"SELECT name FROM sqlite_master WHERE tbl_name = '{TASKS}'")}
    assert IDX_TASKS_CREATED in indexes and IDX_TASKS_STATUS not in indexes  # replaced: no dearer enqueue


def test_the_hot_table_keeps_four_indexes(db_path):
    """Each index costs every enqueue a B-tree page per commit: the task table holds no more than before.

    The flow-control indexes (version 3's two, version 5's held-by-eta) are partial on limited rows
    only, so an unlimited task never writes to them (see tests/backends/sqlite/test_sqlite_flow.py).
    """
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for statement in (s for _, statements in MIGRATIONS for s in statements):
            conn.execute(statement)
        indexes = conn.execute(f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{TASKS}'")
        names = {row[0] for row in indexes} - {IDX_TASKS_HOLDERS, IDX_TASKS_HELD, IDX_TASKS_HELD_DUE}
        assert len(names) == 5  # the four of version 1 (one replaced) and the id's own (UNIQUE)


@pytest.mark.anyio
async def test_headers_in_a_batch_with_and_without(db_path):
    tasks = [make_task(headers={"n": str(i)} if i % 2 else None) for i in range(40)]  # > the inline batch size
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        await q.enqueue_many(tasks)
        got = await q.get_many([t.id for t in tasks])
        assert [t.headers if t else "missing" for t in got] == [t.headers for t in tasks]


@pytest.mark.parametrize(
    "query",
    [
        TaskQuery(),
        TaskQuery(after=page_cursor(now_ms(), "x"), status=TaskStatus.FAILED, queue="q", func="f"),
        TaskQuery(since=now_ms(-60), until=now_ms(), after=page_cursor(now_ms(), "x")),
    ],
)
def test_a_page_walks_the_created_index_without_sorting(db_path, query):
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for statement in (s for _, statements in MIGRATIONS for s in statements):
            conn.execute(statement)
        sql, params = page_sql(query)
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert IDX_TASKS_CREATED in plan
    assert "TEMP B-TREE" not in plan  # the index gives the order: the walk stops after `limit` matches


@pytest.mark.anyio
async def test_a_retried_task_is_claimed_after_tasks_already_ready(db_path):
    """Ready now, as a fresh task: it does not jump ahead of tasks that waited longer."""
    first, second = make_task(max_retries=0), make_task()
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        await q.enqueue(first)
        claimed = await claim_one(q)
        outcome = Outcome(task_id=first.id, lease_token=token(claimed), kind=OutcomeKind.FAILED, error=error())
        assert await q.finish([outcome]) == [True]
        await q.enqueue(second)
        retried = await q.retry(first.id)
        assert retried is not None and retried.status is TaskStatus.PENDING and retried.attempts == 0
        assert [(await claim_one(q)).id, (await claim_one(q)).id] == [second.id, first.id]


@pytest.mark.anyio
async def test_stats_read_times_from_the_table(db_path):
    """Ready age by eta or created_at; completions outside the hour and odd statuses count nowhere."""
    ready, delayed, odd, done_long_ago, done_now = (make_task() for _ in range(5))
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        await q.enqueue_many([ready, delayed, odd, done_long_ago, done_now])
        now = time.time()
        _sql(db_path, f"UPDATE {TASKS} SET created_at = ? WHERE id = ?", (now - 100, ready.id))
        _sql(db_path, f"UPDATE {TASKS} SET eta = ?, created_at = ? WHERE id = ?", (now - 50, now - 500, delayed.id))
        _sql(db_path, f"UPDATE {TASKS} SET status = 'odd', created_at = ? WHERE id = ?", (now - 900, odd.id))
        for task_id, finished in ((done_long_ago.id, now - 3700), (done_now.id, now - 1)):
            _sql(db_path, f"UPDATE {TASKS} SET status = 'succeeded', finished_at = ? WHERE id = ?", (finished, task_id))
        (stats,) = await q.queue_stats()
    assert stats.counts[TaskStatus.PENDING.value] == 2 and stats.counts[TaskStatus.SUCCEEDED.value] == 2
    assert sum(stats.counts.values()) == 4  # the row with an unknown status is counted nowhere
    # the delayed task has waited since its eta (50 s), not since its creation (500 s)
    assert stats.oldest_ready_age is not None and 100 <= stats.oldest_ready_age < 100 + LONG
    assert sum(stats.completed_per_minute) == 1 and sum(stats.completed_per_minute[-2:]) == 1


@pytest.mark.anyio
async def test_expired_workers_are_deleted_at_the_next_registration(db_path):
    stale, fresh = make_worker(-2), make_worker(-1)
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        await q.register_worker(stale, 0.05)
        await q.register_worker(fresh, LONG)
        assert len(_sql(db_path, f"SELECT id FROM {WORKERS}")) == 2
        _sql(db_path, f"UPDATE {WORKERS} SET expires_at = ? WHERE id = ?", (time.time() - 1, stale.id))
        assert await q.list_workers() == [fresh]  # hidden at once
        await q.register_worker(fresh, LONG)
        assert _sql(db_path, f"SELECT id FROM {WORKERS}") == [(fresh.id,)]  # and deleted at the next registration
