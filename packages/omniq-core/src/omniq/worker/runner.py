"""Running one claimed task and turning what happened into an Outcome.

The order of the two writes that finish a task is decided here, once, for
every backend (docs/backends.md, "Finishing a task"):

1. the queue's token-checked ``finish`` is the commit point: it decides
   whether this attempt's outcome is the accepted one;
2. only then is the result written, and only for accepted outcomes, so a
   stale lease's outcome never overwrites the accepted one.

If the worker dies between 1 and 2, the task is terminal in the queue with
its error but has no result: ``get_result(wait=True)`` re-reads the queue
every ``RESULT_WAIT_RECHECK_SECONDS`` and builds the result from the task
record, so a waiter never waits forever. Backends that can do both in one
atomic step (``Capability.FUSED_RESULTS``) close that gap entirely.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING

from omniq.base import CorruptTask
from omniq.constants import DEPENDENCY_RECHECK_SECONDS
from omniq.context import RUNNING
from omniq.errors import BackendUnavailableError, SerializationError
from omniq.lifecycle import run_context
from omniq.models import (
    TERMINAL_STATUSES,
    EventType,
    Outcome,
    OutcomeKind,
    Task,
    TaskError,
    TaskResult,
    TaskStatus,
    utcnow,
)
from omniq.retrying import Retry
from omniq.scheduling import backoff_delay, next_run
from omniq.worker.parents import DependencyResultMissing, parent_mode, with_parent_value

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    from omniq.app import AsyncOmniQ
    from omniq.lifecycle import Collect
    from omniq.models import TaskProgress
    from omniq.worker.executors import Executor
    from omniq.worker.progress import ProgressWriter, Reports

__all__ = ["Running", "check_dependencies", "error_from_exception", "execute", "failed_outcome", "outcome_event"]

logger = logging.getLogger("omniq.worker")


class Running:
    """A pool's record of one claimed task being run: its asyncio task, whether its lease was lost, its progress."""

    __slots__ = ("cancelled", "ended", "future", "reports", "task", "writer")

    def __init__(self, task: Task, writer: ProgressWriter) -> None:
        self.task = task
        self.writer = writer
        self.future: asyncio.Task[None] | None = None
        self.cancelled = False  # lease lost: drop the outcome (omniq.current_task().cancelled reads it)
        self.ended = False  # the run is over: no progress is written after it
        self.reports: Reports | None = None  # made at the task's first progress report

    def cancel(self) -> None:
        """Cancel the run (a lost lease, or shutdown's end)."""
        if self.future is not None:
            self.future.cancel()

    def report_progress(self, progress: TaskProgress) -> None:
        """What ``omniq.report_progress`` calls, from the task's thread."""
        self.writer.report(self, progress)


def _final(task: Task, kind: OutcomeKind, status: TaskStatus, error: TaskError | None, payload: bytes = b"") -> Outcome:
    """A terminal outcome, or the next tick for a recurring task (a failed run does not end a schedule)."""
    token = task.lease_token or ""
    result = TaskResult.from_task(task, status, payload=payload, error=error)
    if task.recurring and kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED):
        eta = next_run(interval=task.interval, cron=task.cron, after=task.eta or task.created_at)
        return Outcome(
            task_id=task.id, lease_token=token, kind=OutcomeKind.RESCHEDULE, eta=eta, error=error, result=result
        )
    return Outcome(task_id=task.id, lease_token=token, kind=kind, error=error, result=result)


def _failure(app: AsyncOmniQ, task: Task, error: TaskError, delay: float | None = None) -> Outcome:
    """A RETRY after ``delay`` (None: the back-off) while the error may retry and attempts are left; else FAILED."""
    if error.retryable and task.attempts <= task.max_retries:
        settings = app.settings
        if delay is None:
            delay = backoff_delay(task.attempts, settings.retry_backoff, settings.retry_backoff_max)
        return Outcome(
            task_id=task.id,
            lease_token=task.lease_token or "",
            kind=OutcomeKind.RETRY,
            eta=utcnow() + timedelta(seconds=delay),
            error=error,
        )
    return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)


async def check_dependencies(
    app: AsyncOmniQ, task: Task, results: Sequence[TaskResult | None] | None = None
) -> Outcome | None:
    """None when every dependency succeeded; otherwise a FAILED or RELEASE (recheck later) outcome.

    ``results``: the dependencies' results, when the caller read them (a workflow member, which
    receives them): when every one is there they decide, without reading the task records.
    """
    if results is not None and None not in results:
        failed = [f"{r.task_id} ({r.func}, {r.status.value})" for r in results if r is not None and not r.ok]
        ended = True
    else:
        tasks = await app.task_queue.get_many(list(task.depends_on))
        failed = [
            f"{dep_id} (gone)" if dep is None else f"{dep_id} ({dep.func}, {dep.status.value})"
            for dep_id, dep in zip(task.depends_on, tasks, strict=True)
            if dep is None or (dep.status in TERMINAL_STATUSES and dep.status is not TaskStatus.SUCCEEDED)
        ]
        ended = all(dep is not None and dep.status is TaskStatus.SUCCEEDED for dep in tasks)
    if failed:
        more = f" and {len(failed) - _NAMED} more" if len(failed) > _NAMED else ""
        error = TaskError(
            type="DependencyFailed",
            message=f"dependencies did not succeed: {', '.join(failed[:_NAMED])}{more}",
            attempt=task.attempts,
            retryable=False,
        )
        return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
    return None if ended else _recheck_later(task)


async def execute(
    app: AsyncOmniQ,
    executor: Executor,
    task: Task,
    run_hooks: Collect | None = None,
    worker_id: str = "",
    held: object = None,
    dependencies_checked: bool = False,
) -> Outcome:
    """Run ``task`` (already claimed) and describe the outcome; never raises (but for cancellation).

    ``dependencies_checked``: the caller saw every dependency succeed (eager mode, whose tasks are not queued).

    ``held``: the pool's record of the run, whose ``cancelled`` flag the task reads through
    ``omniq.current_task().cancelled``.

    ``run_hooks`` is the lifecycle's ``task_run`` (None when no plugin
    implements it): the context managers it returns wrap the function's run,
    entered here, in the task's own asyncio task, so that a thread pool's
    copied context and a process pool's parent see them too.

    The task's own exceptions follow its retry policy. Anything else that goes
    wrong around it (a corrupted record, a value that overflows, arguments
    that cannot be decoded, an outcome that cannot be built) cannot get better
    by running it again: the task ends FAILED after this one attempt, so a
    worker never hands the same broken task back and claims it for ever.
    """
    if isinstance(task, CorruptTask):
        error = TaskError(type="CorruptRecord", message=task.problem, attempt=task.attempts, retryable=False)
        return failed_outcome(task, error, "its stored record is corrupted", end_schedule=True)
    stage = "preparing it"
    try:
        if task.expires_at is not None and utcnow() >= task.expires_at:
            error = TaskError(type="TaskExpired", message="the task's ttl passed before it could run", retryable=False)
            return _final(task, OutcomeKind.EXPIRED, TaskStatus.EXPIRED, error)
        mode = parent_mode(task) if task.headers is not None else None  # a workflow member (omniq.workflows)
        parents = None
        if task.depends_on and not dependencies_checked:
            stage = "checking its dependencies"
            try:
                if mode is not None:  # it receives its parents' results: they say how the parents ended
                    parents = await app.result_storage.get_many(task.depends_on)
                pending = await check_dependencies(app, task, parents)
            except BackendUnavailableError:  # the engine, not the task: check again later
                return _recheck_later(task)
            if pending is not None:
                return pending
        if mode is not None:
            stage = "reading its parents' results"
            try:
                task = await with_parent_value(app, task, mode, parents)
            except DependencyResultMissing as exc:
                error = TaskError(type="DependencyFailed", message=str(exc), attempt=task.attempts, retryable=False)
                return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
        stage = "decoding its arguments"
        handle = app.resolve(task.func)
        args, kwargs = app.decode_args(task)
        stage = "running it"
        running = RUNNING.set((task, worker_id, held))  # what omniq.current_task() answers in the call (omniq.context)
        try:
            if run_hooks is None:
                value = await executor.run(task.func, handle.func, handle.is_async, args, kwargs, task.timeout)
            else:
                with run_context(run_hooks(task, worker_id)):
                    value = await executor.run(task.func, handle.func, handle.is_async, args, kwargs, task.timeout)
        except Exception as exc:
            error = error_from_exception(exc, task.attempts, retryable=handle.retry_policy.retryable(exc))
            return _failure(app, task, error, exc.delay if isinstance(exc, Retry) else None)
        finally:
            RUNNING.reset(running)  # the caller's context (eager mode runs here) is left as it was
        stage = "storing its return value"
        try:
            payload = app.serializer.dumps(value) if value is not None else b""
        except SerializationError as exc:
            error = TaskError(
                type=type(exc).__name__, message=f"the return value: {exc}", attempt=task.attempts, retryable=False
            )
            return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
        stage = "recording its outcome"
        return _final(task, OutcomeKind.SUCCEEDED, TaskStatus.SUCCEEDED, None, payload)
    except Exception as exc:
        error = TaskError(
            type=type(exc).__name__,
            message=_text(exc),
            traceback=traceback.format_exc(),
            attempt=task.attempts,
            retryable=False,
        )
        return failed_outcome(task, error, f"{stage} failed")


def failed_outcome(task: Task, error: TaskError, why: str, *, end_schedule: bool = False) -> Outcome:
    """A FAILED outcome for ``task`` that can always be built; ``why`` logged at DEBUG.

    The failure itself is logged once, at ERROR, by the task log observer
    (``task_log.py``) when the queue accepted it; this line adds where it happened.

    Whatever the record holds (a ttl that overflows, a schedule that cannot
    compute its next tick), the result falls back to the bare minimum rather
    than raise: the worker must be able to record the failure. A recurring
    task's schedule goes on (its next tick), unless ``end_schedule`` (a
    corrupted record would only fail again at every tick).
    """
    logger.debug(
        "task %s (%s, queue %s, attempt %s) failed for good: %s: %s: %s",
        task.id,
        task.func,
        task.queue,
        task.attempts,
        why,
        error.type,
        error.message,
    )
    try:
        if not end_schedule:
            return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
        result = TaskResult.from_task(task, TaskStatus.FAILED, error=error)
    except Exception:
        result = TaskResult(task_id=task.id, status=TaskStatus.FAILED, error=error, attempts=task.attempts)
    return Outcome(
        task_id=task.id, lease_token=task.lease_token or "", kind=OutcomeKind.FAILED, error=error, result=result
    )


def error_from_exception(exc: BaseException, attempt: int, *, retryable: bool = True) -> TaskError:
    """Describe an exception raised by a task as a TaskError (its type name, message and traceback)."""
    return TaskError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        attempt=attempt,
        retryable=retryable,
    )


def _recheck_later(task: Task) -> Outcome:
    return Outcome(
        task_id=task.id,
        lease_token=task.lease_token or "",
        kind=OutcomeKind.RELEASE,
        eta=utcnow() + timedelta(seconds=DEPENDENCY_RECHECK_SECONDS),
    )


def _text(exc: BaseException) -> str:
    """``str(exc)``, or its type when even that fails (a broken ``__str__`` must not stop a failure)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} with an unprintable message>"


#: failed dependencies a DependencyFailed message names (a chord's callback may have thousands).
_NAMED = 5

_EVENT_BY_KIND = {
    OutcomeKind.SUCCEEDED: EventType.SUCCEEDED,
    OutcomeKind.FAILED: EventType.FAILED,
    OutcomeKind.RETRY: EventType.RETRYING,
    OutcomeKind.RELEASE: EventType.RELEASED,
    OutcomeKind.EXPIRED: EventType.EXPIRED,
}


def outcome_event(outcome: Outcome) -> EventType:
    """The event recorded for an accepted outcome."""
    if outcome.kind is OutcomeKind.RESCHEDULE:
        ok = outcome.result is not None and outcome.result.status is TaskStatus.SUCCEEDED
        return EventType.SUCCEEDED if ok else EventType.FAILED
    return _EVENT_BY_KIND[outcome.kind]
