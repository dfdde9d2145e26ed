"""OmniQ: the synchronous façade over :class:`~omniq.app.AsyncOmniQ`.

Nothing is implemented twice. An ``OmniQ`` owns a private event loop in a
daemon thread (an anyio blocking portal) that lives as long as the object,
so loop-bound connections (asyncpg pools, redis.asyncio pools, aiosqlite
threads) stay valid across calls. Every method is one line handing the
coroutine of the same-named ``AsyncOmniQ`` method to that loop; a test
checks that the two surfaces keep the same methods and signatures. It works
from plain scripts and from threads while another event loop is running.

The exception is the request path, run in the caller's thread where the
engine can, so a web request waits for the engine only, not for two thread
hand-offs as well: ``enqueue``, ``enqueue_many`` and the handles' ``enqueue``
(``Capability.BLOCKING_ENQUEUE``: the same producer, the engine's same
statement or script over a blocking transport), ``get_task`` and
``get_result`` without ``wait`` (``Capability.BLOCKING_READS``, :mod:`omniq._reads`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from typing_extensions import ParamSpec

from omniq._options import EnqueueOptions, TaskOptions
from omniq._portal import Portal, shutdown
from omniq._reads import read_blocking, result_steps, task_steps
from omniq._sync_handles import SyncTaskFunction, SyncWorkerPool
from omniq._tasks import TaskFunction
from omniq.app import AsyncOmniQ
from omniq.constants import EVENT_BATCH_SIZE
from omniq.workflows import Signature, SyncWorkflowHandle, Workflow

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from omniq.config import Settings
    from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus
    from omniq.monitoring import QueueStats, WorkerInfo
    from omniq.scheduling import Schedule

__all__ = ["OmniQ", "SyncTaskFunction", "SyncWorkerPool"]

P = ParamSpec("P")
R = TypeVar("R")
_T = TypeVar("_T")


class OmniQ:
    """The synchronous OmniQ API; same arguments and methods as :class:`AsyncOmniQ`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        task_queue: Any = None,
        result_storage: Any = None,
        event_storage: Any = None,
        allowed_modules: Sequence[str] = (),
        **overrides: Any,
    ) -> None:
        self.async_app = AsyncOmniQ(
            settings,
            task_queue=task_queue,
            result_storage=result_storage,
            event_storage=event_storage,
            allowed_modules=allowed_modules,
            **overrides,
        )
        self.settings = self.async_app.settings
        self._portal = Portal()
        # Runs on close(), on garbage collection, or at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, shutdown, self._portal, self.async_app.close)

    def _call(self, func: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        if self._portal.closed:
            raise RuntimeError("this OmniQ is closed")
        if inspect.iscoroutinefunction(func):
            return self._portal.run(functools.partial(func, *args, **kwargs))
        return self._portal.portal.call(functools.partial(func, *args, **kwargs))

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Build from the environment (and ``OMNIQ_CONFIG``), with ``overrides`` on top."""
        from omniq.config import Settings

        return cls(Settings.load(**overrides))

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> Self:
        """Build from a YAML settings file, with ``overrides`` on top."""
        from omniq.config import Settings

        return cls(Settings.from_yaml(path, **overrides))

    # -- life cycle --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect the components (done on first use anyway)."""
        self._call(self.async_app.connect)

    def close(self) -> None:
        """Close the components and stop the loop thread. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- registration ------------------------------------------------------------------------------

    @overload
    def task(self, func: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        retry_on: type[BaseException] | Iterable[type[BaseException]] | None = None,
        no_retry_on: type[BaseException] | Iterable[type[BaseException]] | None = None,
        **options: Unpack[TaskOptions],
    ) -> Callable[[Callable[P, R]], SyncTaskFunction[P, R]]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retry_on: type[BaseException] | Iterable[type[BaseException]] | None = None,
        no_retry_on: type[BaseException] | Iterable[type[BaseException]] | None = None,
        **options: Unpack[TaskOptions],
    ) -> Any:
        """Register a task function (see :meth:`AsyncOmniQ.task`)."""
        register = self.async_app.task(name=name, retry_on=retry_on, no_retry_on=no_retry_on, **options)
        if func is not None:
            return SyncTaskFunction(self, register(func))
        return lambda fn: SyncTaskFunction(self, register(fn))

    def register(
        self, func: Callable[..., Any], *, name: str | None = None, options: EnqueueOptions | None = None
    ) -> SyncTaskFunction[Any, Any]:
        """Register ``func`` under ``name`` and return its handle."""
        return SyncTaskFunction(self, self.async_app.register(func, name=name, options=options))

    @property
    def functions(self) -> dict[str, TaskFunction[Any, Any]]:
        """Registered task functions by name."""
        return self.async_app.functions

    # -- one line per AsyncOmniQ method ------------------------------------------------------------

    def enqueue(
        self,
        func: Callable[..., Any] | str,
        /,
        *args: Any,
        eta: datetime | None = None,
        delay: float | timedelta | None = None,
        interval: float | timedelta | None = None,
        cron: str | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        ttl: float | timedelta | None = None,
        result_ttl: float | timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        depends_on: str | Iterable[str] | None = None,
        rate_limit: str | None = None,
        rate_burst: int | None = None,
        concurrency_limit: int | None = None,
        limit_key: str | Callable[..., str] | None = None,
        connection: Any = None,
        **kwargs: Any,
    ) -> str:
        """See :meth:`AsyncOmniQ.enqueue`.

        ``connection``: a ``sqlite3`` connection made with ``check_same_thread=False``, as the
        call runs on the app's event-loop thread.
        """
        if isinstance(func, SyncTaskFunction):
            func = func.handle
        name, options = self.async_app._resolve_call(func, EnqueueOptions.picked(locals()))
        if connection is not None:
            return self._call(self.async_app._producer.enqueue, name, args, kwargs, options, connection)
        return self.enqueue_call(name, args, kwargs, options)

    def enqueue_many(
        self,
        func: Callable[..., Any] | str,
        calls: Iterable[Sequence[Any] | Mapping[str, Any]],
        /,
        *,
        connection: Any = None,
        **options: Unpack[TaskOptions],
    ) -> list[str]:
        """See :meth:`AsyncOmniQ.enqueue_many`."""
        if isinstance(func, SyncTaskFunction):
            func = func.handle
        if connection is None and self._blocking():
            name, merged = self.async_app._resolve_call(func, EnqueueOptions.from_kwargs(options))
            calls = list(calls)
            if len(calls) < EVENT_BATCH_SIZE:  # larger batches write their events beside the tasks, on the loop
                return self.async_app._producer.enqueue_many_blocking(name, calls, merged)
        return self._call(self.async_app.enqueue_many, func, calls, connection=connection, **options)

    def enqueue_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions) -> str:
        """See :meth:`AsyncOmniQ.enqueue_call` (the seam sync task handles call)."""
        if self._blocking():
            return self.async_app._producer.enqueue_blocking(name, args, kwargs, options)
        return self._call(self.async_app.enqueue_call, name, args, kwargs, options)

    def _blocking(self, *, reads: bool = False) -> bool:
        """Whether an enqueue (with ``reads``: a read) can run in this thread, without the loop.

        Not before the app is connected in this process (the first call connects it through
        the loop; a forked child's first call starts a loop of its own), nor when eager, nor
        from a coroutine (a transport may run an event loop of its own in this thread).
        """
        if self._portal.closed:
            raise RuntimeError("this OmniQ is closed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            app = self.async_app
            return self._portal.owned and (app._components.reads_blocking if reads else app._producer.blocking)
        return False

    def get_result(self, task_id: str, wait: bool = False, timeout: float | None = None) -> TaskResult | None:
        """See :meth:`AsyncOmniQ.get_result` (read in this thread when the engine can, unless waiting)."""
        app = self.async_app
        if not wait and self._blocking(reads=True):
            return read_blocking(app._components, result_steps(task_id, app._registry.decode_result))  # type: ignore[no-any-return]
        return self._call(app.get_result, task_id, wait, timeout)

    def get_task(self, task_id: str) -> Task | None:
        """See :meth:`AsyncOmniQ.get_task` (read in this thread when the engine can)."""
        if self._blocking(reads=True):
            return read_blocking(self.async_app._components, task_steps(task_id))  # type: ignore[no-any-return]
        return self._call(self.async_app.get_task, task_id)

    def list_tasks(
        self,
        status: TaskStatus | str | None = None,
        limit: int = 25,
        *,
        queue: str | None = None,
        offset: int = 0,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
    ) -> list[Task]:
        """See :meth:`AsyncOmniQ.list_tasks`."""
        return self._call(
            self.async_app.list_tasks,
            status,
            limit,
            queue=queue,
            offset=offset,
            name=name,
            since=since,
            until=until,
            after=after,
        )

    def count_tasks(self, status: TaskStatus | str | None = None, *, queue: str | None = None) -> int:
        """See :meth:`AsyncOmniQ.count_tasks`."""
        return self._call(self.async_app.count_tasks, status, queue=queue)

    def get_events(
        self,
        task_id: str | None = None,
        *,
        types: EventType | str | Sequence[EventType | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """See :meth:`AsyncOmniQ.get_events`."""
        return self._call(self.async_app.get_events, task_id, types=types, since=since, until=until, limit=limit)

    def cancel(self, task_id: str) -> bool:
        """See :meth:`AsyncOmniQ.cancel`."""
        return self._call(self.async_app.cancel, task_id)

    def signature(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Signature:
        """See :meth:`AsyncOmniQ.signature`; ``.enqueue()`` of a workflow of these blocks."""
        name, defaults = self.async_app._registry.name_and_defaults(func)
        return Signature(self, name, args, kwargs, defaults)

    def enqueue_workflow(self, workflow: Workflow) -> SyncWorkflowHandle:
        """See :meth:`AsyncOmniQ.enqueue_workflow`."""
        return SyncWorkflowHandle(self, self._call(self.async_app.enqueue_workflow, workflow))

    def workflow(self, workflow_id: str) -> SyncWorkflowHandle | None:
        """See :meth:`AsyncOmniQ.workflow`."""
        handle = self._call(self.async_app.workflow, workflow_id)
        return None if handle is None else SyncWorkflowHandle(self, handle)

    def retry(self, task_id: str) -> bool:
        """See :meth:`AsyncOmniQ.retry`."""
        return self._call(self.async_app.retry, task_id)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        """See :meth:`AsyncOmniQ.get_schedule`."""
        return self._call(self.async_app.get_schedule, schedule_id)

    def pause_schedule(self, schedule_id: str) -> bool:
        """See :meth:`AsyncOmniQ.pause_schedule`."""
        return self._call(self.async_app.pause_schedule, schedule_id)

    def resume_schedule(self, schedule_id: str) -> bool:
        """See :meth:`AsyncOmniQ.resume_schedule`."""
        return self._call(self.async_app.resume_schedule, schedule_id)

    def cancel_schedule(self, schedule_id: str) -> bool:
        """See :meth:`AsyncOmniQ.cancel_schedule`."""
        return self._call(self.async_app.cancel_schedule, schedule_id)

    def purge(
        self,
        *,
        queue: str | None = None,
        statuses: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
    ) -> int:
        """See :meth:`AsyncOmniQ.purge`."""
        return self._call(self.async_app.purge, queue=queue, statuses=statuses)

    def queue_stats(self) -> list[QueueStats]:
        """See :meth:`AsyncOmniQ.queue_stats`."""
        return self._call(self.async_app.queue_stats)

    def list_workers(self) -> list[WorkerInfo]:
        """See :meth:`AsyncOmniQ.list_workers`."""
        return self._call(self.async_app.list_workers)

    def pause_queue(self, queue: str) -> None:
        """See :meth:`AsyncOmniQ.pause_queue`."""
        self._call(self.async_app.pause_queue, queue)

    def resume_queue(self, queue: str) -> None:
        """See :meth:`AsyncOmniQ.resume_queue`."""
        self._call(self.async_app.resume_queue, queue)

    def paused_queues(self) -> list[str]:
        """See :meth:`AsyncOmniQ.paused_queues`."""
        return self._call(self.async_app.paused_queues)

    @property
    def shared_worker_registry(self) -> bool:
        """See :attr:`AsyncOmniQ.shared_worker_registry`."""
        return self.async_app.shared_worker_registry

    def flush_events(self) -> None:
        """See :meth:`AsyncOmniQ.flush_events`."""
        return self._call(self.async_app.flush_events)

    def worker(
        self,
        concurrency: int | None = None,
        *,
        queues: Sequence[str] | str | None = None,
        pool: str | None = None,
        burst: bool = False,
        worker_id: str | None = None,
    ) -> SyncWorkerPool:
        """See :meth:`AsyncOmniQ.worker`; the returned pool's ``start()`` returns once it runs."""
        return SyncWorkerPool(
            self, self.async_app.worker(concurrency, queues=queues, pool=pool, burst=burst, worker_id=worker_id)
        )

    def run_worker(self, concurrency: int | None = None, **kwargs: Any) -> None:
        """See :meth:`AsyncOmniQ.run_worker`: blocks until the pool stops (burst: drained)."""
        self.worker(concurrency, **kwargs).run()

    def __repr__(self) -> str:
        return f"<OmniQ {self.settings!r}>"
