"""Waiting for work: an idle worker wakes on an enqueue from another connection, and times out."""

from __future__ import annotations

import anyio

from omniq.base import BaseTaskQueue
from omniq.testing.fixtures import connected, make_task
from omniq.testing.task_queue.kit import LONG, QueueFactory, QueueTests, claim_during

__all__ = ["WaitingTests"]


class WaitingTests(QueueTests):
    """``wait_for_work`` and ``claim(wait=...)``."""

    async def test_wait_for_work_wakes_on_enqueue_from_another_instance(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (waiter, producer):
            woke = anyio.Event()

            async def wait() -> None:
                await waiter.wait_for_work(["wake"], 60)
                woke.set()

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await anyio.sleep(0.5)  # let the waiter block first
                    await producer.enqueue(make_task(queue="wake"))
                    await woke.wait()
            assert [t.id for t in await waiter.claim_ready(["wake"], 1, lease=LONG, worker_id="w1")]

    async def test_wait_for_work_returns_at_once_when_work_is_ready(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        with anyio.fail_after(10):
            await task_queue.wait_for_work(["default"], 60)

    async def test_wait_for_work_times_out(self, task_queue: BaseTaskQueue) -> None:
        with anyio.fail_after(10):
            await task_queue.wait_for_work(["idle"], 0.3)

    async def test_claim_with_wait_picks_up_task_enqueued_meanwhile(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (claimer, producer):
            task = make_task(queue="later")
            claimed = await claim_during(claimer, "later", lambda: producer.enqueue(task))
            assert [t.id for t in claimed] == [task.id]

    async def test_claim_with_wait_returns_empty_after_wait(self, task_queue: BaseTaskQueue) -> None:
        with anyio.fail_after(10):
            assert await task_queue.claim(["idle"], 5, lease=LONG, worker_id="w1", wait=0.3) == []
