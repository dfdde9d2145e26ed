"""SQLite's flow control beyond the conformance suite: what an unlimited task pays, parking once, slots freed, upgrades."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

import anyio
import pytest

from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing.fixtures import make_task
from omniq.testing.task_queue.kit import LONG, token
from omniq_sqlite import SQLiteTaskQueue, jobs, schema
from omniq_sqlite.records import task_params
from omniq_sqlite.schema import IDX_TASKS_CLAIM, IDX_TASKS_HELD_DUE, TASKS, migrate
from tests.backends.sqlite.versions import make_version_1

ONE_AT_A_TIME = Limits(key="one", concurrency=1)


class Traced:
    """A migrated sqlite3 connection that records the statements it runs."""

    def __init__(self, path: object) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        migrate(self.conn)
        self.statements: list[str] = []
        self.conn.set_trace_callback(self.statements.append)

    def run(self, job: Callable[..., Any], *args: object) -> tuple[Any, list[str]]:
        """Run a write job in one transaction; its result and the statements it ran (BEGIN/COMMIT left out)."""
        self.statements.clear()
        self.conn.execute("BEGIN IMMEDIATE")
        result = job(self.conn, *args)
        self.conn.execute("COMMIT")
        return result, [s for s in self.statements if s not in ("BEGIN IMMEDIATE", "COMMIT")]


def test_an_unlimited_task_runs_the_statements_it_always_ran(db_path):
    traced = Traced(db_path)
    with closing(traced.conn):
        task = make_task()
        _, ran = traced.run(jobs.enqueue_job, [task_params(task)])
        assert len(ran) == 1  # the INSERT
        rows, ran = traced.run(jobs.claim_job, ("default",), 10, LONG, "w1")
        assert len(ran) == 1 and [row[0] for row in rows] == [task.id]  # the claim UPDATE ... RETURNING
        outcome = Outcome(task_id=task.id, lease_token=rows[0][21], kind=OutcomeKind.SUCCEEDED)
        (flags, woke), ran = traced.run(jobs.finish_job, [(outcome, None, None)])
        assert flags == [True] and not woke
        assert len(ran) == 2  # the lease SELECT and the terminal UPDATE: no wake-up for a task without a slot


def test_a_held_task_is_parked_once_not_by_every_claim(db_path):
    traced = Traced(db_path)
    with closing(traced.conn):
        tasks = [make_task(limits=ONE_AT_A_TIME) for _ in range(30)]
        traced.run(jobs.enqueue_job, [task_params(task) for task in tasks])
        rows, _ = traced.run(jobs.claim_job, ("default",), 50, LONG, "w1")
        assert [row[0] for row in rows] == [tasks[0].id]
        held = traced.conn.execute("SELECT count(*) FROM omniq_tasks WHERE held = 1").fetchone()[0]
        assert held == 29
        rows, ran = traced.run(jobs.claim_job, ("default",), 50, LONG, "w1")
        assert rows == [] and len(ran) == 1, "the held tasks are not ready before their eta: the claim meets none"


def test_held_tasks_leave_the_claim_index_so_a_claim_never_walks_them(db_path):
    traced = Traced(db_path)
    with closing(traced.conn):
        tasks = [make_task(limits=ONE_AT_A_TIME) for _ in range(20)]
        traced.run(jobs.enqueue_job, [task_params(task) for task in tasks])
        traced.run(jobs.claim_job, ("default",), 50, LONG, "w1")
        in_claim_index = traced.conn.execute(
            f"SELECT count(*) FROM {TASKS} INDEXED BY {IDX_TASKS_CLAIM} "
            "WHERE status = 'pending' AND paused = 0 AND waiting = 0 AND held = 0 AND queue = 'default'"
        ).fetchone()[0]
        by_eta = traced.conn.execute(
            f"SELECT count(*) FROM {TASKS} INDEXED BY {IDX_TASKS_HELD_DUE} WHERE held = 1 AND status = 'pending'"
        ).fetchone()[0]
        assert (in_claim_index, by_eta) == (0, 19)
        plan = traced.conn.execute(
            "EXPLAIN QUERY PLAN " + schema.claim_sql(1), schema.claim_params(("default",), 0.0, LONG, "w1", 50)
        ).fetchall()
        assert any(IDX_TASKS_HELD_DUE in row[-1] for row in plan), plan


@pytest.mark.anyio
async def test_a_held_task_is_claimable_at_its_eta_without_a_recovery(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        first, second = make_task(limits=ONE_AT_A_TIME), make_task(limits=ONE_AT_A_TIME)
        await q.enqueue_many([first, second])
        [holder] = await q.claim_ready(["default"], 5, lease=0.3, worker_id="w1")
        [held] = await q.get_many([second.id])
        assert holder.id == first.id and held is not None and held.held and held.eta is not None
        with anyio.fail_after(10):  # wait_for_work wakes at the held task's eta (the holder's lease end)
            await q.wait_for_work(["default"], 30)
        assert [t.id for t in await q.claim_ready(["default"], 5, lease=LONG, worker_id="w2")] == [second.id]


@pytest.mark.anyio
async def test_recovering_an_expired_holder_wakes_one_held_task(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        first, second, third = (make_task(limits=ONE_AT_A_TIME) for _ in range(3))
        await q.enqueue_many([first, second, third])
        [holder] = await q.claim_ready(["default"], 5, lease=0.3, worker_id="w1")
        assert holder.id == first.id
        waiting = await q.get_many([second.id, third.id])
        assert [t.held for t in waiting if t is not None] == [True, True]
        await anyio.sleep(0.4)
        assert [t.id for t in await q.recover()] == [first.id]
        woken, still = await q.get_many([second.id, third.id])
        assert woken is not None and not woken.held and woken.eta is None  # the first in claim order
        assert still is not None and still.held


@pytest.mark.anyio
async def test_purging_a_holder_frees_its_slot(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        first, second = make_task(limits=ONE_AT_A_TIME), make_task(limits=ONE_AT_A_TIME)
        await q.enqueue_many([first, second])
        assert [t.id for t in await q.claim_ready(["default"], 5, lease=LONG, worker_id="w1")] == [first.id]
        assert await q.purge(statuses=[TaskStatus.RUNNING]) == 1
        assert [t.id for t in await q.claim_ready(["default"], 5, lease=LONG, worker_id="w1")] == [second.id]


@pytest.mark.anyio
async def test_a_release_gives_the_slot_back_to_a_held_task(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        first, second = make_task(limits=ONE_AT_A_TIME), make_task(limits=ONE_AT_A_TIME)
        await q.enqueue_many([first, second])
        [holder] = await q.claim_ready(["default"], 5, lease=LONG, worker_id="w1")
        assert await q.claim_ready(["default"], 5, lease=LONG, worker_id="w1") == []
        release = Outcome(task_id=holder.id, lease_token=token(holder), kind=OutcomeKind.RELEASE)
        assert await q.finish([release]) == [True]
        again = await q.claim_ready(["default"], 5, lease=LONG, worker_id="w1")
        assert len(again) == 1, "one slot: the released task and the woken one share it"


@pytest.mark.anyio
async def test_a_version_1_database_takes_limits_after_the_upgrade(db_path):
    make_version_1(db_path)
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        old = await q.get("old")
        assert old is not None and old.limits is None and not old.held and not old.rate_reserved
        limited = make_task(limits=Limits(key="k", concurrency=1, rate=5.0, burst=2))
        await q.enqueue(limited)
        claimed = await q.claim_ready(["default"], 5, lease=LONG, worker_id="w1")
        assert sorted(t.id for t in claimed) == sorted(["old", limited.id])
        assert [t.limits for t in claimed if t.id == limited.id] == [limited.limits]
        await q.set_queue_paused("default", True)
        assert await q.paused_queues() == ["default"]
