"""Django tasks in ``omniq worker``: ``omniq worker omniq.contrib.django:worker_app``.

:func:`worker_app` sets Django up (``DJANGO_SETTINGS_MODULE``, as
``manage.py`` does), then builds a :class:`DjangoWorkerApp` with the OmniQ
settings of the backend's ``OPTIONS``, consuming its ``QUEUES``. That app
knows no Django task in advance: the first time it claims a task named
``myapp.tasks.send_welcome`` it finds that Django ``Task`` (importing only
from the installed apps), registers a runner for it under that name and
runs it like any OmniQ task, with OmniQ's retries, timeouts and events.

A run is a request cycle to Django's database layer: stale connections are
closed before and after it (``close_old_connections``), so a long-lived
worker thread never holds a broken one. The worker sends Django's
``task_started`` before a run and ``task_finished`` after the last one
(success, or a failure OmniQ will not retry); ``takes_context`` tasks get a
``TaskContext`` whose ``TaskResult`` is the running task's.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from omniq._tasks import TaskFunction
from omniq.app import AsyncOmniQ
from omniq.config import Settings
from omniq.context import RUNNING
from omniq.contrib.django import _compat as dj
from omniq.contrib.django._apps import omniq_settings
from omniq.contrib.django._results import django_result, find_task
from omniq.contrib.django.backend import OmniQBackend
from omniq.errors import ConfigurationError, OmniQError

__all__ = ["DjangoWorkerApp", "worker_app"]


class DjangoWorkerApp(AsyncOmniQ):
    """An :class:`~omniq.AsyncOmniQ` that also runs the Django tasks of the backend ``alias``.

    Args:
        settings: OmniQ's settings (:func:`worker_app` reads them from the backend's ``OPTIONS``).
        alias: the Django task backend (a key of ``TASKS``) its results belong to.
        **kwargs: as for :class:`~omniq.AsyncOmniQ`.
    """

    def __init__(self, settings: Settings | None = None, *, alias: str = "default", **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.alias = alias

    def resolve(self, name: str) -> TaskFunction[Any, Any]:
        """The task registered as ``name``, else the Django task of that name (registered on first sight).

        Raises:
            UnknownTaskError: ``name`` is neither registered nor a Django task of an installed app.
        """
        handle = self.functions.get(name)
        if handle is not None:
            return handle
        django_task = find_task(name)
        if django_task is None:
            return super().resolve(name)
        return self.register(_runner(django_task, self.alias), name=name)


def worker_app(alias: str = "default") -> DjangoWorkerApp:
    """Set Django up and return the worker app of its task backend ``alias`` (the CLI calls it).

    Raises:
        ConfigurationError: ``DJANGO_SETTINGS_MODULE`` is not set, or ``alias`` is not an OmniQBackend.
    """
    import django  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from django.conf import settings  # type: ignore[import-untyped, import-not-found, unused-ignore]

    if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
        raise ConfigurationError(
            "a worker for Django tasks needs the project's settings: set DJANGO_SETTINGS_MODULE (myproject.settings)"
        )
    django.setup()
    backend = dj.task_backends[alias]
    if not isinstance(backend, OmniQBackend):
        raise ConfigurationError(
            f"TASKS[{alias!r}] is {type(backend).__module__}.{type(backend).__qualname__}, "
            "not omniq.contrib.django.OmniQBackend"
        )
    return DjangoWorkerApp(omniq_settings(backend.options, backend.queues), alias=alias)


def _runner(django_task: Any, alias: str) -> Callable[..., Any]:
    """The function OmniQ runs for ``django_task``: a coroutine function if the task's is one."""
    from django.db import close_old_connections  # type: ignore[import-untyped, import-not-found, unused-ignore]

    func = django_task.func
    if inspect.iscoroutinefunction(func):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            attempt = _Attempt(django_task, alias, args, kwargs)
            await dj.sync_to_async(close_old_connections)()
            try:
                return attempt.succeeded(await func(*attempt.arguments(args), **kwargs))
            except Exception as exc:
                attempt.failed(exc)
                raise
            finally:
                await dj.sync_to_async(close_old_connections)()

        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        attempt = _Attempt(django_task, alias, args, kwargs)
        close_old_connections()
        try:
            return attempt.succeeded(func(*attempt.arguments(args), **kwargs))
        except Exception as exc:
            attempt.failed(exc)
            raise
        finally:
            close_old_connections()

    return run


class _Attempt:
    """One run of a Django task here: the ``TaskResult`` its context and Django's signals carry."""

    def __init__(self, django_task: Any, alias: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.task = django_task
        running = RUNNING.get()
        self.record = msgspec.structs.replace(running[0], worker_id=running[1]) if running is not None else None
        self.result = django_result(django_task, alias, self.record, args, kwargs) if self.record else None
        if self.result is not None and dj.task_started is not None:
            dj.task_started.send(OmniQBackend, task_result=self.result)

    def arguments(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The call's positional arguments, after the ``TaskContext`` of a ``takes_context`` task."""
        if not self.task.takes_context:
            return args
        if self.result is None:
            raise OmniQError(f"{self.task.module_path} takes a context: it runs only in an OmniQ worker")
        return (dj.TaskContext(task_result=self.result), *args)

    def succeeded(self, value: Any) -> Any:
        """The return value as JSON data (Django's rule), after ``task_finished``."""
        value = dj.normalize_json(value)
        if self.result is not None:
            object.__setattr__(self.result, "_return_value", value)
            self._finish(dj.TaskResultStatus.SUCCESSFUL)
        return value

    def failed(self, exc: Exception) -> None:
        """Send ``task_finished`` if OmniQ will not retry: this was the last attempt."""
        if self.result is None or self.record is None or self.record.attempts <= self.record.max_retries:
            return
        error = dj.TaskError(
            exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        self.result.errors.append(error)
        self._finish(dj.TaskResultStatus.FAILED)

    def _finish(self, status: Any) -> None:
        assert self.result is not None
        object.__setattr__(self.result, "status", status)
        object.__setattr__(self.result, "finished_at", dj.timezone.now())
        dj.task_finished.send(OmniQBackend, task_result=self.result)
