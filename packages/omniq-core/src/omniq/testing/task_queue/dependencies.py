"""Dependencies in the engine: a dependant waits, not claimable, until the step that ends its last dependency.

The rules are :meth:`~omniq.base.BaseTaskQueue.enqueue`'s (``Capability.DEPENDENCIES``):
``waiting`` counts the dependencies that were stored and not terminal at
enqueue; ``finish``, ``cancel``, ``recover`` and ``purge`` count one down for
each task waiting on what they end or delete, and a task at 0 is ready. A
dependant is claimed exactly once; workflows' fan-in (a chord's callback over
thousands of members) rests on it.
"""

from __future__ import annotations

import anyio

from omniq.base import BaseTaskQueue, Capability
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing.fixtures import CLOCK_SKEW, connected, make_task, now_ms, requires, wait_until
from omniq.testing.task_queue.kit import LONG, SHORT, QueueFactory, QueueTests, error, recover, token

__all__ = ["DependencyTests"]


def ended(task: Task, kind: OutcomeKind = OutcomeKind.SUCCEEDED) -> Outcome:
    """The outcome a worker sends for a claimed ``task``."""
    err = None if kind is OutcomeKind.SUCCEEDED else error(attempt=task.attempts)
    eta = now_ms(-1 - CLOCK_SKEW) if kind is OutcomeKind.RETRY else None  # due now, on the engine's clock too
    return Outcome(task_id=task.id, lease_token=token(task), kind=kind, error=err, eta=eta)


async def claim_ids(q: BaseTaskQueue, limit: int = 50) -> list[str]:
    """Ids of what one claim of the default queue takes."""
    return [t.id for t in await q.claim_ready(["default"], limit, lease=LONG, worker_id="w1")]


async def waiting_of(q: BaseTaskQueue, task_id: str) -> int:
    """The stored ``waiting`` of a PENDING task."""
    task = await q.get(task_id)
    assert task is not None and task.status is TaskStatus.PENDING, task
    return task.waiting


class DependencyTests(QueueTests):
    """``depends_on`` held in the engine (``Capability.DEPENDENCIES``)."""

    @requires(Capability.DEPENDENCIES)
    async def test_a_dependant_waits_until_its_dependency_finishes(self, task_queue: BaseTaskQueue) -> None:
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await task_queue.enqueue(dep)
        await task_queue.enqueue(child)
        assert await waiting_of(task_queue, child.id) == 1
        [claimed] = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert claimed.id == dep.id, "the dependant is not claimable while its dependency runs"
        assert await claim_ids(task_queue) == []
        assert await task_queue.finish([ended(claimed)]) == [True]
        assert await waiting_of(task_queue, child.id) == 0
        assert await claim_ids(task_queue) == [child.id]
        assert await claim_ids(task_queue) == [], "a dependant is claimed once"

    @requires(Capability.DEPENDENCIES)
    async def test_fan_in_waits_for_the_last_dependency(self, task_queue: BaseTaskQueue) -> None:
        deps = [make_task() for _ in range(6)]
        callback = make_task(depends_on=tuple(d.id for d in deps))
        await task_queue.enqueue_many([*deps, callback])  # the dependencies earlier in the same batch count
        assert await waiting_of(task_queue, callback.id) == 6
        claimed = await task_queue.claim_ready(["default"], 50, lease=LONG, worker_id="w1")
        assert sorted(t.id for t in claimed) == sorted(d.id for d in deps)
        assert await task_queue.finish([ended(t) for t in claimed[:4]]) == [True] * 4  # several in one batch
        assert await waiting_of(task_queue, callback.id) == 2
        assert await claim_ids(task_queue) == []
        assert await task_queue.finish([ended(claimed[4])]) == [True]
        assert await claim_ids(task_queue) == []
        assert await task_queue.finish([ended(claimed[5], OutcomeKind.FAILED)]) == [True]
        assert await claim_ids(task_queue) == [callback.id], "a failed dependency ends the wait too"

    @requires(Capability.DEPENDENCIES)
    async def test_terminal_and_unknown_dependencies_do_not_count(self, task_queue: BaseTaskQueue) -> None:
        done, live = make_task(), make_task()
        await task_queue.enqueue_many([done, live])
        [first] = await task_queue.claim_ready(["default"], 1, lease=LONG, worker_id="w1")
        assert first.id == done.id
        assert await task_queue.finish([ended(first)]) == [True]
        child = make_task(depends_on=(done.id, "f" * 32, live.id))
        ready = make_task(depends_on=(done.id, "e" * 32))
        await task_queue.enqueue_many([child, ready])
        assert await waiting_of(task_queue, child.id) == 1
        assert await waiting_of(task_queue, ready.id) == 0
        assert await claim_ids(task_queue) == [live.id, ready.id]

    @requires(Capability.DEPENDENCIES)
    async def test_a_retry_is_not_an_end(self, task_queue: BaseTaskQueue) -> None:
        dep = make_task(max_retries=1)
        child = make_task(depends_on=(dep.id,))
        await task_queue.enqueue_many([dep, child])
        [claimed] = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert await task_queue.finish([ended(claimed, OutcomeKind.RETRY)]) == [True]
        assert await waiting_of(task_queue, child.id) == 1
        assert await claim_ids(task_queue) == [dep.id]
        again = await task_queue.get(dep.id)
        assert again is not None
        assert await task_queue.finish([ended(again)]) == [True]
        assert await claim_ids(task_queue) == [child.id]

    @requires(Capability.DEPENDENCIES)
    async def test_cancel_recover_and_purge_end_the_wait(self, task_queue: BaseTaskQueue) -> None:
        cancelled, expiring, purged = make_task(queue="deps"), make_task(queue="deps"), make_task(queue="other")
        children = [make_task(depends_on=(dep.id,)) for dep in (cancelled, expiring, purged)]
        await task_queue.enqueue_many([cancelled, expiring, purged, *children])
        assert [await waiting_of(task_queue, c.id) for c in children] == [1, 1, 1]
        assert await task_queue.cancel(cancelled.id)
        assert await claim_ids(task_queue, 1) == [children[0].id]
        [held] = await task_queue.claim_ready(["deps"], 1, lease=SHORT, worker_id="w1")
        assert held.id == expiring.id
        recovered = await wait_until(lambda: recover(task_queue), timeout=10)
        assert [t.status for t in recovered] == [TaskStatus.FAILED], "out of attempts: recovery ends it"
        assert await claim_ids(task_queue, 1) == [children[1].id]
        assert await task_queue.purge(queue="other") == 1
        assert await claim_ids(task_queue, 1) == [children[2].id]

    @requires(Capability.DEPENDENCIES)
    async def test_a_replaced_id_does_not_inherit_the_old_tasks_waits(self, task_queue: BaseTaskQueue) -> None:
        first, second = make_task(), make_task()
        child = make_task(depends_on=(first.id,))
        await task_queue.enqueue_many([first, second, child])
        assert await task_queue.cancel(child.id)  # it ends while still registered on ``first``
        again = make_task(id=child.id, depends_on=(second.id,))
        assert await task_queue.enqueue(again) == child.id  # a terminal id is replaced (see enqueue)
        assert await waiting_of(task_queue, child.id) == 1
        claimed = {t.id: t for t in await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")}
        assert set(claimed) == {first.id, second.id}
        assert await task_queue.finish([ended(claimed[first.id])]) == [True]
        assert await waiting_of(task_queue, child.id) == 1, "the new task does not wait on ``first``"
        assert await claim_ids(task_queue) == []
        assert await task_queue.finish([ended(claimed[second.id])]) == [True]
        assert await claim_ids(task_queue) == [child.id]

    @requires(Capability.DEPENDENCIES)
    async def test_a_waiting_task_is_no_backlog(self, task_queue: BaseTaskQueue) -> None:
        dep = make_task(queue="deps")
        child = make_task(queue="waits", created_at=now_ms(-1000), depends_on=(dep.id,))
        await task_queue.enqueue_many([dep, child])
        stats = {entry.queue: entry for entry in await task_queue.queue_stats()}
        assert stats["waits"].counts["pending"] == 1
        assert stats["waits"].oldest_ready_age is None, "a task waiting on its dependencies is not ready"

    @requires(Capability.DEPENDENCIES)
    async def test_a_waiting_task_keeps_its_pause(self, task_queue: BaseTaskQueue) -> None:
        dep = make_task()
        child = make_task(depends_on=(dep.id,), paused=True)
        await task_queue.enqueue_many([dep, child])
        [claimed] = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert await task_queue.finish([ended(claimed)]) == [True]
        assert await claim_ids(task_queue) == [], "paused: still not claimable"
        assert await task_queue.set_paused(child.id, False)
        assert await claim_ids(task_queue) == [child.id]

    @requires(Capability.DEPENDENCIES)
    async def test_a_waiting_claim_wakes_when_the_last_dependency_finishes(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await task_queue.enqueue_many([dep, child])
        [claimed] = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        async with connected(task_queue_factory) as (other,):
            got: list[Task] = []

            async def claim() -> None:
                got.extend(await other.claim(["default"], 5, lease=LONG, worker_id="w2", wait=9.0))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(claim)
                    await anyio.sleep(0.3)
                    assert await task_queue.finish([ended(claimed)]) == [True]
        assert [t.id for t in got] == [child.id]

    @requires(Capability.DEPENDENCIES)
    async def test_parallel_finishers_ready_a_fan_in_once(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        deps = [make_task() for _ in range(40)]
        callback = make_task(depends_on=tuple(d.id for d in deps))
        await task_queue.enqueue_many([*deps, callback])
        claimed = await task_queue.claim_ready(["default"], 100, lease=LONG, worker_id="w1")
        assert sorted(t.id for t in claimed) == sorted(d.id for d in deps)
        async with connected(task_queue_factory, 3) as others:
            queues = [task_queue, *others]

            async def finish(q: BaseTaskQueue, share: list[Task]) -> None:
                for task in share:
                    assert await q.finish([ended(task)]) == [True]

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i, q in enumerate(queues):
                        tg.start_soon(finish, q, claimed[i :: len(queues)])
            takes: list[str] = []

            async def take(q: BaseTaskQueue) -> None:
                takes.extend(t.id for t in await q.claim_ready(["default"], 10, lease=LONG, worker_id="w"))

            async with anyio.create_task_group() as tg:
                for q in queues:
                    tg.start_soon(take, q)
        assert takes == [callback.id], "the last of parallel finishes readies the dependant, once"
