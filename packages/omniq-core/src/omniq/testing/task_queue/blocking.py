"""Blocking enqueue and reads: from threads with no event loop (the sync API's request path).

Optional capabilities (:attr:`~omniq.base.Capability.BLOCKING_ENQUEUE`,
:attr:`~omniq.base.Capability.BLOCKING_READS`). A queue without one must
refuse with :class:`~omniq.errors.NotSupportedError` (and store nothing). Every call here runs in a worker thread, as a sync caller
would make it, after the queue was connected on the test's loop.
"""

from __future__ import annotations

from functools import partial

import anyio
import pytest

from omniq.base import BaseTaskQueue, Capability
from omniq.errors import NotSupportedError
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing.fixtures import make_task, requires
from omniq.testing.task_queue.kit import LONG, QueueTests, assert_stored_as, claim_one, token

__all__ = ["BlockingEnqueueTests", "BlockingReadTests"]


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


class BlockingReadTests(QueueTests):
    """``get_blocking``: what ``get`` reads, from any thread; refused without the capability."""

    async def test_without_the_capability_get_blocking_refuses(self, task_queue: BaseTaskQueue) -> None:
        if Capability.BLOCKING_READS in type(task_queue).capabilities:
            pytest.skip(f"{type(task_queue).__name__} has the {Capability.BLOCKING_READS} capability")
        task = make_task()
        await task_queue.enqueue(task)
        with pytest.raises(NotSupportedError):
            await anyio.to_thread.run_sync(task_queue.get_blocking, task.id)

    @requires(Capability.BLOCKING_READS)
    async def test_get_blocking_reads_what_get_reads_in_every_state(self, task_queue: BaseTaskQueue) -> None:
        pending = [make_task(priority=i % 3, payload=bytes([i]), queue="reads") for i in range(5)]
        for task in pending:
            await task_queue.enqueue(task)
        running = await claim_one(task_queue, "reads")
        done = await claim_one(task_queue, "reads")
        outcome = Outcome(task_id=done.id, lease_token=token(done), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([outcome]) == [True]
        read: dict[str, Task | None] = {}

        async def get(task_id: str) -> None:
            read[task_id] = await anyio.to_thread.run_sync(task_queue.get_blocking, task_id)

        unknown = make_task().id
        async with anyio.create_task_group() as group:
            for task_id in [*(t.id for t in pending), unknown]:
                group.start_soon(get, task_id)
        assert read[unknown] is None
        for task in pending:
            assert read[task.id] is not None and read[task.id] == await task_queue.get(task.id)
        statuses = {read[t.id].status for t in pending}  # type: ignore[union-attr]
        assert statuses == {TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED}
        assert read[running.id].lease_token == token(running)  # type: ignore[union-attr]
        assert read[done.id].status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
