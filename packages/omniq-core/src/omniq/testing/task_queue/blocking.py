"""Blocking enqueue: tasks stored from threads with no event loop (the sync API's request path).

An optional capability (:attr:`~omniq.base.Capability.BLOCKING_ENQUEUE`). A
queue without it must refuse with :class:`~omniq.errors.NotSupportedError`
and store nothing. Every call here runs in a worker thread, as a sync caller
would make it, after the queue was connected on the test's loop.
"""

from __future__ import annotations

from functools import partial

import anyio
import pytest

from omniq.base import BaseTaskQueue, Capability
from omniq.errors import NotSupportedError
from omniq.models import Task
from omniq.testing.fixtures import make_task, requires
from omniq.testing.task_queue.kit import LONG, QueueTests, assert_stored_as

__all__ = ["BlockingEnqueueTests"]


async def in_thread(queue: BaseTaskQueue, tasks: list[Task]) -> list[str]:
    """``queue.enqueue_blocking(tasks)``, called from a worker thread."""
    return await anyio.to_thread.run_sync(partial(queue.enqueue_blocking, tasks))


class BlockingEnqueueTests(QueueTests):
    """``enqueue_blocking``: the rules of ``enqueue_many``, from any thread; refused without the capability."""

    async def test_without_the_capability_nothing_is_enqueued(self, task_queue: BaseTaskQueue) -> None:
        if Capability.BLOCKING_ENQUEUE in type(task_queue).capabilities:
            pytest.skip(f"{type(task_queue).__name__} has the {Capability.BLOCKING_ENQUEUE} capability")
        task = make_task()
        with pytest.raises(NotSupportedError):
            await in_thread(task_queue, [task])
        assert await task_queue.get(task.id) is None

    @requires(Capability.BLOCKING_ENQUEUE)
    async def test_threads_enqueue_at_once_and_every_task_is_kept(self, task_queue: BaseTaskQueue) -> None:
        batches = [[make_task(priority=t % 2, payload=bytes([t, i])) for i in range(5)] for t in range(4)]
        singles = [[make_task(queue="mail", max_retries=3, timeout=2.5)] for _ in range(6)]
        returned: list[list[str]] = []

        async def enqueue(tasks: list[Task]) -> None:
            returned.append(await in_thread(task_queue, tasks))

        async with anyio.create_task_group() as group:
            for tasks in batches + singles:
                group.start_soon(enqueue, tasks)
        assert sorted(returned) == sorted([t.id for t in tasks] for tasks in batches + singles)
        assert await in_thread(task_queue, []) == []
        everything = [t for tasks in batches + singles for t in tasks]
        for task, stored in zip(everything, await task_queue.get_many([t.id for t in everything]), strict=True):
            assert_stored_as(task, stored)
        claimed = await task_queue.claim_ready(["default"], 50, lease=LONG, worker_id="w1")
        assert sorted(t.id for t in claimed) == sorted(t.id for tasks in batches for t in tasks)
        for tasks in batches:  # each batch in order, within a priority
            positions = [next(i for i, c in enumerate(claimed) if c.id == t.id) for t in tasks]
            assert positions == sorted(positions)
        mail = await task_queue.claim_ready(["mail"], 50, lease=LONG, worker_id="w1")
        assert sorted(t.id for t in mail) == sorted(t.id for [t] in singles)

    @requires(Capability.BLOCKING_ENQUEUE)
    async def test_unique_keys_hold_across_both_paths(self, task_queue: BaseTaskQueue) -> None:
        first = make_task(unique_key="report-7")
        assert await task_queue.enqueue(first) == first.id
        again, fresh = make_task(unique_key="report-7"), make_task(unique_key="report-8")
        assert await in_thread(task_queue, [again]) == [first.id]
        assert await in_thread(task_queue, [fresh]) == [fresh.id]
        assert await task_queue.get(again.id) is None
        later = make_task(unique_key="report-8")
        assert await task_queue.enqueue(later) == fresh.id

    @requires(Capability.BLOCKING_ENQUEUE)
    async def test_a_blocking_enqueue_wakes_a_waiting_claimer(self, task_queue: BaseTaskQueue) -> None:
        task = make_task()
        woke = anyio.Event()

        async def wait() -> None:
            await task_queue.wait_for_work(["default"], 30)
            woke.set()

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.sleep(0.2)  # the claimer is waiting
            await in_thread(task_queue, [task])
            with anyio.fail_after(10):  # far below the wait's own 30 s
                await woke.wait()
        claimed = await task_queue.claim_ready(["default"], 5, lease=LONG, worker_id="w1")
        assert [t.id for t in claimed] == [task.id]
