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

from datetime import timedelta
from typing import TYPE_CHECKING

from omniq.constants import DEPENDENCY_RECHECK_SECONDS
from omniq.errors import SerializationError, UnknownTaskError
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
from omniq.scheduling import backoff_delay, next_run

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ
    from omniq.worker.executors import Executor

__all__ = ["check_dependencies", "execute", "outcome_event"]


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


def _failure(app: AsyncOmniQ, task: Task, error: TaskError) -> Outcome:
    if error.retryable and task.attempts <= task.max_retries:
        settings = app.settings
        delay = backoff_delay(task.attempts, settings.retry_backoff, settings.retry_backoff_max)
        return Outcome(
            task_id=task.id,
            lease_token=task.lease_token or "",
            kind=OutcomeKind.RETRY,
            eta=utcnow() + timedelta(seconds=delay),
            error=error,
        )
    return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)


async def check_dependencies(app: AsyncOmniQ, task: Task) -> Outcome | None:
    """None when every dependency succeeded; otherwise a FAILED or RELEASE (recheck later) outcome."""
    tasks = await app.task_queue.get_many(list(task.depends_on))
    failed = [
        dep_id
        for dep_id, dep in zip(task.depends_on, tasks, strict=True)
        if dep is None or (dep.status in TERMINAL_STATUSES and dep.status is not TaskStatus.SUCCEEDED)
    ]
    if failed:
        error = TaskError(
            type="DependencyFailed",
            message=f"dependencies did not succeed: {', '.join(failed)}",
            attempt=task.attempts,
            retryable=False,
        )
        return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
    if all(dep is not None and dep.status is TaskStatus.SUCCEEDED for dep in tasks):
        return None
    return Outcome(
        task_id=task.id,
        lease_token=task.lease_token or "",
        kind=OutcomeKind.RELEASE,
        eta=utcnow() + timedelta(seconds=DEPENDENCY_RECHECK_SECONDS),
    )


async def execute(app: AsyncOmniQ, executor: Executor, task: Task) -> Outcome:
    """Run ``task`` (already claimed) and describe the outcome; never raises for task errors."""
    if task.expires_at is not None and utcnow() >= task.expires_at:
        error = TaskError(type="TaskExpired", message="the task's ttl passed before it could run", retryable=False)
        return _final(task, OutcomeKind.EXPIRED, TaskStatus.EXPIRED, error)
    if task.depends_on:
        pending = await check_dependencies(app, task)
        if pending is not None:
            return pending
    try:
        handle = app.resolve(task.func)
        args, kwargs = app.decode_args(task)
    except (UnknownTaskError, SerializationError, ValueError, TypeError) as exc:
        # Running it again cannot help: record it once and move on.
        error = TaskError(type=type(exc).__name__, message=str(exc), attempt=task.attempts, retryable=False)
        return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
    try:
        value = await executor.run(task.func, handle.func, handle.is_async, args, kwargs, task.timeout)
    except Exception as exc:
        from omniq.app import error_from_exception

        return _failure(app, task, error_from_exception(exc, task.attempts))
    try:
        payload = app.serializer.dumps(value) if value is not None else b""
    except SerializationError as exc:
        error = TaskError(
            type=type(exc).__name__, message=f"the return value: {exc}", attempt=task.attempts, retryable=False
        )
        return _final(task, OutcomeKind.FAILED, TaskStatus.FAILED, error)
    return _final(task, OutcomeKind.SUCCEEDED, TaskStatus.SUCCEEDED, None, payload)


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
