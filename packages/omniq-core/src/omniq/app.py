"""AsyncOmniQ: the one implementation of the OmniQ API (``OmniQ`` wraps it for sync code).

The app is registration, the public methods and their documentation. What they stand on lives beside it,
one concept per module: ``_components`` (the backends, and the one seam where the app's arguments are
normalised and the components connected before a backend sees them), ``_producer`` (calls and options become
task records), ``_results`` (reading and waiting for results), ``_options`` (the enqueue options, declared
once), ``_tasks`` (task handles), ``_operator`` (the operator's methods: cancel, retry, schedules, queues, workers)
and ``omniq.monitoring`` (what the operator methods return).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from omniq import plugins
from omniq._components import Components
from omniq._eager import run_eagerly
from omniq._operator import OperatorMethods
from omniq._options import EnqueueOptions, TaskOptions
from omniq._producer import Producer
from omniq._reads import read, result_steps, task_steps
from omniq._results import wait_for_result
from omniq._tasks import TaskFunction, TaskRegistry
from omniq.config import Settings
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus
from omniq.retrying import RETRY_EVERYTHING, RetryPolicy
from omniq.serialization import BUILTIN_SERIALIZERS, SerializerRegistry
from omniq.workflows import Signature, Workflow, WorkflowHandle, enqueue_workflow

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, Self, Unpack

    from omniq._events import EventBuffer
    from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue
    from omniq.worker.pool import AsyncWorkerPool

    P = ParamSpec("P")

R = TypeVar("R")

__all__ = ["AsyncOmniQ"]


class AsyncOmniQ(OperatorMethods):
    """An OmniQ application: register tasks, enqueue them, read results, run workers.

    Args:
        settings: the settings; None loads them from the environment
            (``Settings.load()``: code > ``OMNIQ_*`` > YAML > defaults).
        task_queue, result_storage, event_storage: ready component instances
            to use instead of building them from settings.
        allowed_modules: module prefixes a worker may import to find a task
            function that was not registered (``["myapp.tasks"]``); empty by
            default, so an unknown task name is an error, never an import.
        **overrides: settings given in code (only with ``settings=None``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        task_queue: BaseTaskQueue | None = None,
        result_storage: BaseResultStorage | None = None,
        event_storage: BaseEventStorage | None = None,
        allowed_modules: Sequence[str] = (),
        **overrides: Any,
    ) -> None:
        if settings is not None and overrides:
            settings = settings.replace(**overrides)
        self.settings = settings if settings is not None else Settings.load(**overrides)
        wanted = {self.settings.serializer, *self.settings.accept_serializers}
        self.serializer = SerializerRegistry(
            self.settings.serializer,
            self.settings.accept_serializers,
            max_payload_size=self.settings.max_payload_size,
            extra=plugins.plugin_serializers(wanted - set(BUILTIN_SERIALIZERS)),
        )
        self._registry = TaskRegistry(self, allowed_modules)
        self.allowed_modules = self._registry.allowed_modules
        self.functions = self._registry.functions
        self._components = Components(self.settings, task_queue, result_storage, event_storage)
        eager = functools.partial(run_eagerly, self) if self.settings.eager else None
        self._producer = Producer(self.settings, self.serializer, self.functions, self._components, eager)

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Build from the environment (and ``OMNIQ_CONFIG``), with ``overrides`` on top."""
        return cls(Settings.load(**overrides))

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> Self:
        """Build from a YAML settings file, with ``overrides`` on top."""
        return cls(Settings.from_yaml(path, **overrides))

    # -- components --------------------------------------------------------------------------------

    @property
    def task_queue(self) -> BaseTaskQueue:
        """The task queue (available after :meth:`connect`)."""
        return self._components.task_queue

    @property
    def result_storage(self) -> BaseResultStorage:
        """The result storage (available after :meth:`connect`)."""
        return self._components.result_storage

    @property
    def event_storage(self) -> BaseEventStorage:
        """The event storage (available after :meth:`connect`)."""
        return self._components.event_storage

    @property
    def _events(self) -> EventBuffer | None:
        """The event buffer (None when events are disabled); tests look at what went through it."""
        return self._components.events

    async def connect(self) -> None:
        """Build the components from settings (if not given) and connect them. Idempotent."""
        await self._components.connect()

    async def close(self) -> None:
        """Flush buffered events and close the components. Idempotent."""
        await self._components.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- registration ------------------------------------------------------------------------------

    @overload
    def task(self, func: Callable[P, R], /) -> TaskFunction[P, R]: ...

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
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

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
        """Register a task function; use as ``@app.task`` or ``@app.task(queue="mail", max_retries=5)``.

        The options (see :meth:`enqueue`) become the task's defaults. ``retry_on`` (only these
        exception classes retry) and ``no_retry_on`` (these never do) are the worker's: see
        :mod:`omniq.retrying`.
        """
        policy = RetryPolicy(retry_on, no_retry_on) if retry_on is not None or no_retry_on is not None else None
        return self._registry.decorate(func, name, EnqueueOptions.from_kwargs(options), policy or RETRY_EVERYTHING)

    def register(
        self, func: Callable[..., Any], *, name: str | None = None, options: EnqueueOptions | None = None
    ) -> TaskFunction[Any, Any]:
        """Register ``func`` under ``name`` (default ``module.qualname``) and return its handle."""
        return self._registry.register(func, name, options)

    def resolve(self, name: str) -> TaskFunction[Any, Any]:
        """Return the registered task ``name``; import it only from ``allowed_modules``.

        Raises:
            UnknownTaskError: nothing is registered under ``name``.
        """
        return self._registry.resolve(name)

    # -- producing ---------------------------------------------------------------------------------

    async def enqueue(
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
        """Enqueue ``func(*args, **kwargs)`` and return the task id (with ``interval``/``cron``: the schedule id).

        ``func`` is a registered task, a callable (registered on the fly) or a registered name; ``*args`` and
        ``**kwargs`` are the task's arguments. The options are declared and documented once, in
        :class:`~omniq.EnqueueOptions`; None takes the decorator's default.

        ``connection``: a database connection of yours with a transaction open (an asyncpg connection on
        PostgreSQL; a ``sqlite3`` connection to the same file on SQLite): the task is stored in that
        transaction, so a rollback enqueues nothing. Other engines raise :class:`~omniq.NotSupportedError`.
        """
        name, options = self._resolve_call(func, EnqueueOptions.picked(locals()))
        return await self._producer.enqueue(name, args, kwargs, options, connection)

    async def enqueue_many(
        self,
        func: Callable[..., Any] | str,
        calls: Iterable[Sequence[Any] | Mapping[str, Any]],
        /,
        *,
        connection: Any = None,
        **options: Unpack[TaskOptions],
    ) -> list[str]:
        """Enqueue many calls of one task in one round trip.

        Each item of ``calls`` is a sequence of positional arguments or a
        mapping of keyword arguments. ``options`` (those of :meth:`enqueue`)
        apply to every call; ``connection`` is :meth:`enqueue`'s.
        """
        name, merged = self._resolve_call(func, EnqueueOptions.from_kwargs(options))
        return await self._producer.enqueue_many(name, calls, merged, connection)

    def _resolve_call(self, func: Callable[..., Any] | str, options: EnqueueOptions) -> tuple[str, EnqueueOptions]:
        """The task name of ``func`` (a callable is registered on the fly) and ``options`` over its defaults."""
        name, defaults = self._registry.name_and_defaults(func)
        return name, defaults.merged(options)

    def signature(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Signature:
        """``task.s(*args, **kwargs)`` for a task known by name (or a callable): a workflow signature."""
        name, defaults = self._registry.name_and_defaults(func)
        return Signature(self, name, args, kwargs, defaults)

    async def enqueue_workflow(self, workflow: Workflow) -> WorkflowHandle:
        """Enqueue a chain, group, chord or signature (what ``workflow.enqueue()`` does); return its handle."""
        return await enqueue_workflow(self, workflow)

    async def enqueue_call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> str:
        """Enqueue ``name(*args, **kwargs)`` with complete ``options``; the seam task handles enqueue through."""
        return await self._producer.enqueue(name, args, kwargs, options)

    def _build_task(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], opts: EnqueueOptions) -> Task:
        """The task record of a call, not enqueued (tests and benchmarks make records this way)."""
        return self._producer.build(name, args, kwargs, opts)

    async def flush_events(self) -> None:
        """Write buffered events now (workers call it on shutdown)."""
        await self._components.flush_events()

    def record_events(self, events: Sequence[TaskEvent]) -> None:
        """Queue events for the event storage (no-op when events are disabled)."""
        self._components.record(events)

    # -- reading -----------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """Return the task record, or None; a RUNNING one with its latest ``progress`` report (:mod:`omniq.progress`)."""
        await self.connect()
        task: Task | None = await read(self._components, task_steps(task_id))
        return task

    def decode_args(self, task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode a task's arguments, as its function declares them (raises SerializationError, TaskArgumentError)."""
        return self._registry.decode_args(task)

    async def get_result(self, task_id: str, wait: bool = False, timeout: float | None = None) -> TaskResult | None:
        """Return the task's result, or None while there is none.

        With ``wait=True`` wait for it, at most ``timeout`` seconds (None: no
        limit); None if the time runs out first (an answer, not an error). A
        waiter rides out a reconnect (BackendUnavailableError only if the
        backend is still away when the time is up), and never waits for ever
        for a task that is terminal without a result (its worker died between
        the two writes): it gets a result made from the record.

        Raises:
            TaskNotFoundError: with ``wait=True``, when there is neither a
                result nor a task with this id (unknown, or purged). Without
                ``wait`` an unknown id reads as None, like an unfinished task.
        """
        await self.connect()
        decode = self._registry.decode_result
        if not wait:
            return await read(self._components, result_steps(task_id, decode))  # type: ignore[no-any-return]
        result = await wait_for_result(self._components, task_id, timeout)
        return decode(result) if result is not None else None

    async def list_tasks(
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
        """List tasks, newest first, filtered by status, queue, task name and ``since <= created_at < until``.

        Page with ``after=omniq.monitoring.page_cursor(last.created_at, last.id)`` of the previous page's last
        task: such pages never skip or repeat a task as others come and go. ``offset`` (kept for compatibility)
        combines with ``status`` and ``queue`` only.
        """
        return await self._components.list_tasks(status, queue, limit, offset, name, since, until, after)

    async def count_tasks(self, status: TaskStatus | str | None = None, *, queue: str | None = None) -> int:
        """Count tasks, optionally filtered by status (a TaskStatus or its value) and queue."""
        return await self._components.count_tasks(status, queue)

    async def get_events(
        self,
        task_id: str | None = None,
        *,
        types: EventType | str | Sequence[EventType | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Query recorded events, oldest first (buffered ones are flushed first).

        Filters: ``task_id``; ``types``, one event type or several (``EventType`` members or their values);
        ``since <= at < until`` (aware; a naive one is local time); at most ``limit`` events.
        """
        return await self._components.query_events(task_id, types, since, until, limit)

    # -- workers -----------------------------------------------------------------------------------

    def worker(
        self,
        concurrency: int | None = None,
        *,
        queues: Sequence[str] | str | None = None,
        pool: str | None = None,
        burst: bool = False,
        worker_id: str | None = None,
    ) -> AsyncWorkerPool:
        """Return a worker pool for this app; ``await pool.start()`` runs it until stopped.

        Args:
            concurrency: tasks in flight (default ``settings.max_workers``).
            queues: queues to consume (default ``settings.queues``).
            pool: ``async`` (coroutines on the loop, sync functions in threads),
                ``thread`` or ``process`` (default ``settings.default_worker``).
            burst: drain the ready tasks, then return.
            worker_id: the name its leases and events carry (default
                ``<host>:<pid>:<suffix>``).
        """
        from omniq.worker.pool import AsyncWorkerPool

        return AsyncWorkerPool(
            self, concurrency=concurrency, queues=queues, pool=pool, burst=burst, worker_id=worker_id
        )

    async def run_worker(self, concurrency: int | None = None, **kwargs: Any) -> None:
        """Run a worker pool until it is stopped (or drained, with ``burst=True``)."""
        await self.worker(concurrency, **kwargs).start()

    def __repr__(self) -> str:
        return f"<AsyncOmniQ {self.settings!r}>"
