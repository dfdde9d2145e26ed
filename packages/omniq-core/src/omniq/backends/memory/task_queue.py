"""The memory task queue: tasks in a :class:`~omniq.backends.memory.store.MemoryStore`.

Every method mutates the store without awaiting, so each is one atomic step
on the store's event loop; ``wait_for_work`` sleeps on an :class:`anyio.Event`
set by the enqueue (or the timer of the next delayed task), never polls.
The operations are the reference of the contract: exact scans of the store
with the helpers of :mod:`omniq.monitoring`, and a worker registry per store.
"""

from __future__ import annotations

import builtins  # MemoryTaskQueue.list shadows ``list`` in the annotations after it
import heapq
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.lowlevel
import msgspec

from omniq.backends.memory.result_storage import MemoryResultStorage
from omniq.backends.memory.store import MemoryStore, copy_task
from omniq.base import BaseResultStorage, BaseTaskQueue, Capability
from omniq.lease import apply_outcome, lease_expired_error
from omniq.models import TERMINAL_STATUSES, Outcome, Task, TaskStatus, new_id, utcnow
from omniq.monitoring import RETRYABLE_STATUSES, reset_for_retry, select_page, stats_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo

__all__ = ["MemoryTaskQueue"]

logger = logging.getLogger("omniq.memory")

_replace = msgspec.structs.replace


class MemoryTaskQueue(BaseTaskQueue):
    """Task queue kept in process memory (tests, single-process apps).

    Args:
        url: name of the process-wide store to use (``None``: ``"default"``);
            ignored when ``store`` is given.
        store: an explicit store to share with other components.
    """

    backend_name: ClassVar[str] = "memory"
    #: WORKER_REGISTRY: every component on the store (the memory engine's "everyone") sees the workers.
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.WORKER_REGISTRY,
            Capability.FLOW_CONTROL,
            Capability.QUEUE_PAUSE,
            Capability.DEPENDENCIES,
        }
    )

    def __init__(self, url: str | None = None, *, store: MemoryStore | None = None) -> None:
        self.url = url
        self.store = MemoryStore.named(url) if store is None else store

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task (or return the id holding its unique key)."""
        await anyio.lowlevel.checkpoint()
        return self._enqueue(task)

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks in one atomic step."""
        await anyio.lowlevel.checkpoint()
        return [self._enqueue(task) for task in tasks]

    def _enqueue(self, task: Task) -> str:
        store = self.store
        if task.unique_key is not None:
            holder = store.unique.get(task.unique_key)
            if holder is not None:
                return holder
        existing = store.tasks.get(task.id)
        if existing is not None and existing.status not in TERMINAL_STATUSES:
            return existing.id  # re-enqueueing a live id is a no-op, like a unique key
        stored = copy_task(task)
        if stored.status is not TaskStatus.PENDING:
            stored.status = TaskStatus.PENDING
        stored.waiting = store.count_waiting(stored) if stored.depends_on else 0
        store.put(stored)
        return stored.id

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks, best first across ``queues``."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        now = utcnow()
        stamp = now.timestamp()
        store.promote_due(stamp)
        deadline = now + timedelta(seconds=lease)
        paused = store.flow.paused
        if paused:
            queues = [queue for queue in queues if queue not in paused]
        claimed: list[Task] = []
        while len(claimed) < limit:
            best: tuple[int, float, int, str] | None = None
            for queue in queues:
                head = store.peek_ready(queue)
                if head is not None and (best is None or head < best):
                    best = head
            if best is None:
                break
            task_id = best[3]
            del store.queued[task_id]  # invalidates the heap entry
            candidate = store.tasks[task_id]
            if candidate.limits is not None:
                parked = store.flow.park(candidate, store.tasks, stamp)
                if parked is not None:  # its limit is full: it waits (delayed, due at its eta)
                    store.put(parked)
                    continue
            task = _replace(
                candidate,
                status=TaskStatus.RUNNING,
                attempts=candidate.attempts + 1,
                lease_token=new_id(),
                lease_expires_at=deadline,
                started_at=now,
                updated_at=now,
                worker_id=worker_id,
            )
            if task.limits is not None:
                task.held = task.rate_reserved = False
            store.put(task)
            store.push_lease(task)
            claimed.append(copy_task(task))
        return claimed

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Sleep until a task is enqueued or becomes due in ``queues``, at most ``timeout`` s."""
        store = self.store
        now = utcnow().timestamp()
        store.promote_due(now)
        paused = store.flow.paused  # a paused queue's ready tasks wake nobody; its resume does
        if any(store.peek_ready(queue) is not None for queue in queues if queue not in paused):
            await anyio.lowlevel.checkpoint()
            return
        next_due = store.next_due()
        if next_due is not None:
            timeout = min(timeout, max(next_due - now, 0.0))
        event = anyio.Event()
        for queue in queues:
            store.work_waiters.setdefault(queue, set()).add(event)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            for queue in queues:
                waiters = store.work_waiters.get(queue)
                if waiters is not None:
                    waiters.discard(event)

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back the deadline of every lease still held."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        now = utcnow()
        deadline = now + timedelta(seconds=lease)
        extended: set[str] = set()
        for task_id, token in leases.items():
            task = store.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.RUNNING or task.lease_token != token:
                continue
            task = _replace(task, lease_expires_at=deadline, updated_at=now)
            store.put(task)
            store.push_lease(task)
            extended.add(task_id)
        return extended

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply token-checked outcomes (and, fused, their results) in one atomic step."""
        await anyio.lowlevel.checkpoint()
        fused = results is not None and self.can_fuse_results(results)
        now = utcnow()
        accepted: list[bool] = []
        for outcome in outcomes:
            ok = self._apply(outcome, now)
            accepted.append(ok)
            if ok and fused and outcome.result is not None:
                self.store.store_result(outcome.result)
        return accepted

    def _apply(self, outcome: Outcome, now: datetime) -> bool:
        task = self.store.tasks.get(outcome.task_id)
        updated = apply_outcome(task, outcome, now) if task is not None else None
        if updated is None:
            return False
        if updated.error is not None:
            updated = copy_task(updated)  # the stored task never shares the caller's error struct
        self.store.put(updated)
        return True

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`MemoryResultStorage` on the same store."""
        return isinstance(results, MemoryResultStorage) and results.store is self.store

    async def get(self, task_id: str) -> Task | None:
        """Return a copy of the task, or None."""
        await anyio.lowlevel.checkpoint()
        task = self.store.tasks.get(task_id)
        return copy_task(task) if task is not None else None

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return copies of several tasks, None for unknown ids."""
        await anyio.lowlevel.checkpoint()
        tasks = self.store.tasks
        return [copy_task(tasks[i]) if i in tasks else None for i in task_ids]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""
        await anyio.lowlevel.checkpoint()
        matching = (
            task
            for task in self.store.tasks.values()
            if (status is None or task.status is status) and (queue is None or task.queue == queue)
        )
        newest = heapq.nlargest(offset + limit, matching, key=lambda t: (t.created_at, t.id))
        return [copy_task(task) for task in newest[offset:]]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue (O(queues x statuses))."""
        await anyio.lowlevel.checkpoint()
        return sum(
            n
            for (q, s), n in self.store.counts.items()
            if (status is None or s is status) and (queue is None or q == queue)
        )

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; its lease, if any, is lost."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        task = store.tasks.get(task_id)
        if task is None or task.status in TERMINAL_STATUSES:
            return False
        now = utcnow()
        store.put(
            _replace(
                task,
                status=TaskStatus.CANCELLED,
                lease_token=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
        return True

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a non-terminal task."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        task = store.tasks.get(task_id)
        if task is None or task.status in TERMINAL_STATUSES:
            return False
        if task.paused != paused:
            store.put(_replace(task, paused=paused, updated_at=utcnow()))
        return True

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete the matching tasks; return how many."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        wanted = None if statuses is None else frozenset(TaskStatus(s) for s in statuses)
        doomed = [
            task
            for task in store.tasks.values()
            if (queue is None or task.queue == queue) and (wanted is None or task.status in wanted)
        ]
        for task in doomed:
            store.remove(task)
        return len(doomed)

    async def recover(self) -> builtins.list[Task]:
        """Requeue (or fail, when out of attempts) RUNNING tasks whose lease deadline passed."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        now = utcnow()
        stamp = now.timestamp()
        recovered: list[Task] = []
        while store.leases and store.leases[0][0] <= stamp:
            _, _, task_id, token = heapq.heappop(store.leases)
            task = store.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.RUNNING or task.lease_token != token:
                continue
            if task.lease_expires_at is not None and task.lease_expires_at > now:
                continue  # extended since; a later heap entry covers it
            cleared: dict[str, Any] = {"lease_token": None, "lease_expires_at": None, "updated_at": now}
            if task.attempts >= task.max_attempts:
                task = _replace(
                    task, status=TaskStatus.FAILED, error=lease_expired_error(task), finished_at=now, **cleared
                )
            else:
                task = _replace(task, status=TaskStatus.PENDING, eta=now, **cleared)
            store.put(task)
            recovered.append(copy_task(task))
        if recovered:
            logger.info("recovered %d task(s) whose lease expired", len(recovered))
        return recovered

    # -- operations --------------------------------------------------------------------------------

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks, newest first, after ``query.after`` (a scan of the store)."""
        await anyio.lowlevel.checkpoint()
        return [copy_task(task) for task in select_page(builtins.list(self.store.tasks.values()), query)]

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Counts, oldest ready age and completions per minute of every queue (a scan of the store)."""
        await anyio.lowlevel.checkpoint()
        return stats_of(builtins.list(self.store.tasks.values()), utcnow())

    async def retry(self, task_id: str) -> Task | None:
        """PENDING again with a fresh attempt budget, unless another live task holds its unique key."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        task = store.tasks.get(task_id)
        if task is None or task.status not in RETRYABLE_STATUSES:
            return None
        if task.unique_key is not None and store.unique.get(task.unique_key, task_id) != task_id:
            return None
        fresh = reset_for_retry(task, utcnow())
        store.put(fresh)  # pushes it onto its queue's ready heap and wakes the waiters
        return copy_task(fresh)

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` in the store's registry for ``ttl`` seconds."""
        await anyio.lowlevel.checkpoint()
        self.store.workers.register(_replace(worker), ttl)  # a copy: the caller keeps its own

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        await anyio.lowlevel.checkpoint()
        self.store.workers.unregister(worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """The store's live workers, oldest first."""
        await anyio.lowlevel.checkpoint()
        return [_replace(worker) for worker in self.store.workers.live()]

    # -- flow control ----------------------------------------------------------------------------------

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` for every component on the store."""
        await anyio.lowlevel.checkpoint()
        if paused:
            self.store.flow.paused.add(queue)
        elif queue in self.store.flow.paused:
            self.store.flow.paused.discard(queue)
            self.store.notify_work(queue)

    async def paused_queues(self) -> builtins.list[str]:
        """The store's paused queues, sorted."""
        await anyio.lowlevel.checkpoint()
        return sorted(self.store.flow.paused)
