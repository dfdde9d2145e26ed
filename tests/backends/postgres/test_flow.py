"""Flow control on PostgreSQL: the upgrade from version 4, the unlimited claim's plan, slots freed by any SQL."""

from __future__ import annotations

import anyio
import pytest

from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing import make_task
from omniq_postgres.schema import LATEST_VERSION, Names, migrate

pytestmark = [pytest.mark.anyio, pytest.mark.servers]

LONG = 30.0


def limited(concurrency: int | None = 1, **fields: object) -> Task:
    return make_task(limits=Limits(key="k", concurrency=concurrency), **fields)  # type: ignore[arg-type]


async def plan(admin, queue, queues: list[str]) -> str:
    """The claim's executed plan, rolled back."""
    tx = admin.transaction()
    await tx.start()
    try:
        rows = await admin.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + queue._sql.claim, queues, 10, LONG, "w")
    finally:
        await tx.rollback()
    return "\n".join(row[0] for row in rows)


async def test_a_database_at_version_4_gains_the_limit_columns(admin, schema, make_queue, old_database):
    names = Names(schema)
    await old_database(4)  # left by the previous release, holding a task
    before = make_task()
    await admin.execute(
        f"""INSERT INTO {names.tasks} (id, func, queue, status, ready_at, created_at)
            VALUES ($1, 'f', 'default', 'pending', now(), $2)""",
        before.id,
        before.created_at,
    )
    assert await migrate(admin, names) == LATEST_VERSION - 4
    queue = make_queue()
    try:
        first, second = limited(), limited()
        await queue.enqueue_many([first, second])
        stored = await queue.get(before.id)
        assert stored is not None and stored.limits is None and not stored.held
        claimed = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert sorted(t.id for t in claimed) == sorted([before.id, first.id])
        waiting = await queue.get(second.id)
        assert waiting is not None and waiting.held and waiting.status is TaskStatus.PENDING
    finally:
        await queue.close()


async def test_an_unlimited_claim_never_runs_the_flow_function(admin, make_queue):
    queue = make_queue()
    try:
        await queue.enqueue_many([make_task() for _ in range(5)])
        text = await plan(admin, queue, ["default"])
        assert "Function Scan on claim_flow (never executed)" in text, text
        assert "tasks_limited_idx" in text, text  # the probe: an index holding limited rows only
        await queue.enqueue(limited())
        assert "Function Scan on claim_flow (actual rows=" in await plan(admin, queue, ["default"])
    finally:
        await queue.close()


async def test_an_unlimited_batch_is_inserted_without_the_limit_columns(make_queue):
    queue = make_queue()
    inserts = queue._inserts
    assert "limit_key" not in inserts._batch(skipping=False, large=False, limited=False).sql((0,) * 19)
    assert "limit_key" in inserts._batch(skipping=False, large=False, limited=True).sql((0,) * 23)


async def test_purging_a_holder_wakes_a_held_task(make_queue):
    queue = make_queue()
    try:
        first, second = limited(), limited()
        await queue.enqueue_many([first, second])
        [holder] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w") == []
        assert await queue.purge(statuses=[TaskStatus.RUNNING]) == 1
        woken = await queue.get(second.id)
        assert woken is not None and not woken.held and woken.eta is None
        assert [t.id for t in await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")] == [second.id]
        assert holder.id == first.id
    finally:
        await queue.close()


async def test_recovering_an_expired_holder_wakes_the_first_held_task(make_queue):
    queue = make_queue()
    try:
        tasks = [limited(priority=p) for p in (0, 0, 5)]
        await queue.enqueue_many(tasks)
        [holder] = await queue.claim_ready(["default"], 10, lease=0.3, worker_id="w")
        assert holder.id == tasks[2].id  # the highest priority first
        assert await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w") == []
        await anyio.sleep(0.4)
        assert [t.id for t in await queue.recover()] == [holder.id]
        # The first held task in claim order was woken by the recovery; the other stays held.
        held = {t.id: t.held for t in await queue.get_many([tasks[0].id, tasks[1].id]) if t is not None}
        assert held == {tasks[0].id: False, tasks[1].id: True}
    finally:
        await queue.close()


async def test_a_paused_queue_is_left_out_of_the_next_due_time(make_queue):
    queue = make_queue()
    try:
        await queue.enqueue(make_task(queue="mail"))
        assert await queue._next_due(["mail"]) is not None
        await queue.set_queue_paused("mail", True)
        assert await queue._next_due(["mail"]) is None
        await queue.wait_for_work(["other"], 0.1)  # the listener's first connect wakes every waiter once
        start = anyio.current_time()
        with anyio.fail_after(5):
            await queue.wait_for_work(["mail"], 0.3)
        assert anyio.current_time() - start >= 0.25, "a paused queue's ready task ended the wait"
    finally:
        await queue.close()


async def test_recover_drops_idle_rate_state(admin, schema, make_queue):
    queue = make_queue()
    try:
        await queue.enqueue(make_task(limits=Limits(key="r", rate=100.0, burst=1)))
        assert len(await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")) == 1
        keys = f'"{schema}".flow_keys'
        assert await admin.fetchval(f"SELECT count(*) FROM {keys}") == 1
        await admin.execute(f"UPDATE {keys} SET tat = tat - 5")  # idle for a while
        await queue.recover()
        assert await admin.fetchval(f"SELECT count(*) FROM {keys}") == 0
    finally:
        await queue.close()


async def test_batches_finishing_holders_of_several_keys_keep_every_limit(make_queue):
    keys, limit, per_key = ("a", "b", "c"), 2, 12
    tasks = [make_task(limits=Limits(key=key, concurrency=limit)) for key in keys for _ in range(per_key)]
    queues = [make_queue(min_size=1, max_size=2) for _ in range(4)]
    running: dict[str, set[str]] = {key: set() for key in keys}
    finished: list[str] = []
    try:
        await queues[0].enqueue_many(tasks)

        async def worker(queue) -> None:
            while len(finished) < len(tasks):
                claimed = await queue.claim(["default"], 6, lease=LONG, worker_id="w", wait=0.2)
                for task in claimed:
                    running[task.limits.key].add(task.id)
                    assert len(running[task.limits.key]) <= limit, f"key {task.limits.key} over its limit"
                await anyio.sleep(0.01)
                for task in claimed:
                    running[task.limits.key].discard(task.id)
                outcomes = [
                    Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.SUCCEEDED) for t in claimed
                ]
                assert await queue.finish(outcomes) == [True] * len(claimed)  # one batch, several keys
                finished.extend(t.id for t in claimed)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for queue in queues:
                    tg.start_soon(worker, queue)
        assert sorted(finished) == sorted(t.id for t in tasks)
    finally:
        for queue in queues:
            await queue.close()


async def test_a_database_at_version_8_hands_freed_slots_over(admin, schema, make_queue, old_database):
    # Migration 9: the slot-freed trigger no longer fires inside a finish that claims, whose hand_over()
    # leases the held task itself; a plain finish still wakes one through the trigger.
    names = Names(schema)
    await old_database(8)
    assert await migrate(admin, names) == LATEST_VERSION - 8
    queue = make_queue()
    try:
        base = make_task().created_at
        first, second, third = (limited(created_at=base.replace(microsecond=i)) for i in range(3))
        await queue.enqueue_many([first, second, third])
        [holder] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        assert holder.id == first.id
        outcome = Outcome(task_id=holder.id, lease_token=holder.lease_token or "", kind=OutcomeKind.SUCCEEDED)
        accepted, claimed = await queue.finish_and_claim(
            [outcome], queues=["default"], limit=1, lease=LONG, worker_id="w"
        )
        assert accepted == [True] and [t.id for t in claimed] == [second.id]
        waiting = await queue.get(third.id)
        assert waiting is not None and waiting.held, "the trigger woke a task for a slot handed over"
        [running] = claimed
        outcome = Outcome(task_id=running.id, lease_token=running.lease_token or "", kind=OutcomeKind.SUCCEEDED)
        assert await queue.finish([outcome]) == [True]
        assert [t.id for t in await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")] == [third.id]
    finally:
        await queue.close()


async def test_a_failing_hand_over_still_records_the_outcomes(admin, schema, make_queue):
    # A server error after the finish statement rolls the transaction back; the outcomes are then
    # recorded alone and no task is claimed (the worker's next claim takes the held one).
    queue = make_queue()
    try:
        base = make_task().created_at
        first, second = (limited(created_at=base.replace(microsecond=i)) for i in range(2))
        await queue.enqueue_many([first, second])
        [holder] = await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")
        await queue.finish([])  # connected and migrated: the function exists, then goes
        await admin.execute(f'DROP FUNCTION "{schema}".hand_over')
        outcome = Outcome(task_id=holder.id, lease_token=holder.lease_token or "", kind=OutcomeKind.SUCCEEDED)
        accepted, claimed = await queue.finish_and_claim(
            [outcome], queues=["default"], limit=1, lease=LONG, worker_id="w"
        )
        assert accepted == [True] and claimed == []
        done = await queue.get(holder.id)
        assert done is not None and done.status is TaskStatus.SUCCEEDED
        assert [t.id for t in await queue.claim_ready(["default"], 10, lease=LONG, worker_id="w")] == [second.id]
    finally:
        await queue.close()
