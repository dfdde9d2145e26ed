"""Producing tasks: calls become Task records (:mod:`omniq._building`), written to the queue with their events.

A single enqueue builds its task, checks its arguments against the
function's signature, keys its limits, merges the lifecycle's headers and
makes one queue call, through the event loop or (the sync API's
``*_blocking`` methods) in the calling thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from omniq._building import TaskBuilder
from omniq._options import EnqueueOptions
from omniq.capabilities import Capability
from omniq.constants import EVENT_BATCH_SIZE
from omniq.errors import NotSupportedError
from omniq.flow_control import KEY_SEPARATOR, Limits, limit_key_of
from omniq.lifecycle import merge_headers
from omniq.models import EventType, Task, TaskEvent, new_ids, utcnow

if TYPE_CHECKING:
    from omniq._components import Components
    from omniq._tasks import TaskFunction
    from omniq.config import Settings
    from omniq.serialization import SerializerRegistry

__all__ = ["Producer"]

_NO_ARGUMENTS: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})


class Producer:
    """Builds tasks from calls and enqueues them, one or many, with their events and lifecycle hooks."""

    def __init__(
        self,
        settings: Settings,
        serializer: SerializerRegistry,
        functions: Mapping[str, TaskFunction[Any, Any]],
        components: Components,
        eager: Callable[[Task], Awaitable[str]] | None = None,
    ) -> None:
        #: with ``settings.eager``: runs a built task at once instead of queueing it (``omniq._eager``).
        self.eager = eager
        self.settings = settings
        self.serializer = serializer
        self.functions = functions
        self.components = components
        tasks = TaskBuilder(settings, serializer)
        #: the Task record of one call (validated; not enqueued); see :class:`~omniq._building.TaskBuilder`
        self.build = tasks.build
        #: options resolved once, then a Task per payload; see :class:`~omniq._building.TaskBuilder`
        self.builder = tasks.builder

    async def enqueue(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions,
        connection: object = None,
    ) -> str:
        """Enqueue one call of the task ``name``; return its id (an existing task's, for a taken unique key).

        ``connection``: a database connection of the caller's, to enqueue inside its open transaction.
        """
        task = self._checked(name, args, kwargs, options)
        if self.eager is not None:
            return await self.eager(task)
        components = self.components
        if not components.connected:  # (skips a coroutine per call on the hot path)
            await components.connect()
        self._complete(task, options, args, kwargs)
        if connection is not None:
            return (await self._enqueue_in_transaction([task], connection))[0]
        task_id = await components.task_queue.enqueue(task)
        if task_id == task.id:
            self._after_enqueue([task])
        return task_id

    @property
    def blocking(self) -> bool:
        """Whether the ``*_blocking`` methods may run now: connected, not eager, the queue can.

        See :attr:`~omniq.capabilities.Capability.BLOCKING_ENQUEUE`.
        """
        components = self.components
        return (
            self.eager is None
            and components.connected
            and Capability.BLOCKING_ENQUEUE in components.task_queue.capabilities
        )

    def enqueue_blocking(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> str:
        """:meth:`enqueue`, run in the calling thread (a sync caller's, never the loop's); only when :attr:`blocking`.

        The task is stored through the queue's ``enqueue_blocking``; the lifecycle
        hooks run here too (a tracing hook sees the caller's context), and the
        event goes to the buffer without waiting for the loop.
        """
        task = self._checked(name, args, kwargs, options)
        self._complete(task, options, args, kwargs)
        task_id = self.components.task_queue.enqueue_blocking([task])[0]
        if task_id == task.id:
            self._after_enqueue([task], threadsafe=True)
        return task_id

    def enqueue_many_blocking(
        self, name: str, calls: Iterable[Sequence[Any] | Mapping[str, Any]], options: EnqueueOptions
    ) -> list[str]:
        """:meth:`enqueue_many` as :meth:`enqueue_blocking` runs :meth:`enqueue`."""
        tasks, keys = self._build_many(name, calls, options)
        self._key_limits(tasks, keys, options)
        lifecycle = self.components.lifecycle
        if lifecycle.task_headers is not None:
            for task in tasks:
                merge_headers(task, lifecycle)
        ids = self.components.task_queue.enqueue_blocking(tasks) if tasks else []
        self._after_enqueue([t for t, i in zip(tasks, ids, strict=True) if t.id == i], threadsafe=True)
        return ids

    async def enqueue_many(
        self,
        name: str,
        calls: Iterable[Sequence[Any] | Mapping[str, Any]],
        options: EnqueueOptions,
        connection: object = None,
    ) -> list[str]:
        """Enqueue many calls of the task ``name`` in one round trip; return their ids (``connection``: as enqueue)."""
        tasks, keys = self._build_many(name, calls, options)
        if self.eager is not None:
            return [await self.eager(task) for task in tasks]
        components = self.components
        await components.connect()
        self._key_limits(tasks, keys, options)
        if connection is not None:
            if components.lifecycle.task_headers is not None:
                for task in tasks:
                    merge_headers(task, components.lifecycle)
            return await self._enqueue_in_transaction(tasks, connection)
        return await self.enqueue_tasks(tasks)

    async def enqueue_tasks(self, tasks: list[Task]) -> list[str]:
        """Enqueue built tasks (of any functions; see :meth:`build_checked`) in one round trip; return their ids.

        The tasks go in their order, so a task may depend on one before it (a workflow's members).
        """
        if self.eager is not None:
            return [await self.eager(task) for task in tasks]
        components = self.components
        await components.connect()
        if components.lifecycle.task_headers is not None:
            for task in tasks:
                merge_headers(task, components.lifecycle)
        events = components.events
        if components.fuse_events and events is not None and len(tasks) >= EVENT_BATCH_SIZE:
            # A batch this large would be flushed at once anyway: the backend writes it beside
            # the tasks (in parallel, committed after them) instead of after them.
            ids, unwritten = await components.task_queue.enqueue_recorded(tasks, enqueue_events(tasks), events.storage)
            events.extend(unwritten)
            if components.lifecycle.task_enqueued is not None:
                self._after_enqueue([t for t, i in zip(tasks, ids, strict=True) if t.id == i], events=False)
            return ids
        ids = await components.task_queue.enqueue_many(tasks)
        self._after_enqueue([t for t, i in zip(tasks, ids, strict=True) if t.id == i])
        return ids

    def build_checked(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions,
        *,
        bind: tuple[Any, ...] = (),
    ) -> Task:
        """The checked Task record of one call, its limits keyed, ready for :meth:`enqueue_tasks`.

        ``bind``: arguments the worker will put before ``args`` (a workflow member's parent result),
        for the check that the call fits the function's signature.
        """
        handle = self.functions.get(name)
        task = self.build(name, args, kwargs, options)
        if handle is not None:
            if bind:
                handle.check_arguments((*bind, *args), kwargs)  # the signature only: the bound value is not known
            else:
                handle.check_arguments(args, kwargs, task.payload)
        if task.limits is not None and self.eager is None:
            task.limits = self._limits_for(task.limits, options, args, kwargs)
        return task

    def _checked(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions) -> Task:
        """The Task record of one call, its arguments checked against the function's signature."""
        task = self.build(name, args, kwargs, options)
        handle = self.functions.get(name)
        if handle is not None:
            handle.check_arguments(args, kwargs, task.payload)
        return task

    def _complete(self, task: Task, options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Make a checked task what is stored: its limits keyed, the lifecycle's headers merged in."""
        if task.limits is not None:
            task.limits = self._limits_for(task.limits, options, args, kwargs)
        lifecycle = self.components.lifecycle
        if lifecycle.task_headers is not None:
            merge_headers(task, lifecycle)

    def _key_limits(
        self, tasks: list[Task], keys: list[tuple[tuple[Any, ...], dict[str, Any]]], options: EnqueueOptions
    ) -> None:
        """Key the limits of a batch's tasks (each call's ``limit_key``); see :meth:`_build_many`."""
        if tasks and (limits := tasks[0].limits) is not None:
            for task, key in zip(tasks, keys, strict=True):
                task.limits = self._limits_for(limits, options, *key)

    def _limits_for(
        self, limits: Limits, options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Limits:
        """A limited task's limits for one call: refused without the capability; keyed by ``limit_key``."""
        if Capability.FLOW_CONTROL not in self.components.task_queue.capabilities:
            backend = self.components.task_queue.backend_name or type(self.components.task_queue).__name__
            raise NotSupportedError(
                f"the {backend!r} task queue cannot apply rate_limit or concurrency_limit "
                f"(no {Capability.FLOW_CONTROL!r} capability): nothing was enqueued"
            )
        key = limit_key_of(options.limit_key, args, kwargs)
        return limits if key is None else msgspec.structs.replace(limits, key=f"{limits.key}{KEY_SEPARATOR}{key}")

    def _build_many(
        self, name: str, calls: Iterable[Sequence[Any] | Mapping[str, Any]], options: EnqueueOptions
    ) -> tuple[list[Task], list[tuple[tuple[Any, ...], dict[str, Any]]]]:
        """The checked tasks of many calls, and each call's arguments when a per-call ``limit_key`` needs them."""
        handle = self.functions.get(name)
        build = self.builder(name, options)  # options are resolved once for the whole batch
        dumps = self.serializer.dumps
        payloads = []
        keys: list[tuple[tuple[Any, ...], dict[str, Any]]] = []  # each call's arguments, for a per-call limit_key
        for call in calls:
            if type(call) is tuple:  # the usual shape; spares the Mapping ABC check
                args, kwargs = call, {}
            elif isinstance(call, Mapping):
                args, kwargs = (), dict(call)
            else:
                args, kwargs = tuple(call), {}
            payloads.append(payload := dumps((args, kwargs)))
            if options.limit_key is not None:
                keys.append((args, kwargs))
            else:
                keys.append(_NO_ARGUMENTS)
            if handle is not None:
                handle.check_arguments(args, kwargs, payload)
        tasks = [build(payload, task_id) for payload, task_id in zip(payloads, new_ids(len(payloads)), strict=True)]
        return tasks, keys

    async def _enqueue_in_transaction(self, tasks: list[Task], connection: object) -> list[str]:
        """Store ``tasks`` in the caller's open transaction; their events go in it too, or nowhere.

        The enqueued events are written by the engine in the same transaction when the event
        storage shares its database; never through the buffer, since a rollback would leave
        events of tasks that were never stored. Lifecycle hooks run as for any enqueue.
        """
        components = self.components
        queue = components.task_queue
        if Capability.TRANSACTIONAL_ENQUEUE not in queue.capabilities:
            backend = queue.backend_name or type(queue).__name__
            raise NotSupportedError(
                f"the {backend!r} task queue cannot enqueue inside a caller's transaction (connection=...); "
                "PostgreSQL and SQLite can: nothing was enqueued"
            )
        events = components.events
        ids = await queue.enqueue_in_transaction(
            tasks,
            connection,
            events=enqueue_events(tasks) if events is not None else (),
            storage=events.storage if events is not None else None,
        )
        self._after_enqueue([t for t, i in zip(tasks, ids, strict=True) if t.id == i], events=False)
        return ids

    def _after_enqueue(self, tasks: Sequence[Task], *, events: bool = True, threadsafe: bool = False) -> None:
        """Record the stored tasks' events and call the ``task_enqueued`` hooks (``threadsafe``: off the loop)."""
        components = self.components
        if events and components.events is not None:
            if threadsafe:
                components.events.extend_threadsafe(enqueue_events(tasks))
            else:
                components.events.extend(enqueue_events(tasks))
        notify = components.lifecycle.task_enqueued
        if notify is not None:
            for task in tasks:
                notify(task)


def enqueue_events(tasks: Sequence[Task]) -> list[TaskEvent]:
    """The ENQUEUED (or, with a future ETA, SCHEDULED) event of each task."""
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
