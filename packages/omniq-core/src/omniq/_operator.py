"""The operator's methods of :class:`~omniq.AsyncOmniQ`: cancel and retry tasks, schedules, queues, workers.

A base class of the app, apart so the app module stays registration, producing and reading; every
method goes through the app's :class:`~omniq._components.Components`, as the rest of the app does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from omniq.models import TaskStatus
from omniq.scheduling import Schedule
from omniq.workflows import WorkflowHandle, cancel_workflow, find_workflow

if TYPE_CHECKING:
    from omniq._components import Components
    from omniq.monitoring import QueueStats, WorkerInfo

__all__ = ["OperatorMethods"]


class OperatorMethods:
    """Cancel, retry, schedules, purge, queue statistics and pause, and the worker list."""

    _components: Components

    async def cancel(self, task_id: str) -> bool:
        """Cancel a pending or running task (a recurring one stops recurring); False if unknown or finished.

        A running task's worker loses its lease: its outcome is not recorded and it stops the task at its
        next heartbeat. Waiters on the result receive a CANCELLED result. Given a workflow's id
        (:mod:`omniq.workflows`), every member not yet finished is cancelled.
        """
        if await self._components.cancel(task_id):
            return True
        return await cancel_workflow(self, task_id)  # type: ignore[arg-type]

    async def workflow(self, workflow_id: str) -> WorkflowHandle | None:
        """The handle of an enqueued workflow (chain, group, chord), for its result; None if unknown or expired."""
        return await find_workflow(self, workflow_id)  # type: ignore[arg-type]

    async def retry(self, task_id: str) -> bool:
        """Run a FAILED, CANCELLED or EXPIRED task again with a fresh attempt budget; False if not retried.

        Its old result is deleted (``get_result(wait=True)`` waits for the new run) and a REQUEUED event
        follows the old attempts' events. Refused when another live task holds its ``unique_key``.
        """
        return await self._components.retry(task_id)

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """Return the schedule of a recurring task (its id is the schedule id)."""
        task = await self._components.get_task(schedule_id)
        return Schedule.from_task(task) if task is not None and task.recurring else None

    async def pause_schedule(self, schedule_id: str) -> bool:
        """Stop a recurring task from running until :meth:`resume_schedule`; False if unknown or ended."""
        return await self._components.set_paused(schedule_id, True)

    async def resume_schedule(self, schedule_id: str) -> bool:
        """Let a paused recurring task run again; False if unknown or ended."""
        return await self._components.set_paused(schedule_id, False)

    async def cancel_schedule(self, schedule_id: str) -> bool:
        """End a recurring task for good."""
        return await self.cancel(schedule_id)

    async def purge(
        self, *, queue: str | None = None, statuses: TaskStatus | str | Sequence[TaskStatus | str] | None = None
    ) -> int:
        """Delete tasks (all, or by queue / statuses) and, when purging everything, results and events."""
        return await self._components.purge(queue, statuses)

    async def queue_stats(self) -> list[QueueStats]:
        """Per queue holding tasks: counts by status, oldest ready age, completions per minute (QueueStats)."""
        return await self._components.queue_stats()

    async def list_workers(self) -> list[WorkerInfo]:
        """Live worker processes, oldest first; this process's only without ``Capability.WORKER_REGISTRY``."""
        return await self._components.list_workers()

    @property
    def shared_worker_registry(self) -> bool:
        """True when workers register in the engine, seen by every process and host; False: this process's only."""
        return self._components.shared_worker_registry

    async def pause_queue(self, queue: str) -> None:
        """Stop every worker claiming from ``queue`` until :meth:`resume_queue`; running tasks go on.

        Enqueue still stores. Kept in the engine (``Capability.QUEUE_PAUSE``), so it holds for every
        worker process and host.

        Raises:
            NotSupportedError: the task queue cannot pause queues.
        """
        await self._components.set_queue_paused(queue, True)

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from a paused ``queue`` again (nothing happens if it is not paused)."""
        await self._components.set_queue_paused(queue, False)

    async def paused_queues(self) -> list[str]:
        """The names of the paused queues, sorted (none on a task queue that cannot pause them)."""
        return await self._components.paused_queues()
