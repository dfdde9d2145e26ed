"""The worker registry: workers register, refresh at each heartbeat, expire, and are seen by everyone.

With ``Capability.WORKER_REGISTRY`` the entries live in the engine, so every
queue on the same store (every process, every host) lists them; without it
the default keeps this process's workers (:data:`omniq.monitoring.LOCAL_WORKERS`).
The default registry is shared by the whole process, so these tests only
look at the workers they registered themselves.
"""

from __future__ import annotations

import os

import anyio
import msgspec
import pytest

from omniq.base import BaseTaskQueue, Capability
from omniq.monitoring import LOCAL_WORKERS, WorkerInfo
from omniq.testing.fixtures import ForkedChild, connected, make_worker, now_ms, requires, wait_until
from omniq.testing.task_queue.kit import LONG, QueueFactory, QueueTests

__all__ = ["WorkerRegistryTests", "make_worker"]  # make_worker: also omniq.testing.make_worker


async def listed(q: BaseTaskQueue, *workers: WorkerInfo) -> list[WorkerInfo]:
    """The live workers among ``workers``, as ``q`` lists them (in its order)."""
    mine = {worker.id for worker in workers}
    return [worker for worker in await q.list_workers() if worker.id in mine]


class WorkerRegistryTests(QueueTests):
    """``register_worker``, ``unregister_worker`` and ``list_workers``."""

    async def test_register_list_refresh_unregister(self, task_queue: BaseTaskQueue) -> None:
        young, old = make_worker(-5), make_worker(-60, hostname="host-2", pid=1, queues=("default",))
        await task_queue.register_worker(young, LONG)
        await task_queue.register_worker(old, LONG)
        assert await listed(task_queue, young, old) == [old, young]  # oldest started_at first, fields unchanged
        refreshed = msgspec.structs.replace(young, heartbeat_at=now_ms(), in_flight=0, processed=41)
        await task_queue.register_worker(refreshed, LONG)
        assert await listed(task_queue, young, old) == [old, refreshed]
        await task_queue.unregister_worker(old.id)
        assert await listed(task_queue, young, old) == [refreshed]
        await task_queue.unregister_worker(old.id)  # unknown ids are ignored
        await task_queue.unregister_worker(refreshed.id)
        assert await listed(task_queue, young, old) == []

    async def test_an_entry_not_refreshed_within_its_ttl_expires(self, task_queue: BaseTaskQueue) -> None:
        stale, kept = make_worker(-2), make_worker(-1)
        await task_queue.register_worker(stale, 1.0)
        await task_queue.register_worker(kept, 1.0)
        await task_queue.register_worker(kept, LONG)  # a heartbeat pushes the expiry back

        async def expired() -> bool:
            return await listed(task_queue, stale, kept) == [kept]

        await wait_until(expired, timeout=15, message="a worker outlived its ttl")
        await task_queue.register_worker(stale, LONG)  # a late heartbeat registers it again
        assert await listed(task_queue, stale, kept) == [stale, kept]

    async def test_queues_on_one_store_see_each_others_workers(self, task_queue_factory: QueueFactory) -> None:
        """Two queues from the factory (two connections): each lists what the other registered.

        With the registry in the engine the entries are shared through it; without it, the
        default registry is this process's, which both queues live in.
        """
        async with connected(task_queue_factory, 2) as (one, two):
            worker = make_worker()
            await one.register_worker(worker, LONG)
            assert await listed(two, worker) == [worker]
            await two.unregister_worker(worker.id)
            assert await listed(one, worker) == []

    async def test_without_the_capability_the_default_keeps_this_process_workers(
        self, task_queue: BaseTaskQueue
    ) -> None:
        if Capability.WORKER_REGISTRY in type(task_queue).capabilities:
            pytest.skip(f"{type(task_queue).__name__} keeps its workers in the engine (the other tests cover it)")
        worker = make_worker()
        await task_queue.register_worker(worker, LONG)
        try:
            assert worker in LOCAL_WORKERS.live()
        finally:
            await task_queue.unregister_worker(worker.id)
        assert worker not in LOCAL_WORKERS.live()

    @requires(Capability.WORKER_REGISTRY, Capability.MULTI_PROCESS)
    async def test_a_worker_in_another_process_is_listed(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        """A worker registered by another process (a queue of its own on the same store) is listed here."""
        worker = make_worker(-1, pid=os.getpid() + 1)

        def child() -> str:
            async def register() -> None:
                with anyio.fail_after(20):
                    async with connected(task_queue_factory) as (own,):
                        await own.register_worker(worker, LONG)

            anyio.run(register)
            return "ok"

        assert await ForkedChild(child).outcome() == ("ok", 0)
        assert await listed(task_queue, worker) == [worker]
        await task_queue.unregister_worker(worker.id)
        assert await listed(task_queue, worker) == []
