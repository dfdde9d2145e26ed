"""The plugin contract: every hook a plugin may implement.

A plugin is a module listed under the ``omniq`` entry-point group (or
registered at run time with :func:`omniq.plugins.register`) whose functions
are decorated with :data:`omniq.hookimpl` and named after a hook below.
pluggy checks names and arguments when the plugin registers, so a misspelt
hook fails at start-up rather than being silently ignored.

Two kinds of hooks:

* **Registration hooks** return data (:class:`BackendSpec` lists) describing
  the backends a distribution provides. They must not import drivers or
  create objects: the registry imports a class only when settings select it.
* **Lifecycle hooks** are called by the core as tasks move. They are
  synchronous, must be cheap and must not raise (an exception is logged and
  swallowed so a broken observer never fails a task). When no plugin
  implements a lifecycle hook the worker skips calling it altogether.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from omniq.models import Task, TaskError, TaskResult

__all__ = ["BackendSpec", "SerializerSpec", "hookimpl", "hookspec"]

#: marks a hook specification (used only in this module).
hookspec = pluggy.HookspecMarker("omniq")
#: marks a hook implementation in a plugin module; re-exported as ``omniq.hookimpl``.
hookimpl = pluggy.HookimplMarker("omniq")


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """Describes one backend class without importing it.

    Attributes:
        name: the type name users put in settings (``"redis"``).
        path: ``"package.module:ClassName"`` of the implementation.
        distribution: the distribution that provides it (``"omniq-redis"``),
            shown by ``omniq backends`` and in error messages.
        capabilities: deprecated and ignored: a backend declares its
            capabilities once, in its class's ``capabilities`` attribute
            (:class:`omniq.base.Component`), which ``omniq backends`` prints.
            Kept so that plugins written before that still load.
    """

    name: str
    path: str
    distribution: str
    capabilities: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class SerializerSpec:
    """Describes one serializer: its name, format tag and ``module:Class`` path."""

    name: str
    path: str
    distribution: str


# -- registration ----------------------------------------------------------------------------------


@hookspec
def omniq_task_queue_types() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the task queue backends this plugin provides.

    Called once by the registry, the first time a backend is resolved or
    listed. Every plugin's list is merged; two plugins declaring the same
    name is an error that names both distributions.
    """


@hookspec
def omniq_result_storage_types() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the result storage backends this plugin provides (see :func:`omniq_task_queue_types`)."""


@hookspec
def omniq_event_storage_types() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the event storage backends this plugin provides (see :func:`omniq_task_queue_types`)."""


@hookspec
def omniq_serializers() -> list[SerializerSpec]:  # type: ignore[empty-body]
    """Return extra serializers this plugin provides (the built-in ones need no plugin)."""


# -- lifecycle ---------------------------------------------------------------------------------------


@hookspec
def omniq_task_enqueued(task: Task) -> None:
    """Called by the producer after ``task`` was stored (once per task, also in bulk)."""


@hookspec
def omniq_task_started(task: Task, worker_id: str) -> None:
    """Called by a worker just before it runs ``task`` (``task.attempts`` is this attempt)."""


@hookspec
def omniq_task_succeeded(task: Task, result: TaskResult, worker_id: str) -> None:
    """Called by a worker after the queue accepted ``task``'s success."""


@hookspec
def omniq_task_failed(task: Task, error: TaskError, worker_id: str) -> None:
    """Called by a worker after ``task`` failed for good (no retry left, or not retryable)."""


@hookspec
def omniq_task_retried(task: Task, error: TaskError, worker_id: str) -> None:
    """Called by a worker after ``task`` failed and was scheduled for another attempt."""


@hookspec
def omniq_worker_started(worker_id: str, queues: tuple[str, ...]) -> None:
    """Called when a worker pool starts claiming from ``queues``."""


@hookspec
def omniq_worker_stopped(worker_id: str) -> None:
    """Called when a worker pool has stopped and released its tasks."""
