"""``OmniQBackend``: Django's task backend API, enqueuing through OmniQ and reading OmniQ's records.

A Django task is enqueued as the OmniQ task named after it
(``task.module_path``: ``myapp.tasks.send_welcome``), with its arguments as
the call's; ``queue_name``, ``priority`` and ``run_after`` become the task's
``queue``, ``priority`` and ``eta``. The ``TaskResult`` id is the OmniQ task
id, so ``omniq status``, the dashboard and ``app.get_task(id)`` see the same task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omniq._options import EnqueueOptions
from omniq.contrib.django import _compat as dj
from omniq.contrib.django._apps import close_producer, omniq_settings, producer, validate_options
from omniq.contrib.django._results import django_result, find_task, in_installed_app
from omniq.errors import ConfigurationError
from omniq.models import TaskStatus
from omniq.sync import OmniQ

__all__ = ["OmniQBackend"]


class OmniQBackend(dj.BaseTaskBackend):  # type: ignore[misc]  # Django's classes are untyped (Any)
    """A Django task backend on OmniQ: ``TASKS = {"default": {"BACKEND": "omniq.contrib.django.OmniQBackend"}}``.

    ``OPTIONS`` may hold ``SETTINGS``, a mapping of OmniQ settings (``backend``,
    ``url``, ``base_dir``, ``default_max_retries``, ...) given in code: they
    win over ``OMNIQ_*`` variables and the YAML file, as in ``Settings.load``.
    ``QUEUES`` (Django's) lists the queues tasks may name, and the ones
    ``omniq worker omniq.contrib.django:worker_app`` consumes.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True  # Django's -100..100, higher first: OmniQ's own order

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        validate_options(alias, self.options)

    @property
    def app(self) -> OmniQ:
        """The OmniQ app this process enqueues and reads through (shared by the backend's threads)."""
        return producer(self.alias, self.options)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Enqueue ``task(*args, **kwargs)`` as an OmniQ task; its ``TaskResult`` is READY.

        Raises:
            InvalidTask: Django's checks fail, or the task's module is outside
                the installed apps (a worker would not import it).
            TypeError, ValueError: an argument is not JSON-serialisable, as Django requires.
        """
        self.validate_task(task)
        module_name = task.module_path.rpartition(".")[0]
        if not in_installed_app(module_name, default=True):
            raise dj.InvalidTask(
                f"task {task.module_path} is outside the installed apps: "
                f"an omniq worker imports tasks only from INSTALLED_APPS"
            )
        args, kwargs = dj.normalize_json(list(args)), dj.normalize_json(dict(kwargs))
        run_after = task.run_after
        if run_after is not None and dj.timezone.is_naive(run_after):
            run_after = dj.timezone.make_aware(run_after)  # Django's local time (USE_TZ = False)
        options = EnqueueOptions(queue=task.queue_name, priority=task.priority, eta=run_after)
        task_id = self.app.enqueue_call(task.module_path, tuple(args), kwargs, options)
        result = dj.TaskResult(
            task=task,
            id=task_id,
            status=dj.TaskResultStatus.READY,
            enqueued_at=dj.timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        dj.task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """:meth:`enqueue` from async code, off the event loop (it touches no database of Django's)."""
        return await dj.sync_to_async(self.enqueue, thread_sensitive=False)(task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        """The ``TaskResult`` of OmniQ task ``result_id``, as OmniQ's records have it now.

        Raises:
            TaskResultDoesNotExist: no task has that id (or it was purged), or it is no Django task.
        """
        app = self.app
        record = app.get_task(result_id)
        django_task = find_task(record.func) if record is not None else None
        if record is None or django_task is None:
            raise dj.TaskResultDoesNotExist(result_id)
        args, kwargs = app.async_app.decode_args(record)
        value = None
        if record.status is TaskStatus.SUCCEEDED:
            stored = app.get_result(result_id)
            value = stored.result if stored is not None else None
        return django_result(django_task, self.alias, record, args, kwargs, value)

    async def aget_result(self, result_id: str) -> Any:
        """:meth:`get_result` from async code, off the event loop."""
        return await dj.sync_to_async(self.get_result, thread_sensitive=False)(result_id)

    def check(self, **kwargs: Any) -> Iterable[Any]:
        """Django's system checks: the OmniQ settings must be valid (``omniq.E001``)."""
        from django.core import checks  # type: ignore[import-untyped, import-not-found, unused-ignore]

        messages = list(super().check(**kwargs))
        try:
            omniq_settings(self.options, self.queues)
        except ConfigurationError as exc:
            messages.append(checks.Error(f"TASKS[{self.alias!r}]: {exc}", id="omniq.E001"))
        return messages

    def close(self) -> None:
        """Close the process's app for this backend (``task_backends.close_all()`` calls it)."""
        close_producer(self.alias, self.options)
