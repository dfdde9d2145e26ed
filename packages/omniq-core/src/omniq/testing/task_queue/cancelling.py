"""Cancelling: a PENDING or RUNNING task becomes CANCELLED; a running one's lease is lost."""

from __future__ import annotations

from datetime import timedelta

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, TaskStatus, utcnow
from omniq.testing.fixtures import CLOCK_SKEW, make_task, now_ms
from omniq.testing.task_queue.kit import LONG, QueueTests, claim_one, token

__all__ = ["CancelTests"]


class CancelTests(QueueTests):
    """``cancel``: True when it cancelled, False for a terminal or unknown task."""

    async def test_cancel_pending(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(eta=now_ms(3600))
        await task_queue.enqueue_many([task, make_task()])
        assert await task_queue.cancel(task.id)
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert task.id not in {t.id for t in claimed}
        assert not await task_queue.cancel(task.id)

    async def test_cancel_running_loses_the_lease(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await claim_one(task_queue)
        assert await task_queue.cancel(held.id)
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED and stored.lease_token is None
        done = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([done]) == [False]
        assert await task_queue.extend({held.id: token(held)}, 60) == set()
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED

    async def test_cancel_terminal_or_unknown_is_false(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await claim_one(task_queue)
        await task_queue.finish([Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.SUCCEEDED)])
        assert not await task_queue.cancel(held.id)
        assert not await task_queue.cancel("0" * 32)
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.SUCCEEDED

    async def test_cancel_sets_finished_at_and_keeps_who_ran_it(self, task_queue: BaseTaskQueue) -> None:
        """``finished_at`` and ``updated_at`` become now; ``started_at``, ``worker_id`` and attempts stay."""
        pending, running = make_task(queue="p"), make_task(queue="r")
        await task_queue.enqueue_many([pending, running])
        held = await claim_one(task_queue, "r", worker="w-9")
        before = utcnow() - timedelta(seconds=CLOCK_SKEW)
        assert await task_queue.cancel(pending.id) and await task_queue.cancel(running.id)
        after = utcnow() + timedelta(seconds=CLOCK_SKEW)
        p, r = await task_queue.get_many([pending.id, running.id])
        assert p is not None and r is not None
        for task in (p, r):
            assert task.status is TaskStatus.CANCELLED
            assert task.finished_at is not None and before <= task.finished_at <= after
            assert task.updated_at is not None and before <= task.updated_at <= after
            assert (task.lease_token, task.lease_expires_at) == (None, None)
        assert (p.started_at, p.worker_id, p.attempts) == (None, None, 0)
        assert (r.started_at, r.worker_id, r.attempts) == (held.started_at, "w-9", 1)
