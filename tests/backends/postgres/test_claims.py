"""SKIP LOCKED claims, the database clock, unique keys under races, fused results."""

from __future__ import annotations

import uuid
from collections import Counter

import anyio
import anyio.lowlevel
import pytest

from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing import connected, make_result, make_task, now_ms, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def test_two_pools_claiming_concurrently_never_share_a_task(make_queue):
    total = 600
    async with connected(lambda: make_queue(min_size=2, max_size=4), 2) as (one, two):
        await one.enqueue_many([make_task() for _ in range(total)])
        seen: Counter[str] = Counter()
        by_pool: Counter[str] = Counter()

        async def drain(queue, name):
            while True:
                batch = await queue.claim_ready(["default"], 25, lease=60, worker_id=name)
                if not batch:
                    return
                by_pool[name] += len(batch)
                seen.update(task.id for task in batch)
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(3):
                    tg.start_soon(drain, one, f"one-{n}")
                    tg.start_soon(drain, two, f"two-{n}")
        assert len(seen) == total and set(seen.values()) == {1}
        assert await one.count(status=TaskStatus.RUNNING) == total


async def test_claim_blocks_nothing_while_another_transaction_holds_rows(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        locked, free = make_task(priority=9), make_task()
        await queue.enqueue_many([locked, free])
        async with admin.transaction():
            # Another session holds the best task's row lock: SKIP LOCKED passes over it.
            await admin.execute(f'SELECT 1 FROM "{schema}".tasks WHERE id = $1 FOR UPDATE', locked.id)
            with anyio.fail_after(10):
                claimed = await queue.claim_ready(["default"], 10, lease=60, worker_id="w")
            assert [t.id for t in claimed] == [free.id]
        assert [t.id for t in await queue.claim_ready(["default"], 10, lease=60, worker_id="w")] == [locked.id]


async def test_lease_deadline_comes_from_the_database_clock(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        await queue.enqueue(make_task())
        [task] = await queue.claim_ready(["default"], 1, lease=42.5, worker_id="w")
        # started_at and the deadline are both now() of the claiming statement.
        assert (task.lease_expires_at - task.started_at).total_seconds() == 42.5
        row = await admin.fetchrow(
            f'SELECT lease_expires_at > now() AS live, started_at <= now() AS past FROM "{schema}".tasks'
        )
        assert row["live"] and row["past"]


async def test_recover_uses_each_tasks_own_deadline(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        await queue.enqueue_many([make_task(max_retries=1) for _ in range(5)])
        held = await queue.claim_ready(["default"], 5, lease=3600, worker_id="w")
        expired = held[:3]
        # Move three deadlines into the past on the server; the other two stay live.
        await admin.execute(
            f"UPDATE \"{schema}\".tasks SET lease_expires_at = now() - interval '1 second' WHERE id = ANY($1)",
            [t.id for t in expired],
        )
        recovered = await queue.recover()
        assert sorted(t.id for t in recovered) == sorted(t.id for t in expired)
        assert all(t.status is TaskStatus.PENDING and t.lease_token is None for t in recovered)
        assert await queue.count(status=TaskStatus.RUNNING) == 2


async def test_concurrent_enqueues_of_one_unique_key_store_one_task(make_queue):
    async with connected(make_queue, 4) as queues:
        ids: list[str] = []

        async def enqueue(queue):
            for _ in range(5):
                ids.extend(await queue.enqueue_many([make_task(unique_key="only-one"), make_task()]))

        async with anyio.create_task_group() as tg:
            for queue in queues:
                tg.start_soon(enqueue, queue)
        keyed = ids[0::2]
        assert len(set(keyed)) == 1
        assert await queues[0].count() == 1 + 20


async def test_enqueueing_a_finished_id_again_replaces_it(make_queue):
    async with connected(make_queue) as (queue,):
        task = make_task()
        await queue.enqueue(task)
        assert await queue.enqueue(task) == task.id  # live: a no-op
        [held] = await queue.claim_ready(["default"], 1, lease=60, worker_id="w")
        await queue.finish([Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.SUCCEEDED)])
        assert await queue.enqueue(task) == task.id
        again = await queue.get(task.id)
        assert again is not None and again.status is TaskStatus.PENDING and again.attempts == 0
        assert await queue.count() == 1


async def test_fused_results_into_another_schema_of_the_same_database(make_queue, postgres_url, admin):
    other = f"omniq_test_other_{uuid.uuid4().hex[:12]}"
    from omniq_postgres import PostgresResultStorage

    try:
        async with (
            connected(make_queue) as (queue,),
            connected(lambda: PostgresResultStorage(postgres_url, schema=other)) as (results,),
        ):
            assert queue.can_fuse_results(results)
            await queue.enqueue(make_task())
            [held] = await queue.claim_ready(["default"], 1, lease=60, worker_id="w")
            result = make_result(held.id)
            outcome = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.SUCCEEDED, result=result)
            assert await queue.finish([outcome], results=results) == [True]
            stored = await results.get(held.id)
            assert stored is not None and stored.payload == result.payload
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


async def test_no_fusing_across_databases(make_queue, make_results, postgres_url):
    from omniq_postgres import PostgresResultStorage

    queue = make_queue()
    assert queue.can_fuse_results(make_results())
    elsewhere = postgres_url.rsplit("/", 1)[0] + "/some_other_database"
    assert not queue.can_fuse_results(PostgresResultStorage(elsewhere))


async def test_requeued_task_wakes_a_waiting_worker(make_queue):
    async with connected(make_queue, 2) as (worker, other):
        await other.enqueue(make_task(queue="q", max_retries=2))
        [held] = await other.claim_ready(["q"], 1, lease=60, worker_id="other")
        claimed = []

        async def claim():
            claimed.extend(await worker.claim(["q"], 1, lease=60, worker_id="w", wait=30))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim)
                await anyio.sleep(0.3)
                release = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.RELEASE)
                assert await other.finish([release]) == [True]
        assert [t.id for t in claimed] == [held.id]


async def test_resumed_task_wakes_a_waiting_worker(make_queue):
    async with connected(make_queue, 2) as (worker, other):
        task = make_task(queue="q", paused=True)
        await other.enqueue(task)
        claimed = []

        async def claim():
            claimed.extend(await worker.claim(["q"], 1, lease=60, worker_id="w", wait=30))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim)
                await anyio.sleep(0.3)
                assert await other.set_paused(task.id, False)
        assert [t.id for t in claimed] == [task.id]


async def test_events_older_than_ttl_expire_while_appending(make_events):
    from datetime import timedelta

    from omniq.models import utcnow
    from omniq.testing import make_event

    async with connected(lambda: make_events(ttl=3600)) as (events,):
        old = make_event(timestamp=utcnow() - timedelta(hours=2))
        new = make_event()
        await events.append([old, new])
        remaining = await wait_until(events.query)
        assert [e.task_id for e in remaining] == [new.task_id]


async def test_queues_whose_names_share_a_hash_stay_apart(make_queue, admin):
    # The claim index is keyed on hashtext(queue); these two names collide on it.
    first, second = "q16584", "q52834"
    if not await admin.fetchval("SELECT hashtext($1) = hashtext($2)", first, second):
        pytest.skip("these names do not collide on this server's hashtext")
    async with connected(make_queue) as (queue,):
        mine = [make_task(queue=first, priority=p) for p in (0, 5)]
        theirs = [make_task(queue=second, priority=9, eta=now_ms(3600)), make_task(queue=second)]
        await queue.enqueue_many([theirs[0], mine[0], theirs[1], mine[1]])
        assert await queue.count(status=TaskStatus.PENDING, queue=first) == 2
        claimed = await queue.claim_ready([first], 10, lease=30, worker_id="w")
        assert [t.id for t in claimed] == [mine[1].id, mine[0].id]
        assert [t.id for t in await queue.claim_ready([second], 10, lease=30, worker_id="w")] == [theirs[1].id]
        assert await queue.count(status=TaskStatus.PENDING, queue=second) == 1
        next_due = queue._sql.next_due
        assert await admin.fetchval(next_due, [first]) is None  # the other queue's scheduled task is not ours
        assert await admin.fetchval(next_due, [second]) > 3000
