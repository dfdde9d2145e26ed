"""Leases: heartbeats extend them, expired ones are recovered, and a lost lease's outcome is refused."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, TaskStatus, utcnow
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
