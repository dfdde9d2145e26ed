"""Eager mode (``Settings(eager=True)``, ``OMNIQ_EAGER=1``): a task runs at enqueue, in the enqueuing process.

For tests of code that enqueues. ``enqueue`` (and ``enqueue_many``) runs the function at once,
through the worker's own :func:`~omniq.worker.runner.execute` (its retry policy, timeout and
errors), repeating retries one after the other without the back-off, and stores the result, so
``get_result(task_id)`` answers as soon as ``enqueue`` returns; no worker is needed. The task
itself is not queued (``get_task`` returns None), limits and schedules do not apply (a recurring
task runs once), and dependencies are read from the results of tasks that ran eagerly before
(one that did not succeed fails the task with ``DependencyFailed``). Not for production: the
caller waits for the task, in its own process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.models import OutcomeKind, TaskError, TaskResult, TaskStatus, new_id, utcnow
from omniq.worker.executors import Executor
from omniq.worker.runner import execute

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ
    from omniq.models import Task

__all__ = ["run_eagerly"]

#: outcomes after which an eager task runs again at once.
_AGAIN = frozenset({OutcomeKind.RETRY, OutcomeKind.RELEASE})


async def run_eagerly(app: AsyncOmniQ, task: Task) -> str:
    """Run ``task`` now, store its result, and return its id."""
    await app.connect()
    result = await _dependencies_failed(app, task)
    if result is None:
        executor = Executor(1)
        task = msgspec.structs.replace(task, interval=None, cron=None)
        while True:
            now = utcnow()
            task = msgspec.structs.replace(
                task, status=TaskStatus.RUNNING, attempts=task.attempts + 1, started_at=now, lease_token=new_id()
            )
            outcome = await execute(app, executor, task, dependencies_checked=True)
            if outcome.kind not in _AGAIN:
                break
        result = outcome.result or TaskResult.from_task(task, outcome.status, error=outcome.error)
    await app.result_storage.set(result)
    return task.id


async def _dependencies_failed(app: AsyncOmniQ, task: Task) -> TaskResult | None:
    """The FAILED result of a task whose dependencies did not all succeed eagerly; None when they did."""
    failed = [dep for dep in task.depends_on if not ((result := await app.get_result(dep)) is not None and result.ok)]
    if not failed:
        return None
    error = TaskError(
        type="DependencyFailed", message=f"dependencies did not succeed: {', '.join(failed)}", retryable=False
    )
    return TaskResult.from_task(task, TaskStatus.FAILED, error=error)
