"""The task queue's optional operations, each with a default built on the contract's core methods.

An operator's view (pages of tasks, per-queue statistics, retrying a
failed task), the worker registry and pausing whole queues. Engines
override them with one query or script each; the defaults are correct and
slow (they read every task), keep workers in this process only, and refuse
to pause queues. :class:`~omniq.base.BaseTaskQueue` inherits them.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, cast

from omniq.base.component import Component
from omniq.capabilities import Capability
from omniq.models import Task, utcnow
from omniq.monitoring import (
    LOCAL_WORKERS,
    RETRYABLE_STATUSES,
    QueueStats,
    TaskQuery,
    WorkerInfo,
    reset_for_retry,
    scan_tasks,
    select_page,
    stats_of,
)

if TYPE_CHECKING:
    from omniq.base.task_queue import BaseTaskQueue

__all__ = ["QueueOperations"]


class QueueOperations(Component):
    """The optional part of :class:`~omniq.base.BaseTaskQueue`: operator calls, worker registry, queue pause."""

    kind = "task queue"

    if TYPE_CHECKING:  # the contract's core methods these defaults are built on

        async def get(self, task_id: str) -> Task | None:
            """See :meth:`~omniq.base.BaseTaskQueue.get`."""

        async def enqueue(self, task: Task) -> str:
            """See :meth:`~omniq.base.BaseTaskQueue.enqueue`."""

    # -- operations: optional, each with a default built on the methods above ------------------------

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks matching ``query``, newest first, paged by key (see :class:`TaskQuery`).

        The default reads every task through :meth:`list` and selects in
        Python: correct, slow on a large queue. Engines override it with one
        query over ``(created_at, id)``.
        """
        return select_page(await scan_tasks(cast("BaseTaskQueue", self)), query)

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Per queue: counts by status, the oldest ready task's age, completions per minute.

        One entry per queue that holds at least one task, sorted by name; see
        :class:`QueueStats`. The default reads every task (slow; override).
        """
        return stats_of(await scan_tasks(cast("BaseTaskQueue", self)), utcnow())

    async def retry(self, task_id: str) -> Task | None:
        """Run a FAILED, CANCELLED or EXPIRED task again, with a fresh attempt budget.

        The task becomes PENDING and ready now (``eta`` None, ``paused``
        False) with ``attempts`` 0, and ``error``, ``started_at``,
        ``finished_at``, ``worker_id`` and the lease cleared; its id, arguments
        and options stay, so its event history continues; it keeps its
        ``created_at``, so among ready tasks of its priority it takes the place
        its creation gave it (as a retry after a failure does). A task in any other
        status (or unknown) is left alone. Engines do it atomically; the
        default reads the task and stores the reset copy through
        :meth:`enqueue`'s replacement of a terminal id.

        Returns:
            the task as it is now, or None when it was unknown or not retryable.
        """
        task = await self.get(task_id)
        if task is None or task.status not in RETRYABLE_STATUSES:
            return None
        fresh = reset_for_retry(task, utcnow())
        return fresh if await self.enqueue(fresh) == task_id else None

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` (by id), to expire ``ttl`` seconds from now (engine clock).

        Engines with :attr:`Capability.WORKER_REGISTRY` keep it in the engine,
        where every process sees it. The default keeps it in this process only.
        """
        LOCAL_WORKERS.register(worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped; unknown ids are ignored."""
        LOCAL_WORKERS.unregister(worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Workers registered and not expired, oldest ``started_at`` first."""
        return LOCAL_WORKERS.live()

    # -- flow control: optional (omniq.flow_control) -------------------------------------------------

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a whole queue, for every worker of the engine (:attr:`Capability.QUEUE_PAUSE`).

        Claims and :meth:`wait_for_work` skip a paused queue (its ready tasks
        do not wake a worker); tasks already running are not touched; enqueue
        still stores. Pausing a paused queue, or resuming one that is not, does nothing.

        Raises:
            NotSupportedError: the default, for engines without the capability.
        """
        raise self._lacks(Capability.QUEUE_PAUSE, "pause queues")

    async def paused_queues(self) -> builtins.list[str]:
        """The names of the paused queues, sorted (none without :attr:`Capability.QUEUE_PAUSE`)."""
        return []
