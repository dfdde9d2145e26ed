"""Leases: heartbeats extend them, expired ones are recovered, and a lost lease's outcome is refused."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from functools import partial

import anyio

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus, utcnow
from omniq.testing.fixtures import connected, make_task, wait_until
from omniq.testing.task_queue.kit import LONG, SHORT, QueueFactory, QueueTests, claim_one, recover, token

__all__ = ["LeaseTests"]


class LeaseTests(QueueTests):
    """``extend`` and ``recover``, keyed on each task's own lease token and deadline."""

    async def test_extend_pushes_deadline_of_held_leases(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(), make_task()])
        a, b = await task_queue.claim_ready(["default"], 2, lease=5, worker_id="w1")
        held = await task_queue.extend({a.id: token(a), b.id: token(b)}, 60)
        assert held == {a.id, b.id}
        stored = await task_queue.get(a.id)
        assert stored is not None and stored.lease_expires_at is not None
        assert stored.lease_expires_at > utcnow() + timedelta(seconds=30)
        assert stored.lease_token == a.lease_token and stored.status is TaskStatus.RUNNING
        assert await task_queue.extend({}, 60) == set()

    async def test_extend_omits_lost_cancelled_and_unknown(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(), make_task(), make_task()])
        a, b, c = await task_queue.claim_ready(["default"], 3, lease=LONG, worker_id="w1")
        assert await task_queue.cancel(b.id)
        await task_queue.finish([Outcome(task_id=c.id, lease_token=token(c), kind=OutcomeKind.SUCCEEDED)])
        leases = {a.id: "not-the-token", b.id: token(b), c.id: token(c), "0" * 32: "x"}
        assert await task_queue.extend(leases, 60) == set()
        assert await task_queue.extend({a.id: token(a)}, 60) == {a.id}

    async def test_stale_completion_is_rejected(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (first, second):
            await first.enqueue(make_task(max_retries=3))
            stale = await claim_one(first, lease=SHORT, worker="dead")
            recovered = await wait_until(partial(recover, first), message="recover() never returned the expired lease")
            assert [t.id for t in recovered] == [stale.id]
            assert recovered[0].status is TaskStatus.PENDING and recovered[0].lease_token is None
            fresh = await claim_one(second, lease=LONG, worker="alive")
            assert fresh.id == stale.id and fresh.attempts == 2 and fresh.lease_token != stale.lease_token
            late = Outcome(task_id=stale.id, lease_token=token(stale), kind=OutcomeKind.SUCCEEDED)
            assert await first.finish([late]) == [False]
            assert await first.extend({stale.id: token(stale)}, 60) == set()
            stored = await second.get(stale.id)
            assert stored is not None
            assert (stored.status, stored.lease_token, stored.worker_id) == (
                TaskStatus.RUNNING,
                fresh.lease_token,
                "alive",
            )
            ok = Outcome(task_id=fresh.id, lease_token=token(fresh), kind=OutcomeKind.SUCCEEDED)
            assert await second.finish([ok]) == [True]

    async def test_recover_with_attempts_exhausted_fails(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=0))
        held = await claim_one(task_queue, lease=SHORT)
        recovered = await wait_until(partial(recover, task_queue), message="recover() never returned the expired lease")
        assert [t.id for t in recovered] == [held.id]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert stored.error is not None and stored.error.type == "LeaseExpired"
        assert stored.finished_at is not None and stored.lease_token is None and stored.attempts == 1
        late = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([late]) == [False]
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_recover_leaves_live_and_extended_leases(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(max_retries=1) for _ in range(3)])
        one, two, expiring = await task_queue.claim_ready(["default"], 3, lease=1.0, worker_id="w1")
        assert await task_queue.extend({one.id: token(one), two.id: token(two)}, LONG) == {one.id, two.id}
        recovered = await wait_until(partial(recover, task_queue))
        assert [t.id for t in recovered] == [expiring.id]
        assert await task_queue.recover() == []
        statuses = [t.status if t else None for t in await task_queue.get_many([one.id, two.id, expiring.id])]
        assert statuses == [TaskStatus.RUNNING, TaskStatus.RUNNING, TaskStatus.PENDING]

    async def test_extend_moves_only_the_deadline_and_updated_at(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=2))
        held = await claim_one(task_queue, lease=5, worker="w-3")
        await anyio.sleep(0.05)  # the engine's clock moves on: updated_at must show the heartbeat
        assert await task_queue.extend({held.id: token(held)}, LONG) == {held.id}
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.lease_expires_at is not None and held.lease_expires_at is not None
        assert stored.lease_expires_at > held.lease_expires_at
        assert stored.updated_at is not None and held.started_at is not None
        assert stored.updated_at > held.started_at  # both on the engine's clock
        kept = ("status", "lease_token", "started_at", "worker_id", "attempts", "finished_at", "eta")
        assert {f: getattr(stored, f) for f in kept} == {f: getattr(held, f) for f in kept}

    async def test_recover_keeps_the_lost_attempt_and_clears_the_lease(self, task_queue: BaseTaskQueue) -> None:
        """Requeued or failed, a recovered task keeps ``started_at``, ``worker_id`` and attempts (the lost attempt's)."""
        again, spent = make_task(queue="again", max_retries=1), make_task(queue="spent", max_retries=0)
        await task_queue.enqueue_many([again, spent])
        a = await claim_one(task_queue, "again", lease=SHORT, worker="w-5")
        s = await claim_one(task_queue, "spent", lease=SHORT, worker="w-5")
        recovered: list[Task] = []

        async def both() -> bool:
            recovered.extend(await task_queue.recover())
            return len(recovered) == 2

        await wait_until(both, message="recover() never returned both expired leases")
        assert sorted(t.id for t in recovered) == sorted([a.id, s.id])
        requeued, failed = await task_queue.get_many([a.id, s.id])
        assert requeued is not None and failed is not None
        assert requeued.status is TaskStatus.PENDING and requeued.finished_at is None and requeued.error is None
        assert requeued.eta is not None and a.started_at is not None and requeued.eta >= a.started_at
        assert failed.status is TaskStatus.FAILED and failed.error is not None
        assert failed.finished_at is not None and s.started_at is not None and failed.finished_at >= s.started_at
        for task, held in ((requeued, a), (failed, s)):
            assert (task.lease_token, task.lease_expires_at) == (None, None)
            assert (task.started_at, task.worker_id, task.attempts) == (held.started_at, "w-5", 1)
            assert task.updated_at is not None and held.started_at is not None and task.updated_at > held.started_at

    async def test_concurrent_recovers_recover_each_lease_once(self, task_queue_factory: QueueFactory) -> None:
        """Every worker sweeps: five sweepers at once return each expired task once, requeued or failed."""
        async with connected(task_queue_factory, 5) as queues:
            tasks = [make_task(max_retries=i % 2) for i in range(20)]
            await queues[0].enqueue_many(tasks)
            held = await queues[0].claim_ready(["default"], 20, lease=SHORT, worker_id="dead")
            assert len(held) == 20
            seen: list[Task] = []

            async def sweep(q: BaseTaskQueue) -> None:
                seen.extend(await q.recover())

            with anyio.fail_after(20):
                while len({t.id for t in seen}) < 20:
                    async with anyio.create_task_group() as tg:
                        for q in queues:
                            tg.start_soon(sweep, q)
            assert Counter(t.id for t in seen) == dict.fromkeys((t.id for t in tasks), 1)
            expected = {t.id: TaskStatus.PENDING if t.max_retries else TaskStatus.FAILED for t in tasks}
            assert {t.id: t.status for t in seen} == expected
            stored = await queues[1].get_many([t.id for t in tasks])
            assert {t.id: t.status for t in stored if t is not None} == expected
            again = await queues[2].claim_ready(["default"], 20, lease=LONG, worker_id="w1")
            assert sorted(t.id for t in again) == sorted(i for i, s in expected.items() if s is TaskStatus.PENDING)
            assert {t.attempts for t in again} == {2}
