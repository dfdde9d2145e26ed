"""Dependencies on PostgreSQL: the upgrade from version 5, the hot path left alone, and the races at enqueue and end."""

from __future__ import annotations

import random

import anyio
import asyncpg
import pytest

from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing import connected, make_task
from omniq_postgres.dependencies import DEPENDANTS_TABLE, RELEASE_FN
from omniq_postgres.schema import LATEST_VERSION, Names, migrate

pytestmark = [pytest.mark.anyio, pytest.mark.servers]

LONG = 30.0


def succeeded(task: Task) -> Outcome:
    assert task.lease_token is not None
    return Outcome(task_id=task.id, lease_token=task.lease_token, kind=OutcomeKind.SUCCEEDED)


async def claim_ids(queue, queues: list[str] | None = None, limit: int = 50) -> list[str]:
    return [t.id for t in await queue.claim_ready(queues or ["default"], limit, lease=LONG, worker_id="w")]


async def waiting_of(queue, task_id: str) -> int:
    task = await queue.get(task_id)
    assert task is not None
    return int(task.waiting)


async def registrations(admin, schema: str) -> int:
    return int(await admin.fetchval(f'SELECT count(*) FROM "{schema}".{DEPENDANTS_TABLE}'))


async def explained(admin, sql: str, *args: object) -> str:
    """``sql``'s executed plan (with the triggers it fired), rolled back."""
    tx = admin.transaction()
    await tx.start()
    try:
        rows = await admin.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, *args)
    finally:
        await tx.rollback()
    return "\n".join(row[0] for row in rows)


# -- schema ------------------------------------------------------------------------------------------


async def test_a_database_at_version_5_gains_dependencies_and_keeps_its_tasks(admin, schema, make_queue, old_database):
    names = Names(schema)
    await old_database(5)  # left by the previous release, holding a pending task
    before = make_task()
    await admin.execute(
        f"""INSERT INTO {names.tasks} (id, func, queue, status, ready_at, created_at)
            VALUES ($1, 'f', 'default', 'pending', now(), $2)""",
        before.id,
        before.created_at,
    )
    assert await migrate(admin, names) == LATEST_VERSION - 5
    async with connected(make_queue) as (queue,):
        child = make_task(depends_on=(before.id,))
        await queue.enqueue(child)
        assert await waiting_of(queue, before.id) == 0
        assert await waiting_of(queue, child.id) == 1
        [claimed] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert claimed.id == before.id and claimed.waiting == 0
        assert await queue.finish([succeeded(claimed)]) == [True]
        assert await claim_ids(queue) == [child.id]


async def test_a_wait_registered_at_version_6_is_released_after_the_upgrade(admin, schema, make_queue, old_database):
    names = Names(schema)
    await old_database(6)  # registrations without the dependant's seq
    dep, child = make_task(), make_task()
    await admin.execute(
        f"""INSERT INTO {names.tasks} (id, func, queue, status, ready_at, created_at, has_dependants)
            VALUES ($1, 'f', 'default', 'pending', now(), $2, true)""",
        dep.id,
        dep.created_at,
    )
    await admin.execute(
        f"""INSERT INTO {names.tasks} (id, func, queue, status, ready_at, created_at, depends_on, waiting)
            VALUES ($1, 'f', 'default', 'pending', 'infinity', $2, $3::jsonb, 1)""",
        child.id,
        child.created_at,
        f'["{dep.id}"]',
    )
    await admin.execute(f'INSERT INTO "{schema}".{DEPENDANTS_TABLE} VALUES ($1, $2)', dep.id, child.id)
    assert await migrate(admin, names) == LATEST_VERSION - 6
    async with connected(make_queue) as (queue,):
        assert await claim_ids(queue) == [dep.id]
        [claimed] = [t for t in await queue.get_many([dep.id]) if t is not None]
        assert await queue.finish([succeeded(claimed)]) == [True]
        assert await claim_ids(queue) == [child.id], "a registration without seq is checked by depends_on"


# -- the hot path --------------------------------------------------------------------------------------


async def release_calls(admin, schema: str, sql: str, *args: object) -> int:
    """How many times ``sql`` called the release function (run and rolled back)."""
    tx = admin.transaction()
    await tx.start()
    try:
        await admin.execute("SET LOCAL track_functions = 'pl'")
        # The session's counts not flushed yet: they may hold earlier calls too.
        calls = "SELECT coalesce(pg_stat_get_xact_function_calls($1::regprocedure), 0)"
        fn = f'"{schema}".{RELEASE_FN}(text[])'
        before = await admin.fetchval(calls, fn)
        await admin.fetch(sql, *args)
        return int(await admin.fetchval(calls, fn) - before)
    finally:
        await tx.rollback()


def finish_args(outcomes: list[Outcome]) -> list[object]:
    return [
        [o.task_id for o in outcomes],
        [o.lease_token for o in outcomes],
        [o.kind.value for o in outcomes],
        [o.status.value for o in outcomes],
        [o.eta for o in outcomes],
        [None for _ in outcomes],
    ]


async def test_tasks_without_dependencies_take_the_plain_statements_and_call_nothing(admin, schema, make_queue):
    async with connected(make_queue) as (queue,):
        inserts = queue._inserts
        assert "waiting" not in inserts._batch(skipping=False, large=False, limited=False).sql((0,) * 19)
        assert "has_dependants" in inserts._batch(skipping=True, large=False, limited=False, waiting=True).sql(
            (0,) * 21
        )
        await queue.enqueue_many([make_task() for _ in range(3)])
        claimed = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        outcomes = [succeeded(t) for t in claimed]
        assert await release_calls(admin, schema, queue._sql.finish, *finish_args(outcomes)) == 0
        assert await release_calls(admin, schema, queue._sql.cancel, claimed[0].id) == 0
        assert await queue.finish(outcomes) == [True] * 3
        flagged = await admin.fetchval(f'SELECT count(*) FROM "{schema}".tasks WHERE has_dependants IS NOT NULL')
        assert flagged == 0 and await registrations(admin, schema) == 0

        dep = make_task()
        await queue.enqueue_many([dep, make_task(depends_on=(dep.id,))])
        [running] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert await release_calls(admin, schema, queue._sql.finish, *finish_args([succeeded(running)])) == 1
        retry = Outcome(
            task_id=dep.id, lease_token=running.lease_token or "", kind=OutcomeKind.RETRY, eta=running.created_at
        )
        assert await release_calls(admin, schema, queue._sql.finish, *finish_args([retry])) == 0  # not an end


async def test_waiting_tasks_are_left_out_by_the_claim_index_and_the_next_due_time(admin, make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task(queue="q")
        await queue.enqueue_many([dep, *(make_task(queue="q", depends_on=(dep.id,)) for _ in range(5))])
        [running] = await queue.claim_ready(["q"], 10, lease=LONG, worker_id="w")
        assert running.id == dep.id
        text = await explained(admin, queue._sql.claim, ["q"], 10, LONG, "w")
        assert "Rows Removed by Filter" not in text, text  # the index's ready_at condition, not the heap
        assert await queue._next_due(["q"]) is None  # only waiting tasks: no due time (not an error)
        await queue.wait_for_work(["q"], 0.1)  # the listener's first connect wakes every waiter once
        start = anyio.current_time()
        await queue.wait_for_work(["q"], 0.3)
        assert anyio.current_time() - start >= 0.25, "a waiting task ended the wait"


# -- enqueue races ---------------------------------------------------------------------------------


async def test_an_enqueue_waits_for_a_dependency_being_ended_then_does_not_count_it(admin, schema, make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task()
        await queue.enqueue(dep)
        child = make_task(depends_on=(dep.id,))
        done = anyio.Event()

        async def enqueue() -> None:
            await queue.enqueue(child)
            done.set()

        tx = admin.transaction()
        await tx.start()
        await admin.execute(f"UPDATE \"{schema}\".tasks SET status = 'cancelled' WHERE id = $1", dep.id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(enqueue)
            await anyio.sleep(0.3)
            assert not done.is_set(), "the enqueue went on past a dependency being ended"
            await tx.commit()
        assert await waiting_of(queue, child.id) == 0
        assert await claim_ids(queue) == [child.id]


@pytest.mark.parametrize("manual", [False, True], ids=["asyncpg-transaction", "plain-begin"])
async def test_a_finish_waits_for_a_dependant_enqueued_in_a_callers_transaction(
    postgres_url, admin, schema, make_queue, manual
):
    async with connected(make_queue) as (queue,):
        dep = make_task()
        await queue.enqueue(dep)
        [running] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        child = make_task(depends_on=(dep.id,))
        conn = await asyncpg.connect(postgres_url)
        try:
            if manual:
                await conn.execute("BEGIN")
            else:
                tx = conn.transaction()
                await tx.start()
            assert await queue.enqueue_in_transaction([child], conn) == [child.id]
            finished: list[bool] = []

            async def finish() -> None:
                finished.extend(await queue.finish([succeeded(running)]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(finish)
                await anyio.sleep(0.3)
                assert finished == [], "the dependency ended before its new dependant was committed"
                await (conn.execute("COMMIT") if manual else tx.commit())
        finally:
            await conn.close()
        assert finished == [True]
        assert await waiting_of(queue, child.id) == 0
        assert await claim_ids(queue) == [child.id]
        assert await registrations(admin, schema) == 0


async def test_a_rolled_back_callers_transaction_registers_nothing(postgres_url, admin, schema, make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task()
        await queue.enqueue(dep)
        conn = await asyncpg.connect(postgres_url)
        try:
            tx = conn.transaction()
            await tx.start()
            await queue.enqueue_in_transaction([make_task(depends_on=(dep.id,))], conn)
            await tx.rollback()
        finally:
            await conn.close()
        assert await admin.fetchval(f'SELECT has_dependants FROM "{schema}".tasks WHERE id = $1', dep.id) is None
        assert await registrations(admin, schema) == 0
        assert await queue.count() == 1


async def test_enqueues_on_a_flagged_dependency_do_not_wait_for_each_other(postgres_url, make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task()
        await queue.enqueue_many([dep, make_task(depends_on=(dep.id,))])  # flags dep
        conn = await asyncpg.connect(postgres_url)
        try:
            tx = conn.transaction()
            await tx.start()
            await queue.enqueue_in_transaction([make_task(depends_on=(dep.id,))], conn)  # shares dep's row
            with anyio.fail_after(5):
                await queue.enqueue(make_task(depends_on=(dep.id,)))
            await tx.commit()
        finally:
            await conn.close()
        [running] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert await queue.finish([succeeded(running)]) == [True]
        assert len(await claim_ids(queue)) == 3


async def test_a_dependency_kept_out_by_its_unique_key_does_not_count(make_queue):
    async with connected(make_queue) as (queue,):
        holder, live = make_task(unique_key="k"), make_task()
        await queue.enqueue_many([holder, live])
        duplicate = make_task(unique_key="k")
        child = make_task(depends_on=(duplicate.id, live.id))
        alone = make_task(depends_on=(duplicate.id,))
        ids = await queue.enqueue_many([duplicate, child, alone])
        assert ids == [holder.id, child.id, alone.id]
        assert await waiting_of(queue, child.id) == 1
        assert await waiting_of(queue, alone.id) == 0
        assert await claim_ids(queue) == [holder.id, live.id, alone.id]


async def test_concurrent_enqueues_and_finishes_ready_every_dependant_once(admin, schema, make_queue):
    rng = random.Random(7)
    deps = [make_task() for _ in range(60)]
    async with connected(make_queue, 4) as queues:
        await queues[0].enqueue_many(deps)
        running = await queues[0].claim_ready(["default"], 100, lease=LONG, worker_id="w")
        assert len(running) == len(deps)
        children = [
            make_task(queue="children", depends_on=tuple(rng.sample([d.id for d in deps], 5))) for _ in range(80)
        ]
        batches = [running[i : i + 6] for i in range(0, len(running), 6)]
        for batch in batches:
            rng.shuffle(batch)  # finishes lock their rows in any order

        async def enqueue(queue, share: list[Task]) -> None:
            for i in range(0, len(share), 4):
                await queue.enqueue_many(share[i : i + 4])

        async def finish(queue, share: list[list[Task]]) -> None:
            for batch in share:
                assert await queue.finish([succeeded(t) for t in batch]) == [True] * len(batch)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(enqueue, queues[0], children[0::2])
                tg.start_soon(enqueue, queues[1], children[1::2])
                tg.start_soon(finish, queues[2], batches[0::2])
                tg.start_soon(finish, queues[3], batches[1::2])
        stored = await queues[0].get_many([c.id for c in children])
        assert [t.waiting for t in stored if t is not None] == [0] * len(children)
        taken: list[str] = []
        for queue in queues:
            taken.extend(await claim_ids(queue, ["children"], 100))
        assert sorted(taken) == sorted(c.id for c in children)
        assert await registrations(admin, schema) == 0


# -- ends ----------------------------------------------------------------------------------------------


async def test_a_cancelled_waiting_task_retried_goes_on_waiting(make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await queue.enqueue_many([dep, child])
        [running] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert await queue.cancel(child.id)
        retried = await queue.retry(child.id)
        assert retried is not None and retried.status is TaskStatus.PENDING and retried.waiting == 1
        assert await claim_ids(queue) == []
        [stats] = await queue.queue_stats()
        assert stats.oldest_ready_age is None, "a waiting task is not ready"
        assert await queue.finish([succeeded(running)]) == [True]
        assert await claim_ids(queue) == [child.id]


async def test_a_registration_left_by_an_earlier_task_of_the_same_id_counts_nothing(make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await queue.enqueue_many([dep, child])
        [running] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert await queue.cancel(child.id)
        again = make_task(id=child.id)  # a finished id enqueued again replaces it, without dependencies
        assert await queue.enqueue(again) == child.id
        assert await queue.finish([succeeded(running)]) == [True]
        assert await waiting_of(queue, child.id) == 0
        assert await claim_ids(queue) == [child.id]


async def test_purging_a_dependency_with_its_dependants_in_one_statement(admin, schema, make_queue):
    async with connected(make_queue) as (queue,):
        dep = make_task(queue="gone")
        await queue.enqueue_many([dep, make_task(queue="gone", depends_on=(dep.id,))])
        kept = make_task(depends_on=(dep.id,))
        await queue.enqueue(kept)
        assert await queue.purge(queue="gone") == 2
        assert await claim_ids(queue) == [kept.id]
        assert await registrations(admin, schema) == 0
