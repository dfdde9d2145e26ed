"""Fork safety: a forked child (a process-pool task that enqueues) uses the queue it inherited."""

from __future__ import annotations

import anyio

from omniq.base import BaseTaskQueue, Capability
from omniq.testing.fixtures import ForkedChild, make_task, requires
from omniq.testing.task_queue.kit import QueueTests

__all__ = ["ForkSafetyTests"]


class ForkSafetyTests(QueueTests):
    """A queue connected before a fork; runs when the backend declares ``Capability.FORK_SAFE``."""

    @requires(Capability.FORK_SAFE)
    async def test_a_forked_child_enqueues_through_the_inherited_queue(self, task_queue: BaseTaskQueue) -> None:
        """A forked child enqueues through the queue it inherited, and the parent's queue still works.

        A process-pool task that enqueues runs in a forked child holding the worker's connected
        queue: the child's enqueue and close must work, and the parent's connections must too.
        """
        first, from_child, last = make_task(), make_task(), make_task()

        def child() -> str:
            async def enqueue() -> None:
                with anyio.fail_after(20):
                    await task_queue.enqueue(from_child)
                    await task_queue.close()

            anyio.run(enqueue)
            return "ok"

        await task_queue.enqueue(first)
        outcome = await ForkedChild(child).outcome()
        assert outcome == ("ok", 0)
        with anyio.fail_after(20):  # a parent connection the child used or closed would hang or fail here
            await task_queue.enqueue(last)
            assert {t.id for t in await task_queue.list(limit=10)} == {first.id, from_child.id, last.id}
