"""The running task's own view of itself: ``omniq.current_task()`` inside a task.

Works in every pool: on the event loop (async pool), in threads (``thread`` pool, and sync
functions of the async pool: the context is copied into the thread) and in forked child
processes (``process`` pool: the context goes with the call). The worker records which task runs
in a :class:`contextvars.ContextVar` when it starts the function; :class:`TaskContext` is built
only when the task asks, so a task that does not ask pays one context-variable set.
"""

from __future__ import annotations

import contextvars
import dataclasses
from datetime import datetime, timedelta

from omniq.errors import OmniQError
from omniq.models import Task
from omniq.progress import make_progress

__all__ = ["TaskContext", "current_task", "report_progress"]


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a running task knows about itself.

    Attributes:
        id: the task id (for a recurring task, its schedule id).
        name: the registered task name.
        queue: the queue it was claimed from.
        attempt: this run's attempt number, from 1.
        max_retries: retries allowed after the first attempt (``attempt <= max_retries + 1``).
        schedule_id: the schedule this run belongs to (a recurring task), else None.
        workflow_id: the workflow (chain, group, chord) it is a member of, else None.
        deadline: when this attempt's ``timeout`` runs out (aware UTC), or None without a timeout.
        worker_id: the worker running it.
    """

    id: str
    name: str
    queue: str
    attempt: int
    max_retries: int
    schedule_id: str | None
    workflow_id: str | None
    deadline: datetime | None
    worker_id: str
    #: the worker's record of the run, whose ``cancelled`` flag the heartbeat sets (None: no worker's).
    _held: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether this run was cancelled (``cancel(task_id)``) or lost its lease, so it should stop.

        Read live: the worker's heartbeat sets it (within ``heartbeat_interval`` of the cancel). An
        async task is also cancelled at its next ``await``; a thread-pool task cannot be stopped from
        outside, so a long one should check this and return. In the process pool the child
        is killed instead, and this stays False there.
        """
        return bool(getattr(self._held, "cancelled", False))

    def should_abort(self) -> bool:
        """:attr:`cancelled`, as a call: ``if current_task().should_abort(): return``."""
        return self.cancelled

    def report_progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Say how far this run is: ``get_task`` (``Task.progress``), ``omniq inspect`` and the dashboard show it.

        Cheap to call often: the worker keeps the latest report and stores at most two a second
        (:mod:`omniq.progress`); in the process pool each call is a message to the parent. Shown
        while the task runs. Outside a worker (eager mode) it only checks its arguments.

        Raises:
            TypeError, ValueError: a value that is not a number >= 0 (``total`` > 0), a message not a string.
        """
        progress = make_progress(done, total, message)
        report = getattr(self._held, "report_progress", None)
        if report is not None:
            report(progress)

    @property
    def retries_left(self) -> int:
        """Attempts left after this one."""
        return max(self.max_retries + 1 - self.attempt, 0)

    @property
    def last_attempt(self) -> bool:
        """Whether a failure of this attempt ends the task."""
        return self.retries_left == 0


#: the task the current context runs, its worker's id, and the worker's record of the run, with its
#: ``cancelled`` flag and ``report_progress(progress)`` (None where there is none: eager mode). Set by the worker.
RUNNING: contextvars.ContextVar[tuple[Task, str, object] | None] = contextvars.ContextVar(
    "omniq_running_task", default=None
)


def context_of(task: Task, worker_id: str, held: object = None) -> TaskContext:
    """The :class:`TaskContext` of ``task`` running on ``worker_id`` (``held``: see :data:`RUNNING`)."""
    deadline = None
    if task.timeout is not None and task.started_at is not None:
        deadline = task.started_at + timedelta(seconds=task.timeout)
    return TaskContext(
        id=task.id,
        name=task.func,
        queue=task.queue,
        attempt=task.attempts,
        max_retries=task.max_retries,
        schedule_id=task.id if task.recurring else None,
        workflow_id=task.workflow_id,
        deadline=deadline,
        worker_id=worker_id,
        _held=held,
    )


def report_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """``current_task().report_progress(done, total, message)``, for the running task.

    Raises:
        OmniQError: called outside a task run by a worker.
    """
    current_task().report_progress(done, total, message)


def current_task() -> TaskContext:
    """The task running in this context (its coroutine, thread or child process).

    Raises:
        OmniQError: called outside a task run by a worker.
    """
    running = RUNNING.get()
    if running is None:
        raise OmniQError("current_task() is called outside a task run by an OmniQ worker")
    return context_of(*running)
