"""Progress a running task reports (``omniq.report_progress``), and where it is kept.

A report is a :class:`~omniq.models.TaskProgress` (done, total, message, when).
It is kept where results are: in the app's result storage, as a record of its
own under ``<task id>.progress`` (status RUNNING, the progress in its
payload), the way Celery's ``update_state`` keeps a custom state in its result
backend. So every engine, and every third-party result storage, keeps progress
with no new contract method, and the task queue's hot path is not touched.

``get_task`` (:mod:`omniq._reads`) fills ``Task.progress`` from it while the task is
RUNNING (one more read, for running tasks only), when the report belongs to
the current attempt; a finished task shows none. A record expires a day
after its last report, as results expire.
Workers write at most one report per task every :data:`MIN_INTERVAL`
seconds, the latest (:mod:`omniq.worker.progress`).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.models import TaskProgress, TaskResult, TaskStatus, utcnow

if TYPE_CHECKING:
    from omniq.models import Task

__all__ = [
    "KEPT_FOR",
    "MAX_MESSAGE",
    "MIN_INTERVAL",
    "make_progress",
    "progress_key",
    "progress_record",
    "progress_of",
]

#: the suffix of a task id that names its progress record in the result storage.
SUFFIX = ".progress"
#: the shortest time between two stored reports of one task (seconds); the latest one wins.
MIN_INTERVAL = 0.5
#: how long a progress record outlives its last report.
KEPT_FOR = timedelta(days=1)
#: the longest message kept (longer ones are cut, with an ellipsis).
MAX_MESSAGE = 1000

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TaskProgress)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"report_progress: {name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"report_progress: {name}={value!r} is not valid: expected a finite number >= 0")
    return number


def make_progress(done: Any, total: Any = None, message: Any = None) -> TaskProgress:
    """Check one report and stamp it with the time.

    Raises:
        TypeError: ``done`` or ``total`` is not a number, ``message`` not a string.
        ValueError: a negative or non-finite number, or a ``total`` of 0.
    """
    checked_total = None
    if total is not None:
        checked_total = _number(total, "total")
        if checked_total == 0:
            raise ValueError("report_progress: total=0 is not valid: expected a positive total, or None")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"report_progress: message must be a string, not {type(message).__name__}")
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
    return TaskProgress(done=_number(done, "done"), total=checked_total, message=message, at=utcnow())


def progress_key(task_id: str) -> str:
    """The result-storage key of a task's progress record."""
    return task_id + SUFFIX


def progress_record(task: Task, progress: TaskProgress) -> TaskResult:
    """The result-storage record that keeps ``task``'s latest report."""
    return TaskResult(
        task_id=progress_key(task.id),
        status=TaskStatus.RUNNING,
        payload=_encoder.encode(progress),
        attempts=task.attempts,
        func=task.func,
        queue=task.queue,
        started_at=task.started_at,
        finished_at=progress.at,
        expires_at=progress.at + KEPT_FOR,
    )


def describe_progress(progress: TaskProgress | None) -> str | None:
    """``3/10 (30%) step 3``: a report as ``omniq inspect`` and the dashboard show it."""
    if progress is None:
        return None
    done = f"{progress.done:g}" if progress.total is None else f"{progress.done:g}/{progress.total:g}"
    if progress.fraction is not None:
        done += f" ({progress.fraction:.0%})"
    return f"{done} {progress.message}" if progress.message else done


def progress_of(task: Task, record: TaskResult | None) -> TaskProgress | None:
    """The report in ``record`` (read at ``progress_key(task.id)``) if it is of ``task``'s current attempt, else None.

    None too when there is none yet, or it is not a report (a result stored under that name).
    """
    if record is None or record.attempts != task.attempts or record.status is not TaskStatus.RUNNING:
        return None
    try:
        return _decoder.decode(record.payload)
    except msgspec.DecodeError:  # not ours (a result stored under that name): no progress
        return None
