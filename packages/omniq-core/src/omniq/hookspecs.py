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
* **Lifecycle hooks** are called by the core as tasks move, every one of
  them through one dispatcher (:class:`omniq.lifecycle.Lifecycle`). They are
  synchronous, must be cheap and must not raise: an exception is logged (on
  the ``omniq.lifecycle`` logger) and swallowed, so a broken observer never
  fails a task. Which hooks have an implementation is decided once, when the
  dispatcher is built (at worker start, at the producer's first enqueue):
  a hook no plugin implements costs nothing on the hot path. A plugin
  registered later (:func:`omniq.plugins.register`) is seen by dispatchers
  built after it.

The ``task`` a lifecycle hook receives is the worker's (or producer's) own
copy: read it, do not change it (except in :func:`omniq_task_headers`, which
returns headers instead of writing them). Its fields give what a metrics or
tracing plugin needs: ``task.id``, ``task.func`` (the task's name),
``task.queue``, ``task.attempts`` (the current attempt, from 1),
``task.created_at`` and ``task.eta`` (queue wait = ``started_at`` minus
``eta or created_at``), ``task.started_at`` (set on every worker-side hook
for a task that ran: run time = now minus ``started_at``) and
``task.headers`` (what :func:`omniq_task_headers` returned at enqueue).
``worker_id`` is the id of the worker pool (one per ``omniq worker``
process), the same id :func:`omniq_worker_started` announced.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import contextlib

    from omniq.models import Task, TaskError, TaskResult
    from omniq.monitoring import WorkerInfo

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


# -- lifecycle: the producer -------------------------------------------------------------------------


@hookspec
def omniq_task_headers(task: Task) -> dict[str, str] | None:
    """Return headers to store with ``task`` (e.g. a W3C ``traceparent``), or None.

    Called by the producer for each task before it is stored, only when a
    plugin implements it; the returned dicts are merged (in hook order) into
    ``task.headers``, which the worker sees again. Keys and values are short
    strings.

    Args:
        task: the task about to be stored (``task.id``, ``task.func``,
            ``task.queue`` set; ``task.headers`` holds what the caller gave).

    Returns:
        The headers to add, or None to add none.
    """


@hookspec
def omniq_task_enqueued(task: Task) -> None:
    """Called by the producer after ``task`` was stored (once per task, also in bulk).

    Args:
        task: the stored task (status PENDING, or SCHEDULED-like with an ``eta``).
    """


@hookspec
def omniq_task_cancelled(task: Task) -> None:
    """Called by the app after ``task`` was cancelled (``app.cancel``/``handle.cancel``).

    Only a cancel that changed the task calls it (a finished task is left alone).

    Args:
        task: the task as it was when cancelled; its status is CANCELLED.
    """


# -- lifecycle: the worker, per task -----------------------------------------------------------------


@hookspec
def omniq_task_started(task: Task, worker_id: str) -> None:
    """Called by a worker just before it runs ``task``.

    Args:
        task: the claimed task; ``task.attempts`` is this attempt (from 1),
            ``task.started_at`` is when this attempt started.
        worker_id: the worker pool's id.
    """


@hookspec
def omniq_task_run(task: Task, worker_id: str) -> contextlib.AbstractContextManager[None] | None:
    """Return a context manager to wrap ``task``'s run (e.g. a tracing span), or None.

    Called by a worker just before the task function runs, only when a plugin
    implements it, in the context that runs it: the async task for the async
    pool; for the thread pool before the hand-off, so the copied contextvars
    carry it into the thread; for the process pool around the call in the
    parent. Every returned context manager is entered before the run and
    exited after it, the first plugin's outermost (innermost last); an
    exception of the task is not passed to them (the outcome hooks report it).

    Args:
        task: the task about to run (as for :func:`omniq_task_started`).
        worker_id: the worker pool's id.

    Returns:
        A context manager, or None to wrap nothing.
    """


@hookspec
def omniq_task_succeeded(task: Task, result: TaskResult, worker_id: str) -> None:
    """Called by a worker after the queue accepted ``task``'s success.

    Args:
        task: the task that ran; ``task.started_at`` is this attempt's start
            (run time = now minus it).
        result: the stored result (``result.value`` decoded, ``finished_at`` set).
        worker_id: the worker pool's id.
    """


@hookspec
def omniq_task_failed(task: Task, error: TaskError, worker_id: str) -> None:
    """Called by a worker after ``task`` failed for good (no retry left, or not retryable).

    A timeout is a failure whose ``error.type`` is ``"TaskTimeoutError"``.

    Args:
        task: the task that ran (``task.attempts`` is the last attempt).
        error: the failure: ``type``, ``message`` and ``traceback``.
        worker_id: the worker pool's id.
    """


@hookspec
def omniq_task_retried(task: Task, error: TaskError, worker_id: str, delay: float) -> None:
    """Called by a worker after ``task`` failed and was scheduled for another attempt.

    Args:
        task: the task that ran (``task.attempts`` is the attempt that failed).
        error: the failure of this attempt.
        worker_id: the worker pool's id.
        delay: seconds until the next attempt is due.
    """


@hookspec
def omniq_task_released(task: Task, worker_id: str) -> None:
    """Called by a worker after it handed ``task`` back to the queue unrun or unfinished.

    A graceful stop releases claimed tasks that had not started, and tasks
    still running when the grace period ends; they run again elsewhere
    (this attempt does not count).

    Args:
        task: the released task.
        worker_id: the worker pool's id.
    """


@hookspec
def omniq_task_expired(task: Task) -> None:
    """Called by a worker when ``task``'s TTL passed before it ran (status EXPIRED; it never runs).

    Args:
        task: the expired task.
    """


@hookspec
def omniq_task_lease_lost(task: Task, worker_id: str) -> None:
    """Called by a worker when its lease on a running ``task`` was lost.

    The queue gave the task to another worker (the lease expired, e.g. the
    worker was stalled); this worker's outcome for it is discarded.

    Args:
        task: the task whose lease was lost.
        worker_id: the worker pool's id that lost it.
    """


# -- lifecycle: the worker itself ----------------------------------------------------------------------


@hookspec
def omniq_worker_started(worker_id: str, queues: tuple[str, ...]) -> None:
    """Called when a worker pool starts claiming.

    Args:
        worker_id: the new pool's id.
        queues: the queue names it claims from, in priority order.
    """


@hookspec
def omniq_worker_heartbeat(worker: WorkerInfo) -> None:
    """Called at each worker heartbeat, after the worker refreshed its registry entry.

    Args:
        worker: the worker's state now (counts, in flight, heartbeat time).
    """


@hookspec
def omniq_worker_stopped(worker_id: str) -> None:
    """Called when a worker pool has stopped and released its tasks.

    Args:
        worker_id: the pool's id.
    """
