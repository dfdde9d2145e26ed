"""The contract: what a task queue, a result storage and an event storage do.

These three abstract classes are the whole interface a backend implements.
They are written against five engines at once (Redis, PostgreSQL, SQLite,
NATS JetStream, files), so every method is *batch-shaped*: a worker claims
up to N tasks, extends all its leases, and finishes a batch of outcomes in
one call, and each engine can do that in one round trip with its own fast
primitive (a Lua script, ``UPDATE ... FOR UPDATE SKIP LOCKED``, ``BEGIN
IMMEDIATE``, a JetStream pull fetch, an atomic rename).

The lease state machine, shared by every engine:

* **claim** a PENDING, unpaused task whose ``eta`` has passed: status
  RUNNING, ``attempts += 1``, a fresh ``lease_token``, ``lease_expires_at``
  = engine clock + lease, ``started_at`` and ``worker_id`` set; atomically,
  for the whole batch; no task is ever handed to two claimers.
* **extend** (heartbeat): push ``lease_expires_at`` forward where id and token
  still match.
* **finish**: apply an :class:`~omniq.models.Outcome` where id and token still
  match; a mismatch means the lease was lost and nothing is recorded.
* **recover**: RUNNING tasks whose own ``lease_expires_at`` is past (engine
  clock) go back to PENDING, or to FAILED with a ``LeaseExpired`` error when
  their attempts are used up. No table of live workers is consulted.

See ``docs/backends.md`` for the guide to writing a backend.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

import anyio

from omniq._records import (
    CorruptTask,
    claimed_task,
    decode_error,
    from_row,
    json_decoder,
    msgpack_decoder,
    salvage_blob,
    salvage_task,
    task_from_row,
)
from omniq.capabilities import Capability
from omniq.connection import CONNECTION_ERRORS, map_exceptions
from omniq.lease import apply_outcome, lease_expired_error
from omniq.models import Outcome, Task, TaskEvent, TaskResult, TaskStatus

if TYPE_CHECKING:
    from typing_extensions import Self

    from omniq.config import ComponentSettings, Settings

__all__ = [
    "BaseEventStorage",
    "apply_outcome",
    "BaseResultStorage",
    "BaseTaskQueue",
    "Capability",
    "Component",
    "CONNECTION_ERRORS",
    "CorruptTask",
    "claimed_task",
    "decode_error",
    "from_row",
    "json_decoder",
    "lease_expired_error",
    "map_exceptions",
    "msgpack_decoder",
    "salvage_blob",
    "salvage_task",
    "task_from_row",
]


class Component(ABC):  # noqa: B024 - abstract by intent; its hooks are optional
    """Shared life cycle of the three components.

    Components are created unconnected; :meth:`connect` opens connections and
    creates schema, :meth:`close` releases everything. Both are idempotent.
    ``async with component:`` does both.
    """

    #: what the backend can do; see :class:`Capability`. The one declaration: the
    #: registry, ``omniq backends`` and the conformance suite all read it here.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: the registered backend name (``"redis"``); set by the backend class.
    backend_name: ClassVar[str] = ""

    #: constructor option -> ``Settings`` attribute used when the component's options
    #: do not give it (e.g. ``{"prefix": "key_prefix", "ttl": "event_ttl"}``).
    settings_options: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_settings(cls, component: ComponentSettings, settings: Settings) -> Self:
        """Build the component from resolved settings.

        The default passes ``url``, the component's ``options``, and for each
        entry of :attr:`settings_options` not among them, the named setting.
        Override only to derive something else (a default URL from ``base_dir``).
        """
        options = dict(component.options)
        for option, attribute in cls.settings_options.items():
            options.setdefault(option, getattr(settings, attribute))
        return cls(url=component.url, **options)  # type: ignore[call-arg]  # every backend's constructor takes url=

    async def connect(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Open connections and create schema; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release connections; the component may not be used afterwards."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class BaseTaskQueue(Component):
    """Stores tasks and hands them to workers under leases.

    Ordering: among ready tasks of the requested queues, higher ``priority``
    first, then earlier ``eta`` (a task without one counts as its
    ``created_at``), then enqueue order. Backends may relax ordering across
    different queues, never within one.
    """

    @abstractmethod
    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task and wake waiting workers.

        If ``task.unique_key`` is set and a PENDING or RUNNING task with the
        same key exists, nothing is stored and that task's id is returned.
        The core always passes a fresh id; should an id already exist, a
        PENDING or RUNNING task is left as it is, a terminal one is replaced.

        Returns:
            the id of the stored task (or of the existing one).
        """

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks; same rules as :meth:`enqueue`, one result per task.

        Backends should override this with a single round trip.
        """
        return [await self.enqueue(task) for task in tasks]

    def can_fuse_events(self, events: BaseEventStorage) -> bool:
        """Whether :meth:`enqueue_recorded` can write events into ``events`` alongside the tasks."""
        return False

    async def enqueue_recorded(
        self, tasks: Sequence[Task], events: Sequence[TaskEvent], storage: BaseEventStorage
    ) -> tuple[list[str], list[TaskEvent]]:
        """:meth:`enqueue_many`, also appending ``events[i]`` (one per task) for each task it stores.

        Called (for a bulk enqueue) only when :meth:`can_fuse_events` returned
        True for ``storage``. An event may become visible only once its task is
        committed, and only for a task this call stored (``ids[i] ==
        tasks[i].id``). Events of stored tasks that the backend did not write
        (another path, a failing event storage) are returned: the caller
        records them as usual. A failing event write never fails the enqueue.

        Returns:
            the ids (as :meth:`enqueue_many`) and the events left to the caller.
        """
        ids = await self.enqueue_many(tasks)
        return ids, [event for event, task, task_id in zip(events, tasks, ids, strict=True) if task.id == task_id]

    @abstractmethod
    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks at once, without waiting.

        Each returned task is already RUNNING with ``attempts`` incremented,
        a fresh ``lease_token`` and ``lease_expires_at`` = engine now + ``lease``.
        A record that fails strict decoding is leased like the others and
        returned as a :class:`CorruptTask` (:func:`claimed_task`,
        :func:`salvage_blob`), for the worker to fail: never raise for it, never drop it.
        """

    @abstractmethod
    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a task may have become ready, or after ``timeout`` seconds.

        A hint, not a promise: spurious wake-ups are fine; sleeping past a
        task's ``eta`` by more than the caller's ``timeout`` is not. Engines
        that can block on a signal (BLMOVE, LISTEN, JetStream pull, in-process
        events) must, instead of polling.
        """

    async def claim(
        self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str, wait: float = 0.0
    ) -> list[Task]:
        """Lease up to ``limit`` tasks, waiting up to ``wait`` seconds for one.

        The default combines :meth:`claim_ready` and :meth:`wait_for_work`;
        engines whose blocking primitive also claims (a JetStream pull) override it.
        """
        tasks = await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
        if tasks or wait <= 0:
            return tasks
        deadline = anyio.current_time() + wait
        while not tasks:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            # The engine's own timeout ends the wait: cancelling a blocking call
            # (BLPOP, a pull fetch) mid-flight would cost some drivers a reconnect.
            await self.wait_for_work(queues, remaining)
            tasks = await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
        return tasks

    @abstractmethod
    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Heartbeat: push back the deadline of every lease still held.

        Args:
            leases: task id -> lease token.
            lease: seconds from engine now for the new deadline.

        Returns:
            the ids whose lease was extended; the others were lost.
        """

    @abstractmethod
    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes to tasks held under the given leases, as one batch.

        Each outcome is applied only if its task is RUNNING under
        ``outcome.lease_token``; the lease is cleared. ``RETRY``,
        ``RELEASE`` and ``RESCHEDULE`` put the task back to PENDING at
        ``outcome.eta`` (ready at once, keeping its place, when None); ``RELEASE`` also refunds the attempt
        and ``RESCHEDULE`` resets attempts to 0. ``outcome.error`` is stored
        as ``task.error``; terminal outcomes set ``finished_at``.

        ``results`` is passed only when :meth:`can_fuse_results` returned True
        for it: the backend then also stores each accepted outcome's
        ``outcome.result`` in that storage, in the same atomic step.

        Returns:
            one flag per outcome: True when it was accepted.
        """

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """Whether :meth:`finish` can store results into ``results`` atomically."""
        return False

    @abstractmethod
    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None if there is none with that id.

        Raises:
            omniq.errors.SerializationError: the stored record is corrupted
                (as ``get_many`` and ``list`` do).
        """

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks, None for unknown ids (override for one round trip)."""
        return [await self.get(task_id) for task_id in task_ids]

    @abstractmethod
    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""

    @abstractmethod
    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""

    @abstractmethod
    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task.

        The task becomes CANCELLED and any lease is cleared, so a worker
        holding it loses the lease (its outcome is dropped; it learns at its
        next heartbeat). Cancelling a recurring task ends its schedule.

        Returns:
            True if the task was cancelled, False if unknown or already terminal.
        """

    @abstractmethod
    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal; claim skips paused tasks.

        Returns:
            True if the task exists and is not terminal.
        """

    @abstractmethod
    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all of them by default); return how many."""

    @abstractmethod
    async def recover(self) -> builtins.list[Task]:  # `list` is a method name in this class
        """Requeue RUNNING tasks whose lease deadline is past (engine clock).

        A task with attempts left goes back to PENDING (eta now); one whose
        ``attempts >= max_retries + 1`` becomes FAILED with
        :func:`lease_expired_error`. Safe to run from many workers at once.

        Returns:
            the recovered tasks as they are now.
        """


class BaseResultStorage(Component):
    """Keeps the final result of each task until its expiry."""

    @abstractmethod
    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id`` and wake waiters.

        ``result.expires_at`` (when set) is when the result may disappear.
        """

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results (override for one round trip)."""
        for result in results:
            await self.set(result)

    @abstractmethod
    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result, or None when there is none (or it expired)."""

    @abstractmethod
    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait until the result exists; None when ``timeout`` seconds pass first.

        ``timeout=None`` waits indefinitely. Engines with a signal (pub/sub,
        NOTIFY, KV watch, in-process events) must use it instead of polling.
        """

    @abstractmethod
    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was one."""

    @abstractmethod
    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""


class BaseEventStorage(Component):
    """Keeps the history of tasks for inspection.

    Writers call :meth:`append` with batches; the core buffers events off the
    hot path, so a slow event store never slows tasks down.
    """

    @abstractmethod
    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events."""

    @abstractmethod
    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return events matching all filters, oldest first (ties in append order).

        The time filter is half-open: ``since <= event.at < until``. An event
        at exactly ``until`` belongs to the next window, so consecutive windows
        never count an event twice. The core passes ``types`` as a tuple of
        strings (or None) and aware datetimes.
        """

    @abstractmethod
    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events older than ``before`` (all when None); return how many."""
