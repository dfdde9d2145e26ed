"""The seam between the app and its backends: the three components, and every call the app makes into them.

An app holds one :class:`Components`. It builds the task queue, result
storage and event storage from settings (unless given), connects and closes
them, owns the event buffer, and is the one place where the app's arguments
are normalised before a backend sees them (``base.py`` states what backends
receive):

* statuses: a ``TaskStatus`` or its string value -> ``TaskStatus``;
* event types: one type or a sequence of them, each an ``EventType`` or its
  string value -> a tuple of strings, or None for "any";
* times: an aware datetime, or a naive one taken as local time (as an
  ``eta`` is) -> an aware UTC datetime;
* a page of tasks: the filters, a positive limit and a checked cursor ->
  a ``TaskQuery`` (``omniq.monitoring``).

Each call the app makes connects the components first (idempotent), so the
app's methods are one line each.

A value that is none of these is a ``ConfigurationError`` naming the
argument, raised before any backend call. Producing (``_producer``) and
reading results (``_results``) reach the backends through this object too;
they take no user value a backend would need normalised. The worker pool
talks to the task queue directly (claim, extend, finish, recover): those
calls carry records the backends made themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from omniq import plugins
from omniq._events import EventBuffer
from omniq.capabilities import Capability
from omniq.errors import ConfigurationError
from omniq.lifecycle import Lifecycle
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.monitoring import RETRYABLE_STATUSES, QueueStats, TaskQuery, WorkerInfo, decode_cursor

if TYPE_CHECKING:
    from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue
    from omniq.config import Settings

__all__ = ["Components", "aware_time", "event_types", "status", "statuses"]

_C = TypeVar("_C")

logger = logging.getLogger("omniq.app")

_STATUS_VALUES = ", ".join(s.value for s in TaskStatus)
_EVENT_VALUES = ", ".join(e.value for e in EventType)


def status(value: TaskStatus | str | None, name: str = "status") -> TaskStatus | None:
    """A task status from a ``TaskStatus`` or its value (``"pending"``); None stays None."""
    if value is None or isinstance(value, TaskStatus):
        return value
    try:
        return TaskStatus(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r} is not valid: expected one of {_STATUS_VALUES}") from None


def statuses(values: TaskStatus | str | Sequence[TaskStatus | str] | None) -> list[TaskStatus] | None:
    """Task statuses from one status or several (each a ``TaskStatus`` or its value); None or empty: None."""
    if values is None:
        return None
    items = [values] if isinstance(values, (str, TaskStatus)) else list(values)
    return [s for s in (status(v, "statuses") for v in items) if s is not None] or None


def event_types(values: EventType | str | Sequence[EventType | str] | None) -> tuple[str, ...] | None:
    """Event types as backends take them: a tuple of string values, or None (any type)."""
    if values is None:
        return None
    items = [values] if isinstance(values, (str, EventType)) else list(values)
    if not items:
        return None
    return tuple(_event_type(value) for value in items)


def _event_type(value: EventType | str) -> str:
    try:
        return EventType(value).value
    except ValueError:
        raise ConfigurationError(f"types={value!r} is not valid: expected any of {_EVENT_VALUES}") from None


def aware_time(value: datetime | None, name: str) -> datetime | None:
    """An aware UTC datetime; a naive one is local time, as ``datetime.timestamp()`` takes it."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{name}={value!r} is not valid: expected a datetime")
    return (value.astimezone() if value.tzinfo is None else value).astimezone(timezone.utc)


class Components:
    """An app's task queue, result storage and event storage, and the calls the app makes into them."""

    def __init__(
        self,
        settings: Settings,
        task_queue: BaseTaskQueue | None,
        result_storage: BaseResultStorage | None,
        event_storage: BaseEventStorage | None,
    ) -> None:
        self.settings = settings
        self._given = {"task_queue": task_queue, "result_storage": result_storage, "event_storage": event_storage}
        self.task_queue_or_none = task_queue
        self.result_storage_or_none = result_storage
        self.event_storage_or_none = event_storage
        #: buffered event recording; None when events are disabled (or not connected yet).
        self.events: EventBuffer | None = None
        #: whether a large bulk enqueue writes its events beside the tasks (see ``base.can_fuse_events``).
        self.fuse_events = False
        #: the lifecycle hooks some plugin implements (read once, at connect).
        self.lifecycle = Lifecycle.empty()
        self.connected = False
        self._connect_lock: anyio.Lock | None = None
        self._said_local_registry = False

    # -- the components ------------------------------------------------------------------------------

    @property
    def task_queue(self) -> BaseTaskQueue:
        """The task queue (available after :meth:`connect`)."""
        return _require(self.task_queue_or_none, "task_queue")

    @property
    def result_storage(self) -> BaseResultStorage:
        """The result storage (available after :meth:`connect`)."""
        return _require(self.result_storage_or_none, "result_storage")

    @property
    def event_storage(self) -> BaseEventStorage:
        """The event storage (available after :meth:`connect`)."""
        return _require(self.event_storage_or_none, "event_storage")

    @property
    def reads_blocking(self) -> bool:
        """Whether a task and a result can be read in the calling thread now (``Capability.BLOCKING_READS``)."""
        return (
            self.connected
            and Capability.BLOCKING_READS in self.task_queue.capabilities
            and Capability.BLOCKING_READS in self.result_storage.capabilities
        )

    def _type(self, name: str) -> str:
        return self.settings.component(name).type

    def _build(self, name: str) -> Any:
        component = self.settings.component(name)
        cls = plugins.resolve_backend(name, component.type)
        return cls.from_settings(component, self.settings)

    async def connect(self) -> None:
        """Build the components from settings (those not given) and connect them. Idempotent."""
        if self.connected:
            return
        if self._connect_lock is None:
            self._connect_lock = anyio.Lock()
        async with self._connect_lock:
            if self.connected:
                return
            events_enabled = self.settings.events_enabled
            if self.task_queue_or_none is None:
                self.task_queue_or_none = self._build("task_queue")
            if self.result_storage_or_none is None:
                self.result_storage_or_none = self._build("result_storage")
            if self.event_storage_or_none is None and events_enabled:
                self.event_storage_or_none = self._build("event_storage")
            for component in (self.task_queue_or_none, self.result_storage_or_none, self.event_storage_or_none):
                if component is not None:
                    await component.connect()
            if self.event_storage_or_none is not None and events_enabled:
                self.events = EventBuffer(self.event_storage_or_none)
                self.fuse_events = self.task_queue.can_fuse_events(self.event_storage_or_none)
            self.lifecycle = Lifecycle()
            self.connected = True

    async def close(self) -> None:
        """Flush buffered events and close the components; those built from settings are dropped. Idempotent."""
        if not self.connected:
            return
        self.connected = False
        if self.events is not None:
            await self.events.flush()
        for name in ("event_storage", "result_storage", "task_queue"):
            component = getattr(self, f"{name}_or_none")
            if component is not None:
                await component.close()
                if self._given[name] is None:
                    setattr(self, f"{name}_or_none", None)

    # -- events --------------------------------------------------------------------------------------

    def record(self, events: Sequence[TaskEvent]) -> None:
        """Queue events for the event storage (no-op when events are disabled)."""
        if self.events is not None:
            self.events.extend(list(events))

    async def flush_events(self) -> None:
        """Write buffered events now."""
        if self.events is not None:
            await self.events.flush()

    async def query_events(
        self,
        task_id: str | None,
        types: EventType | str | Sequence[EventType | str] | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[TaskEvent]:
        """Recorded events matching the filters (buffered ones flushed first); [] when events are disabled."""
        await self.connect()
        wanted = event_types(types)
        since, until = aware_time(since, "since"), aware_time(until, "until")
        if self.events is None:
            return []
        await self.events.flush()
        return await self.event_storage.query(task_id=task_id, types=wanted, since=since, until=until, limit=limit)

    # -- tasks ---------------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The task record, or None."""
        await self.connect()
        return await self.task_queue.get(task_id)

    async def list_tasks(
        self,
        task_status: TaskStatus | str | None,
        queue: str | None,
        limit: int,
        offset: int,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
    ) -> list[Task]:
        """Tasks newest first: by offset through ``list``, or with any key-page filter through ``list_page``.

        ``list_page`` takes a ``TaskQuery``: the cursor is checked and the
        times made aware here, before any backend call.
        """
        await self.connect()
        if name is None and since is None and until is None and after is None:
            return await self.task_queue.list(status=status(task_status), queue=queue, limit=limit, offset=offset)
        if offset:
            raise ConfigurationError("offset= pages by position: with name, since, until or after, page with after=")
        if limit < 1:
            raise ConfigurationError(f"limit={limit!r} is not valid: expected at least 1")
        if after is not None:
            decode_cursor(after)
        query = TaskQuery(
            status=status(task_status),
            queue=queue,
            func=name,
            since=aware_time(since, "since"),
            until=aware_time(until, "until"),
            limit=limit,
            after=after,
        )
        return await self.task_queue.list_page(query)

    async def count_tasks(self, task_status: TaskStatus | str | None, queue: str | None) -> int:
        """The number of tasks of that status and queue."""
        await self.connect()
        return await self.task_queue.count(status=status(task_status), queue=queue)

    async def cancel(self, task_id: str) -> bool:
        """Cancel the task, store its CANCELLED result (waiters wake) and record the event; False if unknown or finished."""
        await self.connect()
        if not await self.task_queue.cancel(task_id):
            return False
        # Read back after the cancel: the record is CANCELLED now (purged concurrently: None).
        task = await self.task_queue.get(task_id)
        if task is None:
            task = Task(id=task_id, func="", status=TaskStatus.CANCELLED, result_ttl=self.settings.result_ttl)
        await self.result_storage.set(TaskResult.from_task(task, TaskStatus.CANCELLED))
        if self.events is not None:
            self.events.add(TaskEvent(task_id=task_id, type=EventType.CANCELLED, queue=task.queue, func=task.func))
        if self.lifecycle.task_cancelled is not None:
            self.lifecycle.task_cancelled(task)
        return True

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal, recording the event; False if unknown or terminal."""
        await self.connect()
        changed = await self.task_queue.set_paused(task_id, paused)
        if changed and self.events is not None:
            self.events.add(TaskEvent(task_id=task_id, type=EventType.PAUSED if paused else EventType.RESUMED))
        return changed

    async def retry(self, task_id: str) -> bool:
        """Run a FAILED, CANCELLED or EXPIRED task again: its old result goes, a REQUEUED event is recorded.

        The result is deleted before the task is reset, so a new run's result
        can never be the one deleted; a reader in between (or after a retry
        that was refused) still gets the outcome, made from the terminal record.
        """
        await self.connect()
        task = await self.task_queue.get(task_id)
        if task is None or task.status not in RETRYABLE_STATUSES:
            return False
        await self.result_storage.delete(task_id)
        at = utcnow()  # before the reset: a worker may start the new run before this call returns
        fresh = await self.task_queue.retry(task_id)
        if fresh is None:
            return False
        if self.events is not None:
            note = f"requeued from {task.status.value} after {task.attempts} attempt(s)"
            kind = EventType.REQUEUED
            self.events.add(
                TaskEvent(task_id=task_id, type=kind, timestamp=at, queue=fresh.queue, func=fresh.func, message=note)
            )
        return True

    async def queue_stats(self) -> list[QueueStats]:
        """Per queue: counts by status, the oldest ready task's age, completions per minute."""
        await self.connect()
        return await self.task_queue.queue_stats()

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue in the engine (NotSupportedError without ``Capability.QUEUE_PAUSE``)."""
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(f"queue={queue!r} is not valid: expected a queue name")
        await self.connect()
        await self.task_queue.set_queue_paused(queue, paused)

    async def paused_queues(self) -> list[str]:
        """The paused queues' names, sorted."""
        await self.connect()
        return await self.task_queue.paused_queues()

    @property
    def shared_worker_registry(self) -> bool:
        """Whether the task queue class declares ``Capability.WORKER_REGISTRY`` (known before connecting)."""
        queue = self.task_queue_or_none
        cls = type(queue) if queue is not None else plugins.resolve_backend("task_queue", self._type("task_queue"))
        return Capability.WORKER_REGISTRY in cls.capabilities

    async def list_workers(self) -> list[WorkerInfo]:
        """Live workers; without a shared registry, this process's only (said once in the log)."""
        await self.connect()
        if not self.shared_worker_registry and not self._said_local_registry:
            self._said_local_registry = True
            logger.warning(
                "the %s task queue has no shared worker registry: list_workers shows this process's workers only",
                type(self.task_queue).__name__,
            )
        return await self.task_queue.list_workers()

    async def purge(
        self, queue: str | None, task_statuses: TaskStatus | str | Sequence[TaskStatus | str] | None
    ) -> int:
        """Delete tasks (all, or by queue / statuses) and, when purging everything, results and events."""
        await self.connect()
        wanted = statuses(task_statuses)
        count = await self.task_queue.purge(queue=queue, statuses=wanted)
        if queue is None and wanted is None:
            await self.result_storage.purge(expired_only=False)
            if self.events is not None:
                await self.events.flush()
                await self.event_storage.purge()
        return count


def _require(component: _C | None, name: str) -> _C:
    if component is None:
        raise RuntimeError(f"the {name} is not connected yet: use 'async with app:' or 'await app.connect()'")
    return component
