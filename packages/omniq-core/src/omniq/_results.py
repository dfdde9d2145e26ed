"""Waiting for a result, riding out reconnects; never waiting for a task that has finished.

A task's outcome reaches the result storage after the queue accepted it
(``omniq.worker.runner`` explains the order). If a worker dies between the
two writes, the queue shows the task terminal without a result: a reader
then makes the result from the task record, and a waiter re-reads the
queue every ``RESULT_WAIT_RECHECK_SECONDS``, so it never waits for ever.
A waiter that finds a SUCCEEDED record without a result is between the two
writes far more often than after a death there: it gives the value
``RESULT_WRITE_GRACE_SECONDS`` to arrive before it settles for the record.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from omniq.constants import RESULT_WAIT_RECHECK_SECONDS, RESULT_WRITE_GRACE_SECONDS
from omniq.errors import BackendUnavailableError, TaskNotFoundError
from omniq.models import Task, TaskResult, TaskStatus

if TYPE_CHECKING:
    from omniq._components import Components

__all__ = ["wait_for_result"]

logger = logging.getLogger("omniq.app")


async def wait_for_result(components: Components, task_id: str, timeout: float | None) -> TaskResult | None:
    """Wait at most ``timeout`` seconds (None: no limit) for the result; None if the time runs out first.

    Raises:
        TaskNotFoundError: there is neither a result nor a task with this id:
            nothing could ever finish it.
        BackendUnavailableError: the backend was still unavailable when the time ran out.
    """
    deadline = None if timeout is None else anyio.current_time() + timeout
    while True:
        outcome = await _try_wait(components, task_id, deadline)
        if not isinstance(outcome, BackendUnavailableError):
            return outcome
        # A waiter rides out a reconnect; if its time runs out first, it learns why.
        if deadline is not None and anyio.current_time() >= deadline:
            raise outcome
        logger.info("waiting for result %s: backend unavailable (%s); retrying", task_id, outcome)
        await anyio.sleep(0.25 if deadline is None else max(0.0, min(0.25, deadline - anyio.current_time())))


async def _try_wait(
    components: Components, task_id: str, deadline: float | None
) -> TaskResult | BackendUnavailableError | None:
    """Wait for the result until ``deadline``; an unavailable backend is returned, not raised."""
    storage = components.result_storage
    try:
        result = await storage.get(task_id)
        if result is None:
            task = await components.task_queue.get(task_id)
            if task is None:
                result = await storage.get(task_id)  # (finished and purged since the first read)
                if result is None:
                    raise TaskNotFoundError(f"no task with id {task_id!r}: there is no result to wait for")
            elif task.status.is_terminal:
                result = await storage.get(task_id) or await _settle(components, task, deadline)
        while result is None:
            remaining = None if deadline is None else deadline - anyio.current_time()
            if remaining is not None and remaining <= 0:
                return None
            step = RESULT_WAIT_RECHECK_SECONDS if remaining is None else min(remaining, RESULT_WAIT_RECHECK_SECONDS)
            result = await storage.wait(task_id, step)
            if result is None:
                task = await components.task_queue.get(task_id)
                if task is not None and task.status.is_terminal:
                    result = await storage.get(task_id) or await _settle(components, task, deadline)
        return result
    except BackendUnavailableError as exc:
        return exc


async def _settle(components: Components, task: Task, deadline: float | None) -> TaskResult:
    """The result of a terminal ``task`` whose storage had none: its value if it comes within the grace, else the record's."""
    if task.status is TaskStatus.SUCCEEDED:
        grace = RESULT_WRITE_GRACE_SECONDS
        if deadline is not None:
            grace = min(grace, deadline - anyio.current_time())
        if grace > 0:
            stored = await components.result_storage.wait(task.id, grace)
            if stored is not None:
                return stored
    return TaskResult.from_task(task, finished_at=task.finished_at)
