"""The file task queue: tasks as files in a directory; a claim is an atomic rename.

Each method is one batch operation run in a worker thread (one thread hop per
batch, see :meth:`~.connection.FileRoot.run`); the operations themselves
live by concept in :mod:`.enqueue`, :mod:`.leases`, :mod:`.management`,
:mod:`.flow` (flow control and queue pause), :mod:`.dependencies` (tasks
waiting on others), :mod:`.overview` (pages and statistics), :mod:`.workers`
(the worker registry) and :mod:`.task_files`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import anyio

from omniq.backends.file import enqueue, flow, leases as lease_steps, management, overview, workers
from omniq.backends.file.connection import SETTINGS_OPTIONS, FileRoot, RootOptions
from omniq.backends.file.result_files import ResultFiles
from omniq.backends.file.result_storage import FileResultStorage
from omniq.backends.file.task_files import TaskFiles
from omniq.backends.file.wakeups import WORK, result_channel
from omniq.base import BaseResultStorage, BaseTaskQueue, Capability
from omniq.errors import redact_url
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping, Sequence

    from typing_extensions import Unpack

    from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo


__all__ = ["FileTaskQueue"]

#: outcomes that put the task back to PENDING (a waiting worker may want it).
_REQUEUING = frozenset({OutcomeKind.RETRY, OutcomeKind.RELEASE, OutcomeKind.RESCHEDULE})


class FileTaskQueue(BaseTaskQueue):
    """Task queue in a directory; claims are atomic renames.

    Takes the options of its :attr:`root`, a
    :class:`~omniq.backends.file.connection.FileRoot`.
    """

    backend_name: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.DURABLE,
            Capability.MULTI_PROCESS,
            Capability.FUSED_RESULTS,
            Capability.WORKER_REGISTRY,
            Capability.BLOCKING_READS,
            Capability.FLOW_CONTROL,
            Capability.QUEUE_PAUSE,
            Capability.DEPENDENCIES,
            Capability.BLOCKING_ENQUEUE,
        }
    )

    settings_options: ClassVar[Mapping[str, str]] = SETTINGS_OPTIONS

    def __init__(self, url: str | None = None, **options: Unpack[RootOptions]) -> None:
        self.root = FileRoot(url, **options)
        self.url = self.root.url
        self._files = TaskFiles(self.root.store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact_url(self.url)!r})"

    async def connect(self) -> None:
        """Create the folders (idempotent)."""
        await self.root.connection.connect()

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""
        await self.root.connection.close()

    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task (or return the id holding its unique key)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks in one thread hop (one fsync per file, one per folder)."""
        if not tasks:
            return []
        ids = await self.root.run(enqueue.enqueue_many, self._files, tasks)
        self.root.notify(WORK)
        return ids

    def enqueue_blocking(self, tasks: Sequence[Task]) -> list[str]:
        """:meth:`enqueue_many` in the calling thread (waking this process's waiters on every thread)."""
        if not tasks:
            return []
        ids = self.root.run_blocking(enqueue.enqueue_many, self._files, tasks)
        self.root.notifier.notify_every_thread([WORK])
        return ids

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` due tasks by renaming them into ``tasks/running/``."""
        return await self.root.run(lease_steps.claim, self._files, queues, limit, lease, worker_id)

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when woken by an enqueue in this thread, when a due task shows up, or after ``timeout``.

        A paused queue's due tasks do not count; its resume is seen by the next poll. A task due
        before the next poll (a retry, a rate slot) is checked for at its due time.
        """
        with self.root.watch(WORK) as event, anyio.move_on_after(timeout):
            while True:
                due = await self.root.run(self._files.next_due, queues)
                if due == 0.0:
                    return
                with anyio.move_on_after(self.root.poll_interval if due is None else min(due, self.root.poll_interval)):
                    await event.wait()
                if event.is_set():
                    return

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back the deadline of every lease still held."""
        if not leases:
            return set()
        return await self.root.run(lease_steps.extend, self._files, leases, lease)

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`FileResultStorage` on the same root."""
        return isinstance(results, FileResultStorage) and results.root.same_root(self.root)

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply token-checked outcomes; fused, results are written under the same task lock."""
        if not outcomes:
            return []
        fused = results is not None and self.can_fuse_results(results)
        result_files = ResultFiles(self.root.store) if fused else None
        accepted, woke = await self.root.run(lease_steps.finish, self._files, outcomes, result_files)
        self._notify_finished(outcomes, accepted, fused, woke)
        return accepted

    async def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        results: BaseResultStorage | None = None,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[list[bool], list[Task]]:
        """:meth:`finish` handing the slots it frees to held tasks leased here, else a claim; one thread hop."""
        if not outcomes:
            return [], await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
        fused = results is not None and self.can_fuse_results(results)
        result_files = ResultFiles(self.root.store) if fused else None
        accepted, claimed, woke = await self.root.run(
            lease_steps.finish_and_claim, self._files, outcomes, result_files, queues, limit, lease, worker_id
        )
        self._notify_finished(outcomes, accepted, fused, woke)
        return accepted, claimed

    def _notify_finished(self, outcomes: Sequence[Outcome], accepted: list[bool], fused: bool, woke: bool) -> None:
        """Wake the waiters for the results written and for tasks the finish made ready."""
        done = [outcome for ok, outcome in zip(accepted, outcomes, strict=True) if ok]
        channels = [result_channel(o.task_id) for o in done if o.result] if fused else []
        if woke or any(o.kind in _REQUEUING for o in done):
            channels.append(WORK)
        self.root.notify(*channels)  # one notifier per root: the result storage's waiters hear it too

    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        return (await self.get_many([task_id]))[0]

    def get_blocking(self, task_id: str) -> Task | None:
        """:meth:`get` in the calling thread: the same file read."""
        return self.root.run_blocking(self._files.get_many, [task_id])[0]

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one thread hop."""
        return await self.root.run(self._files.get_many, task_ids)

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""
        return await self.root.run(self._files.count, status, queue)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; its lease, if any, is lost."""
        cancelled = await self.root.run(management.cancel, self._files, task_id)
        if cancelled:
            self.root.notify(WORK)  # a limited holder's slot may have woken a held task, or a dependant be ready
        return cancelled

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        changed = await self.root.run(management.set_paused, self._files, task_id, paused)
        if changed and not paused:
            self.root.notify(WORK)
        return changed

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all by default); return how many."""
        count, woke = await self.root.run(management.purge, self._files, queue, statuses)
        if woke:  # a task waiting on a deleted one became ready
            self.root.notify(WORK)
        return count

    async def recover(self) -> list[Task]:
        """Requeue running tasks whose lease passed; also repairs what a crashed process left behind."""
        recovered, woke = await self.root.run(lease_steps.recover, self._files)
        if recovered or woke:  # requeued tasks, slots of limited ones freed, dependants made ready
            self.root.notify(WORK)
        return recovered

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` for every process on the root (a marker in its pending folder)."""
        await self.root.run(flow.set_queue_paused, self._files, queue, paused)
        if not paused:
            self.root.notify(WORK)

    async def paused_queues(self) -> builtins.list[str]:
        """The paused queues, sorted."""
        return await self.root.run(flow.paused_queues, self._files)

    # -- operations: scans of the folders (see :mod:`.overview`) and files under workers/ ---------------

    async def list_page(self, query: TaskQuery) -> list[Task]:
        """A page of tasks, newest first, after ``query.after`` (reads the bodies the filters select)."""
        return await self.root.run(overview.list_page, self._files, query)

    async def queue_stats(self) -> list[QueueStats]:
        """Per queue: counts, oldest ready age (from the pending names), completions per minute."""
        return await self.root.run(overview.queue_stats, self._files)

    async def retry(self, task_id: str) -> Task | None:
        """A FAILED, CANCELLED or EXPIRED task back to its queue with a fresh attempt budget."""
        task = await self.root.run(management.retry, self._files, task_id)
        if task is not None:
            self.root.notify(WORK)
        return task

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker``'s file, to expire ``ttl`` seconds from now."""
        await self.root.run(workers.register_worker, self.root.store, worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker's file."""
        await self.root.run(workers.unregister_worker, self.root.store, worker_id)

    async def list_workers(self) -> list[WorkerInfo]:
        """Every process's live workers, oldest first (expired files are removed)."""
        return await self.root.run(workers.list_workers, self.root.store)

    # Last in the class: from here on the name ``list`` is this method, not the builtin.
    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> builtins.list[Task]:
        """Return tasks filtered by status and queue, newest first (reads every matching file)."""
        return await self.root.run(self._files.list_tasks, status, queue, limit, offset)
