"""AsyncOmniQ: the one implementation of the OmniQ API (``OmniQ`` wraps it for sync code)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

import anyio
import msgspec

from omniq import plugins
from omniq._events import EventBuffer
from omniq._limits import check_options
from omniq._tasks import EnqueueOptions, TaskFunction, task_name
from omniq.config import Settings
from omniq.constants import DEFAULT_QUEUE, EVENT_BATCH_SIZE, RESULT_WAIT_RECHECK_SECONDS
from omniq.errors import BackendUnavailableError, ConfigurationError, UnknownTaskError
from omniq.models import (
    EventType,
    Schedule,
    Task,
    TaskError,
    TaskEvent,
    TaskResult,
    TaskStatus,
    new_id,
    new_ids,
    utcnow,
)
from omniq.scheduling import next_cron_tick, resolve_eta, to_seconds, validate_cron
from omniq.serialization import BUILTIN_SERIALIZERS, SerializerRegistry, call_arguments

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, Self

    from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue
    from omniq.worker.pool import AsyncWorkerPool

    P = ParamSpec("P")

R = TypeVar("R")
_C = TypeVar("_C")

__all__ = ["AsyncOmniQ"]

#: option sets whose time-independent part an app keeps resolved.
_RESOLVED_CACHE = 256


class _Resolved(NamedTuple):
    """The part of a task's options that does not depend on when it is enqueued, resolved."""

    interval: float | None
    cron: str | None
    ttl: float | None
    max_retries: int
    timeout: float | None
    result_ttl: float | None
    queue: str
    priority: int
    unique_key: str | None
    depends_on: tuple[str, ...]


logger = logging.getLogger(__name__)


class AsyncOmniQ:
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
        self.allowed_modules = tuple(allowed_modules)
        self.functions: dict[str, TaskFunction[Any, Any]] = {}
        self._given = {"task_queue": task_queue, "result_storage": result_storage, "event_storage": event_storage}
        self._task_queue = task_queue
        self._result_storage = result_storage
        self._event_storage = event_storage
        self._events: EventBuffer | None = None
        self._fuse_events = False
        # options -> their time-independent part, resolved (see _task_builder)
        self._resolved: dict[EnqueueOptions, _Resolved] = {}
        self._connected = False
        self._connect_lock: anyio.Lock | None = None
        self._hooks_in_use: frozenset[str] | None = None

    # -- construction ------------------------------------------------------------------------------

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
        return self._require(self._task_queue, "task_queue")

    @property
    def result_storage(self) -> BaseResultStorage:
        """The result storage (available after :meth:`connect`)."""
        return self._require(self._result_storage, "result_storage")

    @property
    def event_storage(self) -> BaseEventStorage:
        """The event storage (available after :meth:`connect`)."""
        return self._require(self._event_storage, "event_storage")

    @staticmethod
    def _require(component: _C | None, name: str) -> _C:
        if component is None:
            raise RuntimeError(f"the {name} is not connected yet: use 'async with app:' or 'await app.connect()'")
        return component

    def _build(self, name: str) -> Any:
        component = self.settings.component(name)
        cls = plugins.resolve_backend(name, component.type)
        return cls.from_settings(component, self.settings)

    async def connect(self) -> None:
        """Build the components from settings (if not given) and connect them. Idempotent."""
        if self._connected:
            return
        if self._connect_lock is None:
            self._connect_lock = anyio.Lock()
        async with self._connect_lock:
            if self._connected:
                return
            if self._task_queue is None:
                self._task_queue = self._build("task_queue")
            if self._result_storage is None:
                self._result_storage = self._build("result_storage")
            if self._event_storage is None and self.settings.events_enabled:
                self._event_storage = self._build("event_storage")
            for component in (self._task_queue, self._result_storage, self._event_storage):
                if component is not None:
                    await component.connect()
            if self._event_storage is not None and self.settings.events_enabled:
                self._events = EventBuffer(self._event_storage)
                self._fuse_events = self._task_queue.can_fuse_events(self._event_storage)
            self._hooks_in_use = plugins.lifecycle_hooks_in_use()
            self._connected = True

    async def close(self) -> None:
        """Flush buffered events and close the components. Idempotent."""
        if not self._connected:
            return
        self._connected = False
        if self._events is not None:
            await self._events.flush()
        for name in ("event_storage", "result_storage", "task_queue"):
            component = getattr(self, f"_{name}")
            if component is not None:
                await component.close()
                if self._given[name] is None:
                    setattr(self, f"_{name}", None)

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
        self, func: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(self, func: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any) -> Any:
        """Register a task function; use as ``@app.task`` or ``@app.task(queue="mail", max_retries=5)``.

        The options (see :meth:`enqueue`) become the task's defaults.
        """
        defaults = EnqueueOptions.from_kwargs(options)

        def register(fn: Callable[..., Any]) -> TaskFunction[Any, Any]:
            return self.register(fn, name=name, options=defaults)

        return register(func) if func is not None else register

    def register(
        self, func: Callable[..., Any], *, name: str | None = None, options: EnqueueOptions | None = None
    ) -> TaskFunction[Any, Any]:
        """Register ``func`` under ``name`` (default ``module.qualname``) and return its handle."""
        if isinstance(func, TaskFunction):
            func = func.func
        key = name or task_name(func)
        existing = self.functions.get(key)
        if existing is not None and existing.func is not func:
            raise ConfigurationError(f"a different function is already registered as task {key!r}")
        handle = TaskFunction(self, func, key, options or EnqueueOptions())
        self.functions[key] = handle
        return handle

    def resolve(self, name: str) -> TaskFunction[Any, Any]:
        """Return the registered task ``name``; import it only from ``allowed_modules``.

        Raises:
            UnknownTaskError: nothing is registered under ``name``.
        """
        handle = self.functions.get(name)
        if handle is not None:
            return handle
        module_name, _, attr = name.rpartition(".")
        if module_name and any(module_name == m or module_name.startswith(m + ".") for m in self.allowed_modules):
            import importlib

            try:
                target = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise UnknownTaskError(f"task {name!r} cannot be imported: {exc}") from exc
            return self.register(target, name=name)
        raise UnknownTaskError(
            f"no task is registered as {name!r} in this worker; "
            f"registered: {', '.join(sorted(self.functions)) or 'none'}"
        )

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
        **kwargs: Any,
    ) -> str:
        """Enqueue ``func(*args, **kwargs)`` and return the task id.

        Args:
            func: a registered task, a callable (registered on the fly) or a registered name.
            *args: the task's positional arguments.
            eta: run at that time (an aware datetime).
            delay: run after that many seconds (or a timedelta).
            interval: run repeatedly, every that many seconds (or a timedelta);
                the returned id is the schedule id.
            cron: run repeatedly, at the ticks of this cron expression; the
                returned id is the schedule id.
            max_retries: retries after the first attempt: ``max_retries=2`` runs
                the task at most 3 times.
            timeout: seconds one attempt may run.
            ttl: seconds the task may wait; if it has not started by then it is
                recorded EXPIRED and never runs.
            result_ttl: seconds the result is kept.
            queue: the queue it goes to (default ``"default"``).
            priority: higher runs first among ready tasks of a queue (default 0).
            unique_key: while a task with this key is pending or running, enqueue
                returns that task's id instead of adding another.
            depends_on: task ids that must succeed first; if one fails, this
                task fails with a DependencyFailed error.
            **kwargs: the task's keyword arguments.
        """
        depends = (depends_on,) if isinstance(depends_on, str) else tuple(depends_on) if depends_on else None
        options = EnqueueOptions(
            eta=eta,
            delay=delay,
            interval=interval,
            cron=cron,
            max_retries=max_retries,
            timeout=timeout,
            ttl=ttl,
            result_ttl=result_ttl,
            queue=queue,
            priority=priority,
            unique_key=unique_key,
            depends_on=depends,
        )
        name, defaults = self._name_and_defaults(func)
        return await self._enqueue_call(name, args, kwargs, defaults.merged(options))

    async def enqueue_many(
        self, func: Callable[..., Any] | str, calls: Iterable[Sequence[Any] | Mapping[str, Any]], /, **options: Any
    ) -> list[str]:
        """Enqueue many calls of one task in one round trip.

        Each item of ``calls`` is a sequence of positional arguments or a
        mapping of keyword arguments. ``options`` apply to every call.
        """
        name, defaults = self._name_and_defaults(func)
        merged = defaults.merged(EnqueueOptions.from_kwargs(options))
        handle = self.functions.get(name)
        build = self._task_builder(name, merged)  # options are resolved once for the whole batch
        dumps = self.serializer.dumps
        payloads = []
        for call in calls:
            if type(call) is tuple:  # the usual shape; spares the Mapping ABC check
                args, kwargs = call, {}
            elif isinstance(call, Mapping):
                args, kwargs = (), dict(call)
            else:
                args, kwargs = tuple(call), {}
            payloads.append(payload := dumps((args, kwargs)))
            if handle is not None:
                handle.check_arguments(args, kwargs, payload)
        tasks = [build(payload, task_id) for payload, task_id in zip(payloads, new_ids(len(payloads)), strict=True)]
        await self.connect()
        if self._fuse_events and self._events is not None and len(tasks) >= EVENT_BATCH_SIZE:
            # A batch this large would be flushed at once anyway: the backend writes it beside
            # the tasks (in parallel, committed after them) instead of after them.
            ids, unwritten = await self.task_queue.enqueue_recorded(
                tasks, self._enqueue_events(tasks), self._events.storage
            )
            self._events.extend(unwritten)
            if self._hooks_in_use and "omniq_task_enqueued" in self._hooks_in_use:
                self._after_enqueue([t for t, i in zip(tasks, ids, strict=True) if t.id == i], events=False)
            return ids
        ids = await self.task_queue.enqueue_many(tasks)
        self._after_enqueue([t for t, i in zip(tasks, ids, strict=True) if t.id == i])
        return ids

    def _name_and_defaults(self, func: Callable[..., Any] | str) -> tuple[str, EnqueueOptions]:
        if isinstance(func, str):
            handle = self.functions.get(func)
            return func, handle.default_options if handle else EnqueueOptions()
        if isinstance(func, TaskFunction):
            return func.name, func.default_options
        handle = self.functions.get(task_name(func))
        if handle is None or handle.func is not func:
            handle = self.register(func)
        return handle.name, handle.default_options

    async def _enqueue_call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> str:
        handle = self.functions.get(name)
        task = self._build_task(name, args, kwargs, options)
        if handle is not None:
            handle.check_arguments(args, kwargs, task.payload)
        if not self._connected:  # (skips a coroutine per call on the hot path)
            await self.connect()
        task_id = await self.task_queue.enqueue(task)
        if task_id == task.id:
            self._after_enqueue([task])
        return task_id

    def _build_task(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], opts: EnqueueOptions) -> Task:
        return self._task_builder(name, opts)(self.serializer.dumps((args, kwargs)))

    def _task_builder(self, name: str, opts: EnqueueOptions) -> Callable[..., Task]:
        """Validate and resolve ``opts`` once; the returned function makes a task per payload."""
        now = utcnow()
        try:
            fixed = self._resolved.get(opts)
        except TypeError:  # an option value that cannot be hashed: resolve it every time
            fixed = self._resolve(opts)
        else:
            if fixed is None:
                fixed = self._resolve(opts)
                if len(self._resolved) < _RESOLVED_CACHE:  # a bound: apps use a handful of option sets
                    self._resolved[opts] = fixed
        eta = resolve_eta(opts.eta, opts.delay, now)
        if fixed.cron is not None and eta is None:
            eta = next_cron_tick(fixed.cron, now)
        expires_at = (eta or now) + timedelta(seconds=fixed.ttl) if fixed.ttl is not None else None

        def build(payload: bytes, task_id: str | None = None) -> Task:
            return Task(
                id=task_id or new_id(),
                func=name,
                payload=payload,
                queue=fixed.queue,
                priority=fixed.priority,
                unique_key=fixed.unique_key,
                eta=eta,
                interval=fixed.interval,
                cron=fixed.cron,
                max_retries=fixed.max_retries,
                timeout=fixed.timeout,
                expires_at=expires_at,
                result_ttl=fixed.result_ttl,
                depends_on=fixed.depends_on,
                created_at=now,
            )

        return build

    def _resolve(self, opts: EnqueueOptions) -> _Resolved:
        """The options' part that does not depend on the time, validated and with defaults filled in."""
        check_options(opts)  # bounds first: nothing out of range reaches a Task (or an OverflowError)
        settings = self.settings
        interval = to_seconds(opts.interval, "interval")
        if interval is not None and interval <= 0:
            raise ConfigurationError(f"interval={opts.interval!r} is not valid: it must be positive")
        cron = validate_cron(opts.cron) if opts.cron is not None else None
        if interval is not None and cron is not None:
            raise ConfigurationError("give either interval or cron, not both")
        max_retries = opts.max_retries if opts.max_retries is not None else settings.default_max_retries
        if max_retries < 0:
            raise ConfigurationError(f"max_retries={max_retries} is not valid: expected an integer >= 0")
        return _Resolved(
            interval=interval,
            cron=cron,
            ttl=to_seconds(opts.ttl, "ttl") if opts.ttl is not None else settings.task_ttl,
            max_retries=max_retries,
            timeout=to_seconds(opts.timeout, "timeout") if opts.timeout is not None else settings.default_timeout,
            result_ttl=(
                to_seconds(opts.result_ttl, "result_ttl") if opts.result_ttl is not None else settings.result_ttl
            ),
            queue=opts.queue or DEFAULT_QUEUE,
            priority=opts.priority or 0,
            unique_key=opts.unique_key,
            depends_on=opts.depends_on or (),
        )

    def _enqueue_events(self, tasks: Sequence[Task]) -> list[TaskEvent]:
        now = utcnow()
        return [
            TaskEvent(
                task_id=t.id,
                type=EventType.SCHEDULED if t.eta is not None and t.eta > now else EventType.ENQUEUED,
                timestamp=now,
                queue=t.queue,
                func=t.func,
            )
            for t in tasks
        ]

    def _after_enqueue(self, tasks: Sequence[Task], *, events: bool = True) -> None:
        if events and self._events is not None:
            self._events.extend(self._enqueue_events(tasks))
        if self._hooks_in_use and "omniq_task_enqueued" in self._hooks_in_use:
            for task in tasks:
                plugins.call_lifecycle("omniq_task_enqueued", task=task)

    async def flush_events(self) -> None:
        """Write buffered events now (workers call it on shutdown)."""
        if self._events is not None:
            await self._events.flush()

    def record_events(self, events: Sequence[TaskEvent]) -> None:
        """Queue events for the event storage (no-op when events are disabled)."""
        if self._events is not None:
            self._events.extend(list(events))

    # -- reading -----------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """Return the task record, or None."""
        await self.connect()
        return await self.task_queue.get(task_id)

    def decode_args(self, task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode a task's arguments, as its function declares them (raises SerializationError, TaskArgumentError)."""
        handle = self.functions.get(task.func)
        return handle.load_arguments(task.payload) if handle else call_arguments(self.serializer.loads(task.payload))

    async def get_result(self, task_id: str, wait: bool = False, timeout: float | None = None) -> TaskResult | None:
        """Return the task's result, or None while there is none.

        With ``wait=True`` wait for it, at most ``timeout`` seconds (None:
        no limit), and return None if the time runs out first. A waiter rides
        out a backend that is briefly unavailable (a reconnect) and raises
        BackendUnavailableError only if it still is when the time is up. A waiter
        never waits forever for a task that has finished: if the queue shows
        the task terminal without a result (its worker died between the two
        writes), a result is made from the task record.
        """
        await self.connect()
        if not wait:
            result = await self.result_storage.get(task_id) or await self._result_from_task(task_id)
            return self._decoded(result) if result is not None else None
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            outcome = await self._try_wait(task_id, deadline)
            if not isinstance(outcome, BackendUnavailableError):
                return self._decoded(outcome) if outcome is not None else None
            # A waiter rides out a reconnect; if its time runs out first, it learns why.
            if deadline is not None and anyio.current_time() >= deadline:
                raise outcome
            logger.info("waiting for result %s: backend unavailable (%s); retrying", task_id, outcome)
            await anyio.sleep(0.25 if deadline is None else max(0.0, min(0.25, deadline - anyio.current_time())))

    async def _try_wait(self, task_id: str, deadline: float | None) -> TaskResult | BackendUnavailableError | None:
        """Wait for the result until ``deadline``; an unavailable backend is returned, not raised."""
        try:
            result = await self.result_storage.get(task_id)
            while result is None:
                remaining = None if deadline is None else deadline - anyio.current_time()
                if remaining is not None and remaining <= 0:
                    return None
                step = RESULT_WAIT_RECHECK_SECONDS if remaining is None else min(remaining, RESULT_WAIT_RECHECK_SECONDS)
                result = await self.result_storage.wait(task_id, step)
                if result is None:
                    result = await self._result_from_task(task_id)
            return result
        except BackendUnavailableError as exc:
            return exc

    async def _result_from_task(self, task_id: str) -> TaskResult | None:
        task = await self.task_queue.get(task_id)
        if task is None or not task.status.is_terminal:
            return None
        stored = await self.result_storage.get(task_id)
        if stored is not None:
            return stored
        return TaskResult.from_task(task, finished_at=task.finished_at)

    def _decoded(self, result: TaskResult) -> TaskResult:
        handle = self.functions.get(result.func)  # when registered, the value comes in its declared return type
        value = (handle.load_result if handle else self.serializer.loads)(result.payload) if result.payload else None
        return msgspec.structs.replace(result, result=value)

    async def list_tasks(
        self, status: TaskStatus | str | None = None, limit: int = 25, *, queue: str | None = None, offset: int = 0
    ) -> list[Task]:
        """List tasks, newest first, optionally filtered by status and queue."""
        await self.connect()
        return await self.task_queue.list(
            status=TaskStatus(status) if status is not None else None, queue=queue, limit=limit, offset=offset
        )

    async def count_tasks(self, status: TaskStatus | str | None = None, *, queue: str | None = None) -> int:
        """Count tasks, optionally filtered by status and queue."""
        await self.connect()
        return await self.task_queue.count(status=TaskStatus(status) if status is not None else None, queue=queue)

    async def get_events(
        self,
        task_id: str | None = None,
        *,
        types: Sequence[EventType | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Query recorded events (buffered ones are flushed first)."""
        await self.connect()
        if self._events is None:
            return []
        await self._events.flush()
        return await self.event_storage.query(
            task_id=task_id,
            types=[EventType(t).value for t in types] if types else None,
            since=since,
            until=until,
            limit=limit,
        )

    # -- control -----------------------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Cancel a pending or running task (a recurring one stops recurring).

        A running task's worker loses its lease: its outcome is not recorded
        and it stops the task at its next heartbeat. Waiters on the result
        receive a CANCELLED result. Returns False if the task was unknown or finished.
        """
        await self.connect()
        if not await self.task_queue.cancel(task_id):
            return False
        # Read back after the cancel: the record is CANCELLED now (purged concurrently: None).
        task = await self.task_queue.get(task_id)
        if task is None:
            task = Task(id=task_id, func="", status=TaskStatus.CANCELLED, result_ttl=self.settings.result_ttl)
        await self.result_storage.set(TaskResult.from_task(task, TaskStatus.CANCELLED))
        if self._events is not None:
            self._events.add(TaskEvent(task_id=task_id, type=EventType.CANCELLED, queue=task.queue, func=task.func))
        return True

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """Return the schedule of a recurring task (its id is the schedule id)."""
        task = await self.get_task(schedule_id)
        return Schedule.from_task(task) if task is not None and task.recurring else None

    async def pause_schedule(self, schedule_id: str) -> bool:
        """Stop a recurring task from running until :meth:`resume_schedule`."""
        return await self._set_paused(schedule_id, True)

    async def resume_schedule(self, schedule_id: str) -> bool:
        """Let a paused recurring task run again."""
        return await self._set_paused(schedule_id, False)

    async def _set_paused(self, task_id: str, paused: bool) -> bool:
        await self.connect()
        changed = await self.task_queue.set_paused(task_id, paused)
        if changed and self._events is not None:
            self._events.add(TaskEvent(task_id=task_id, type=EventType.PAUSED if paused else EventType.RESUMED))
        return changed

    async def cancel_schedule(self, schedule_id: str) -> bool:
        """End a recurring task for good."""
        return await self.cancel(schedule_id)

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus | str] | None = None) -> int:
        """Delete tasks (all, or by queue / statuses) and, when purging everything, results and events."""
        await self.connect()
        count = await self.task_queue.purge(
            queue=queue, statuses=[TaskStatus(s) for s in statuses] if statuses else None
        )
        if queue is None and not statuses:
            await self.result_storage.purge(expired_only=False)
            if self._events is not None:
                await self._events.flush()
                await self.event_storage.purge()
        return count

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


def error_from_exception(exc: BaseException, attempt: int, *, retryable: bool = True) -> TaskError:
    """Describe an exception raised by a task as a TaskError."""
    import traceback

    return TaskError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        attempt=attempt,
        retryable=retryable,
    )
