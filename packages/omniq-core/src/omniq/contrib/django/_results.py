"""OmniQ's records as Django's: the Django task a record runs, its ``TaskResult``, its errors.

The one translation between the two models, used by the backend (``get_result``,
``refresh``) and by the worker (the ``TaskResult`` a task's context and Django's
signals carry).
"""

from __future__ import annotations

import builtins
import importlib
import sys
from datetime import datetime
from typing import Any

from omniq import errors as omniq_errors
from omniq.contrib.django import _compat as dj
from omniq.models import Task, TaskError, TaskStatus

__all__ = ["STATUSES", "django_error", "django_result", "find_task", "in_installed_app"]

#: OmniQ's status -> Django's; a task cancelled or expired before it ran "was unable to start" (FAILED).
STATUSES: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "READY",
    TaskStatus.RUNNING: "RUNNING",
    TaskStatus.SUCCEEDED: "SUCCESSFUL",
    TaskStatus.FAILED: "FAILED",
    TaskStatus.CANCELLED: "FAILED",
    TaskStatus.EXPIRED: "FAILED",
}


def find_task(name: str) -> Any | None:
    """The Django ``Task`` named ``module.function``, or None.

    A module is imported only if it is already, or if it belongs to an
    installed app (``INSTALLED_APPS``): a name read from a record never makes
    the process import arbitrary code.
    """
    module_name, _, attr = name.rpartition(".")
    if not module_name or not attr:
        return None
    module = sys.modules.get(module_name)
    if module is None:
        if not in_installed_app(module_name):
            return None
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    target = getattr(module, attr, None)
    return target if isinstance(target, dj.Task) else None


def in_installed_app(module_name: str, *, default: bool = False) -> bool:
    """Whether ``module_name`` is (in) an installed app's package; ``default`` before Django is set up."""
    from django.apps import apps  # type: ignore[import-untyped, import-not-found, unused-ignore]

    if not apps.ready:
        return default
    return any(
        module_name == config.name or module_name.startswith(config.name + ".") for config in apps.get_app_configs()
    )


def django_error(error: TaskError) -> Any:
    """Django's ``TaskError`` of an OmniQ error: the exception's dotted class path and its traceback."""
    return dj.TaskError(
        exception_class_path=_class_path(error),
        traceback=error.traceback or f"{error.type}: {error.message}",
    )


def _class_path(error: TaskError) -> str:
    """Where the exception class is: read from the traceback, else guessed from its name.

    OmniQ records the class's name; the traceback's closing line names it
    ``module.Class`` (Python leaves out ``builtins``). A failure OmniQ
    recorded itself (a lease that expired, a ttl that passed) has no
    traceback: it is reported as the OmniQ error it is closest to.
    """
    for line in reversed(error.traceback.splitlines()):  # the last such line: a message may span lines
        path = line.partition(":")[0].strip()
        if " " not in path and (path == error.type or path.endswith("." + error.type)):
            return path if "." in path else f"builtins.{path}"
    found = getattr(builtins, error.type, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return f"builtins.{error.type}"
    for name in (error.type, f"{error.type}Error"):
        found = getattr(omniq_errors, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return f"omniq.errors.{name}"
    return "omniq.errors.OmniQError"


def django_result(
    django_task: Any,
    alias: str,
    record: Task,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    value: Any = None,
) -> Any:
    """Django's ``TaskResult`` of an OmniQ task record (``value``: its return value, once it succeeded).

    The result id is the OmniQ task id. OmniQ keeps the worker and the error
    of the latest attempt on the record: ``worker_ids`` holds one entry per
    attempt (so ``attempts`` is right), and ``errors`` the latest error.
    """
    task = django_task.using(
        priority=record.priority, queue_name=record.queue, run_after=_local(record.eta), backend=alias
    )
    result = dj.TaskResult(
        task=task,
        id=record.id,
        status=dj.TaskResultStatus[STATUSES[record.status]],
        enqueued_at=_local(record.created_at),
        started_at=_local(record.started_at),
        finished_at=_local(record.finished_at),
        last_attempted_at=_local(record.started_at),
        args=list(args),
        kwargs=dict(kwargs),
        backend=alias,
        errors=[django_error(record.error)] if record.error is not None else [],
        worker_ids=[record.worker_id or ""] * record.attempts,
    )
    if record.status is TaskStatus.SUCCEEDED:
        object.__setattr__(result, "_return_value", value)  # how Django's own backends set it
    return result


def _local(when: datetime | None) -> datetime | None:
    """OmniQ's aware UTC time as Django has times: aware, or naive local time with ``USE_TZ = False``."""
    from django.conf import settings  # type: ignore[import-untyped, import-not-found, unused-ignore]

    if when is None or settings.USE_TZ:
        return when
    return dj.timezone.make_naive(when)  # type: ignore[no-any-return]
