"""Pausing: a paused task stays PENDING and is skipped by claims until it is resumed."""

from __future__ import annotations

from omniq.base import BaseTaskQueue
from omniq.models import TaskStatus
from omniq.testing.fixtures import make_task
from omniq.testing.task_queue.kit import LONG, QueueTests, claim_one

__all__ = ["PauseTests"]


class PauseTests(QueueTests):
    """``set_paused`` and tasks enqueued paused."""

    async def test_paused_task_is_not_claimable_until_resumed(self, task_queue: BaseTaskQueue) -> None:
        task, other = make_task(), make_task()
        await task_queue.enqueue_many([task, other])
        assert await task_queue.set_paused(task.id, True)
        paused = await task_queue.get(task.id)
        assert paused is not None and paused.paused and paused.status is TaskStatus.PENDING
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert [t.id for t in claimed] == [other.id]
        assert await task_queue.set_paused(task.id, False)
        assert [t.id for t in await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")] == [task.id]

    async def test_enqueued_paused_task_waits_for_resume(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(paused=True)
        await task_queue.enqueue(task)
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        assert await task_queue.set_paused(task.id, False)
        assert (await claim_one(task_queue)).id == task.id

    async def test_set_paused_unknown_or_terminal_is_false(self, task_queue: BaseTaskQueue) -> None:
        assert not await task_queue.set_paused("0" * 32, True)
        task = make_task()
        await task_queue.enqueue(task)
        await task_queue.cancel(task.id)
        assert not await task_queue.set_paused(task.id, True)
