"""Claiming: the lease a claim takes, its limit and queue filter, the order, concurrent claimers."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import anyio

from omniq.base import BaseTaskQueue
from omniq.models import TaskStatus, utcnow
from omniq.testing.fixtures import CLOCK_SKEW, connected, make_task, now_ms
from omniq.testing.task_queue.kit import LONG, QueueFactory, QueueTests, claim_one

__all__ = ["ClaimingTests"]


class ClaimingTests(QueueTests):
    """``claim_ready``: RUNNING, attempt + 1, a fresh token and deadline; priority, then eta, then FIFO."""

    async def test_claim_sets_lease(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(max_retries=2)
        await task_queue.enqueue(task)
        before = utcnow() - timedelta(seconds=CLOCK_SKEW)  # slack for an engine clock a little behind ours
        claimed = await claim_one(task_queue, lease=LONG, worker="worker-7")
        assert claimed.id == task.id and claimed.payload == task.payload
        assert claimed.status is TaskStatus.RUNNING
        assert claimed.attempts == 1
        assert claimed.lease_token and isinstance(claimed.lease_token, str)
        assert claimed.lease_expires_at is not None and claimed.lease_expires_at > utcnow() + timedelta(seconds=10)
        assert claimed.started_at is not None and claimed.started_at >= before
        assert claimed.worker_id == "worker-7"
        stored = await task_queue.get(task.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.lease_token, stored.worker_id) == (
            TaskStatus.RUNNING,
            1,
            claimed.lease_token,
            "worker-7",
        )

    async def test_claim_honours_limit_and_empty(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        await task_queue.enqueue_many([make_task() for _ in range(5)])
        first = await task_queue.claim_ready(["default"], 3, lease=LONG, worker_id="w1")
        rest = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert (len(first), len(rest)) == (3, 2)
        assert {t.id for t in first}.isdisjoint(t.id for t in rest)
        assert len({t.lease_token for t in first + rest}) == 5
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_claim_filters_by_queue(self, task_queue: BaseTaskQueue) -> None:
        mail, sms, other = make_task(queue="mail"), make_task(queue="sms"), make_task(queue="other")
        await task_queue.enqueue_many([mail, sms, other])
        assert await task_queue.claim_ready(["nothing"], 10, lease=LONG, worker_id="w1") == []
        claimed = await task_queue.claim_ready(["mail", "sms"], 10, lease=LONG, worker_id="w1")
        assert {t.id for t in claimed} == {mail.id, sms.id}
        assert [t.id for t in await task_queue.claim_ready(["other"], 10, lease=LONG, worker_id="w1")] == [other.id]

    async def test_claim_order_priority_then_eta_then_fifo(self, task_queue: BaseTaskQueue) -> None:
        low = [make_task(priority=0) for _ in range(3)]
        high = [make_task(priority=5) for _ in range(3)]
        overdue = make_task(priority=0, eta=now_ms(-60))  # its eta counts: older than every created_at
        urgent = make_task(priority=9)
        await task_queue.enqueue_many([low[0], high[0], low[1], high[1]])
        await task_queue.enqueue_many([low[2], high[2], overdue, urgent])
        claimed = await task_queue.claim_ready(["default"], 100, lease=LONG, worker_id="w1")
        expected = [urgent, *high, overdue, *low]
        assert [t.id for t in claimed] == [t.id for t in expected]

    async def test_claim_one_at_a_time_follows_the_same_order(self, task_queue: BaseTaskQueue) -> None:
        tasks = [make_task(priority=i % 3) for i in range(9)]
        await task_queue.enqueue_many(tasks)
        expected = sorted(tasks, key=lambda t: -t.priority)  # stable: FIFO within a priority
        got = [(await claim_one(task_queue)).id for _ in tasks]
        assert got == [t.id for t in expected]

    async def test_a_better_task_enqueued_between_claims_is_claimed_first(self, task_queue: BaseTaskQueue) -> None:
        """Claiming in batches (a worker draining a backlog) keeps priority order for newcomers."""
        await task_queue.enqueue_many([make_task(priority=0) for _ in range(20)])
        assert len(await task_queue.claim_ready(["default"], 5, lease=LONG, worker_id="w1")) == 5
        urgent = make_task(priority=9)
        await task_queue.enqueue(urgent)
        claimed = await task_queue.claim_ready(["default"], 5, lease=LONG, worker_id="w1")
        assert claimed[0].id == urgent.id and len(claimed) == 5

    async def test_concurrent_claimers_get_each_task_exactly_once(self, task_queue_factory: QueueFactory) -> None:
        total = 200
        async with connected(task_queue_factory, 5) as (producer, *claimers):
            await producer.enqueue_many([make_task() for _ in range(total)])
            seen: Counter[str] = Counter()

            async def claim_loop(q: BaseTaskQueue, worker: str) -> None:
                while sum(seen.values()) < total:
                    for task in await q.claim(["default"], 7, lease=LONG, worker_id=worker, wait=0.2):
                        assert task.attempts == 1 and task.worker_id == worker
                        seen[task.id] += 1

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n, q in enumerate(claimers):
                        tg.start_soon(claim_loop, q, f"w{n}")
            assert len(seen) == total and set(seen.values()) == {1}
            assert await producer.claim_ready(["default"], 10, lease=LONG, worker_id="late") == []
            assert await producer.count(status=TaskStatus.RUNNING) == total
