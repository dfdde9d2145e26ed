"""The worker's task log: a built-in observer that logs what happens to each task.

It is a plugin like any third party's (the core registers it under the name
:data:`PLUGIN_NAME`; ``omniq.plugins.block(PLUGIN_NAME)`` before the first
use silences it), and receives the events through the lifecycle seam. It logs
on the ``omniq.worker.tasks`` logger, one line per event, each with the task's
id, name, queue and attempt, in the message and as fields of the record
(``record.omniq``, which ``--log-format json`` writes as keys):

========================  =======  ============================================
event                     level    line
========================  =======  ============================================
succeeded                 INFO     ``task <id> (<name>, queue <q>, attempt <n>) succeeded in 0.012s``
failed (timeout too)      ERROR    ``... failed: <ErrorType>: <message>`` (the traceback on a DEBUG
                                   line, and in the JSON record)
retried                   WARNING  ``... failed: <ErrorType>: <message>; retrying in 2.00s``
expired                   WARNING  ``... expired: its ttl passed before it ran``
lease lost                WARNING  ``... lost its lease (cancelled, or expired): outcome discarded``
released                  INFO     ``... released: handed back to the queue``
========================  =======  ============================================

A timeout is a failure whose type is ``TaskTimeoutError``. Each hook first
asks whether its level is enabled (a cached lookup): a worker logging at
WARNING pays about a function call per task for the success line it does not
write.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from omniq.hookspecs import hookimpl
from omniq.models import utcnow

if TYPE_CHECKING:
    from omniq.models import Task, TaskError, TaskResult

__all__ = ["PLUGIN_NAME", "logger"]

#: the name the core registers this observer under.
PLUGIN_NAME = "omniq.task_log"

logger = logging.getLogger("omniq.worker.tasks")

_DEBUG, _INFO, _WARNING, _ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR


def _fields(task: Task, worker_id: str | None, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "task_id": task.id,
        "task": task.func,
        "queue": task.queue,
        "attempt": task.attempts,
    }
    if worker_id is not None:
        fields["worker_id"] = worker_id
    fields.update(more)
    return fields


def _head(task: Task) -> str:
    return f"task {task.id} ({task.func}, queue {task.queue}, attempt {task.attempts})"


def _seconds_since(start: datetime | None) -> float | None:
    return None if start is None else max(0.0, (utcnow() - start).total_seconds())


def _error_fields(error: TaskError) -> dict[str, Any]:
    return {"error_type": error.type, "error": error.message, "traceback": error.traceback}


def _log_traceback(task: Task, error: TaskError, fields: dict[str, Any]) -> None:
    if error.traceback and logger.isEnabledFor(_DEBUG):
        logger.debug("%s: traceback\n%s", _head(task), error.traceback.rstrip(), extra={"omniq": fields})


@hookimpl
def omniq_task_succeeded(task: Task, result: TaskResult, worker_id: str) -> None:
    """INFO: ``task <id> (<name>, queue <q>, attempt <n>) succeeded in <run time>s``."""
    if not logger.isEnabledFor(_INFO):
        return
    runtime = _seconds_since(task.started_at)
    fields = _fields(task, worker_id, runtime=runtime)
    took = f" in {runtime:.3f}s" if runtime is not None else ""
    logger.info("%s succeeded%s", _head(task), took, extra={"omniq": fields})


@hookimpl
def omniq_task_failed(task: Task, error: TaskError, worker_id: str) -> None:
    """ERROR: ``... failed: <type>: <message>``; the traceback at DEBUG."""
    if not logger.isEnabledFor(_ERROR):
        return
    fields = _fields(task, worker_id, runtime=_seconds_since(task.started_at), **_error_fields(error))
    logger.error("%s failed: %s: %s", _head(task), error.type, error.message, extra={"omniq": fields})
    _log_traceback(task, error, fields)


@hookimpl
def omniq_task_retried(task: Task, error: TaskError, worker_id: str, delay: float) -> None:
    """WARNING: ``... failed: <type>: <message>; retrying in <delay>s``."""
    if not logger.isEnabledFor(_WARNING):
        return
    fields = _fields(task, worker_id, delay=delay, **_error_fields(error))
    logger.warning(
        "%s failed: %s: %s; retrying in %.2fs",
        _head(task),
        error.type,
        error.message,
        delay,
        extra={"omniq": fields},
    )
    _log_traceback(task, error, fields)


@hookimpl
def omniq_task_expired(task: Task) -> None:
    """WARNING: ``... expired: its ttl passed before it ran``."""
    if logger.isEnabledFor(_WARNING):
        fields = _fields(task, None, expires_at=task.expires_at.isoformat() if task.expires_at else None)
        logger.warning("%s expired: its ttl passed before it ran", _head(task), extra={"omniq": fields})


@hookimpl
def omniq_task_lease_lost(task: Task, worker_id: str) -> None:
    """WARNING: ``... lost its lease (cancelled, or expired): outcome discarded``."""
    if logger.isEnabledFor(_WARNING):
        logger.warning(
            "%s lost its lease (cancelled, or expired): outcome discarded",
            _head(task),
            extra={"omniq": _fields(task, worker_id)},
        )


@hookimpl
def omniq_task_released(task: Task, worker_id: str) -> None:
    """INFO: ``... released: handed back to the queue``."""
    if logger.isEnabledFor(_INFO):
        logger.info("%s released: handed back to the queue", _head(task), extra={"omniq": _fields(task, worker_id)})
