"""SQLite's dependencies beyond the conformance suite: what a task without any pays, the claim index, edges, upgrades."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing.fixtures import make_task
from omniq.testing.task_queue.kit import LONG, token
from omniq_sqlite import SQLiteTaskQueue, jobs
from omniq_sqlite.records import task_params
from omniq_sqlite.schema import DEPENDENCIES, IDX_TASKS_CLAIM, TASKS
from tests.backends.sqlite.test_sqlite_flow import Traced
from tests.backends.sqlite.versions import make_version_3


def succeeded(row: tuple[object, ...]) -> Outcome:
    """The SUCCEEDED outcome of a row a claim job returned."""
    return Outcome(task_id=str(row[0]), lease_token=str(row[21]), kind=OutcomeKind.SUCCEEDED)


def done(task: Task) -> Outcome:
    """The SUCCEEDED outcome of a claimed task."""
    return Outcome(task_id=task.id, lease_token=token(task), kind=OutcomeKind.SUCCEEDED)


def edges(db_path: object) -> list[tuple[str, str]]:
    """The stored (dependency, dependant) edges."""
    with closing(sqlite3.connect(str(db_path))) as conn:
        return conn.execute(f"SELECT dependency_id, dependant_id FROM {DEPENDENCIES} ORDER BY 1, 2").fetchall()


async def claim_ids(q: SQLiteTaskQueue, limit: int = 50) -> list[str]:
    return [t.id for t in await q.claim_ready(["default"], limit, lease=LONG, worker_id="w1")]


def test_a_task_that_nobody_waits_on_finishes_with_the_statements_it_always_ran(db_path):
    traced = Traced(db_path)
    with closing(traced.conn):
        dep = make_task()
        child = make_task(depends_on=(dep.id,))  # a dependant itself, but nobody waits on it
        traced.run(jobs.enqueue_job, [task_params(dep), task_params(child)])
        for expected in (dep.id, child.id):
            [row], _ = traced.run(jobs.claim_job, ("default",), 10, LONG, "w1")
            assert row[0] == expected
            (flags, _), ran = traced.run(jobs.finish_job, [(succeeded(row), None, None)])
            assert flags == [True]
        assert len(ran) == 2  # the lease SELECT (it reads the dependants flag) and the terminal UPDATE


def test_the_end_of_a_dependency_releases_its_dependants_in_the_same_transaction(db_path):
    traced = Traced(db_path)
    with closing(traced.conn):
        dep = make_task()
        children = [make_task(depends_on=(dep.id,)) for _ in range(3)]
        plain = [make_task() for _ in range(4)]
        ids, ran = traced.run(jobs.enqueue_job, [task_params(t) for t in (dep, *children, *plain)])
        assert ids == [t.id for t in (dep, *children, *plain)]
        # per dependant: the flagging UPDATE, its INSERT, its edge; the plain rows' executemany traces each row
        assert len(ran) == 1 + 3 * 3 + len(plain)
        rows, _ = traced.run(jobs.claim_job, ("default",), 10, LONG, "w1")
        assert sorted(row[0] for row in rows) == sorted(t.id for t in (dep, *plain)), "the dependants wait"
        [dep_row] = [row for row in rows if row[0] == dep.id]
        (flags, woke), ran = traced.run(jobs.finish_job, [(succeeded(dep_row), None, None)])
        assert flags == [True] and woke, "a dependant became claimable: wake the workers"
        assert len(ran) == 5  # lease SELECT, terminal UPDATE; the dependants' SELECT, the edges' DELETE, their UPDATE
        rows, _ = traced.run(jobs.claim_job, ("default",), 10, LONG, "w1")
        assert sorted(row[0] for row in rows) == sorted(t.id for t in children)
    assert edges(db_path) == []


def test_a_waiting_task_is_not_in_the_claim_index(db_path):
    traced = Traced(db_path)
    with closing(traced.conn):
        dep = make_task()
        traced.run(jobs.enqueue_job, [task_params(t) for t in (dep, make_task(depends_on=(dep.id,)))])
        indexed = traced.conn.execute(
            f"SELECT id FROM {TASKS} INDEXED BY {IDX_TASKS_CLAIM} WHERE status = 'pending' AND paused = 0 "
            "AND waiting = 0 AND held = 0 AND queue = 'default'"
        ).fetchall()
        assert indexed == [(dep.id,)]


@pytest.mark.anyio
async def test_a_dependant_the_enqueue_ignores_registers_no_edge(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        dep = make_task()
        first = make_task(unique_key="k", depends_on=(dep.id,))
        second = make_task(unique_key="k", depends_on=(dep.id,))
        assert await q.enqueue_many([dep, first, second]) == [dep.id, first.id, first.id]
        assert edges(db_path) == [(dep.id, first.id)]
        [claimed] = await q.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert await q.finish([done(claimed)]) == [True]
        assert await claim_ids(q) == [first.id]


@pytest.mark.anyio
async def test_a_repeated_dependency_counts_once(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        dep = make_task()
        child = make_task(depends_on=(dep.id, dep.id))
        await q.enqueue_many([dep, child])
        stored = await q.get(child.id)
        assert stored is not None and stored.waiting == 1
        [claimed] = await q.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert await q.finish([done(claimed)]) == [True]
        assert await claim_ids(q) == [child.id]


@pytest.mark.anyio
async def test_a_fan_in_wider_than_a_statement_chunk(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        deps = [make_task() for _ in range(1200)]
        callback = make_task(depends_on=tuple(d.id for d in deps))
        await q.enqueue_many([*deps, callback])
        stored = await q.get(callback.id)
        assert stored is not None and stored.waiting == 1200
        claimed = await q.claim_ready(["default"], 2000, lease=LONG, worker_id="w1")
        assert len(claimed) == 1200
        assert await q.finish([done(t) for t in claimed[:-1]]) == [True] * 1199  # one batch, several chunks
        assert await claim_ids(q) == []
        assert await q.finish([done(claimed[-1])]) == [True]
        assert await claim_ids(q) == [callback.id]
    assert edges(db_path) == []


@pytest.mark.anyio
async def test_a_cancelled_dependant_keeps_counting_and_a_retry_waits_for_what_still_runs(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        first, second = make_task(), make_task()
        child = make_task(depends_on=(first.id, second.id))
        await q.enqueue_many([first, second, child])
        assert await q.cancel(child.id)
        [one, two] = await q.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert await q.finish([done(one)]) == [True]
        retried = await q.retry(child.id)
        assert retried is not None and retried.status is TaskStatus.PENDING and retried.waiting == 1
        assert await claim_ids(q) == [], "its other dependency still runs"
        assert await q.finish([done(two)]) == [True]
        assert await claim_ids(q) == [child.id]


@pytest.mark.anyio
async def test_purging_everything_leaves_no_edge(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        dep = make_task()
        await q.enqueue_many([dep, *(make_task(depends_on=(dep.id,)) for _ in range(3))])
        assert len(edges(db_path)) == 3
        assert await q.purge() == 4
        assert edges(db_path) == []


@pytest.mark.anyio
async def test_a_dependant_enqueued_in_a_transaction_that_rolls_back_leaves_nothing(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        dep = make_task()
        await q.enqueue(dep)
        with closing(sqlite3.connect(str(db_path), isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            child = make_task(depends_on=(dep.id,))
            assert await q.enqueue_in_transaction([child], conn) == [child.id]
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            kept = make_task(depends_on=(dep.id,))
            assert await q.enqueue_in_transaction([kept], conn) == [kept.id]
            conn.execute("COMMIT")
        assert await q.get(child.id) is None
        assert edges(db_path) == [(dep.id, kept.id)]
        [claimed] = await q.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert claimed.id == dep.id
        assert await q.finish([done(claimed)]) == [True]
        assert await claim_ids(q) == [kept.id]


@pytest.mark.anyio
async def test_a_version_3_database_takes_dependencies_after_the_upgrade(db_path):
    make_version_3(db_path, ("old", "older"))
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        old = await q.get("old")
        assert old is not None and old.waiting == 0
        child = make_task(depends_on=("old",))
        await q.enqueue(child)
        stored = await q.get(child.id)
        assert stored is not None and stored.waiting == 1
        claimed = await q.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert sorted(t.id for t in claimed) == ["old", "older"], "rows written before are in the rebuilt index"
        assert await q.finish([done(t) for t in claimed]) == [True, True]
        assert await claim_ids(q) == [child.id]
