"""Pausing: a paused task, or every task of a paused queue, stays PENDING and is skipped by claims until resumed."""

from __future__ import annotations

import anyio

from omniq.base import BaseTaskQueue, Capability
from omniq.models import Task, TaskStatus
from omniq.testing.fixtures import connected, make_task, requires
from omniq.testing.task_queue.flow_control import claim_ids, done
from omniq.testing.task_queue.kit import LONG, QueueFactory, QueueTests, claim_one, token

__all__ = ["PauseTests", "QueuePauseTests"]


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


class QueuePauseTests(QueueTests):
    """``set_queue_paused``: claims skip a paused queue, for every claimer (``Capability.QUEUE_PAUSE``)."""

    @requires(Capability.QUEUE_PAUSE)
    async def test_a_paused_queue_is_skipped_until_resumed(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        admin = task_queue
        async with connected(task_queue_factory, 1) as (claimer,):
            mail, other = make_task(queue="mail"), make_task(queue="other")
            await admin.enqueue_many([mail, other])
            await admin.set_queue_paused("mail", True)
            assert await admin.paused_queues() == ["mail"]
            assert await claimer.paused_queues() == ["mail"]
            taken = await claimer.claim_ready(["mail", "other"], 10, lease=LONG, worker_id="w2")
            assert [t.id for t in taken] == [other.id]
            late = make_task(queue="mail")
            assert await admin.enqueue(late) == late.id, "enqueue into a paused queue still stores"
            assert await claimer.claim(["mail"], 10, lease=LONG, worker_id="w2", wait=0.5) == []
            await admin.set_queue_paused("mail", False)
            assert await admin.paused_queues() == []
            assert sorted(await claim_ids(claimer, "mail")) == sorted([mail.id, late.id])

    @requires(Capability.QUEUE_PAUSE)
    async def test_pausing_leaves_running_tasks_alone(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(queue="mail")
        await task_queue.enqueue(task)
        [running] = await task_queue.claim_ready(["mail"], 1, lease=LONG, worker_id="w1")
        await task_queue.set_queue_paused("mail", True)
        await task_queue.set_queue_paused("mail", True)  # twice: no error, still paused once
        assert await task_queue.paused_queues() == ["mail"]
        assert await task_queue.extend({running.id: token(running)}, LONG) == {running.id}
        assert await task_queue.finish([done(running)]) == [True]
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.status is TaskStatus.SUCCEEDED
        await task_queue.set_queue_paused("mail", False)
        await task_queue.set_queue_paused("mail", False)
        assert await task_queue.paused_queues() == []

    @requires(Capability.QUEUE_PAUSE)
    async def test_a_waiting_claim_wakes_on_resume(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        admin = task_queue
        async with connected(task_queue_factory, 1) as (claimer,):
            task = make_task(queue="mail")
            await admin.set_queue_paused("mail", True)
            await admin.enqueue(task)
            claimed: list[Task] = []

            async def wait_and_claim() -> None:
                claimed.extend(await claimer.claim(["mail"], 5, lease=LONG, worker_id="w2", wait=20))

            with anyio.fail_after(12):  # the claim waits up to 20 s: the resume must end its wait
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_and_claim)
                    await anyio.sleep(0.5)
                    assert claimed == []
                    await admin.set_queue_paused("mail", False)
        assert [t.id for t in claimed] == [task.id]
