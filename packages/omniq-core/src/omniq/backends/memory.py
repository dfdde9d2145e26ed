"""In-process backend: task queue, result storage and event storage in memory.

Everything lives in a :class:`MemoryStore`. Components built on the same store
see the same data, which is how one application's three components (and the
conformance suite's several "connections") share state. The store belongs to
one event loop: mutations never await, so each method is atomic with respect
to other tasks on that loop, and wake-ups use :class:`anyio.Event` instead of
polling.

Data structures (per store):

* ``tasks``: id -> :class:`~omniq.models.Task`, the source of truth.
* a ready heap per queue keyed ``(-priority, eta or created_at, seq)``, a
  delayed heap keyed ``(eta, seq)`` for tasks not yet due, and a lease heap
  keyed ``(lease deadline, seq)`` for :meth:`MemoryTaskQueue.recover`. Heaps
  are lazy: an entry is live only while ``queued[id]`` still holds its seq
  (or, for leases, while the task still runs under that token), so removing a
  task from a heap is O(1) and claiming N tasks is O(N log n).

Tasks and events are copied on the way in and out, so callers never hold a
reference to stored state.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.lowlevel
import msgspec

from omniq.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseTaskQueue,
    Capability,
    apply_outcome,
    lease_expired_error,
)
from omniq.hookspecs import BackendSpec, hookimpl
from omniq.models import (
    TERMINAL_STATUSES,
    Outcome,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    import builtins  # MemoryTaskQueue.list shadows ``list`` in the annotations after it
    from collections.abc import Mapping, Sequence

    from omniq.models import TaskError

__all__ = ["MemoryEventStorage", "MemoryResultStorage", "MemoryStore", "MemoryTaskQueue"]

logger = logging.getLogger("omniq.memory")

#: store name used when no URL is given.
DEFAULT_STORE_NAME = "default"

_ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
_replace = msgspec.structs.replace


def _copy_task(task: Task) -> Task:
    """Copy a task, including its (mutable) error struct."""
    if task.error is not None:
        return _replace(task, error=_copy_error(task.error))
    return _replace(task)


def _copy_error(error: TaskError) -> TaskError:
    return _replace(error)


def _copy_result(result: TaskResult) -> TaskResult:
    """Copy a result without its in-memory ``result`` value (never stored)."""
    error = _copy_error(result.error) if result.error is not None else None
    return _replace(result, error=error, result=msgspec.UNSET)


class MemoryStore:
    """The shared state of the memory backend (one per application or test).

    Not thread-safe: use it from one event loop.
    """

    _named: ClassVar[dict[str, MemoryStore]] = {}

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.unique: dict[str, str] = {}  # unique_key -> id of the PENDING/RUNNING task holding it
        self.queued: dict[str, int] = {}  # id -> seq of its live ready/delayed heap entry
        self.ready: dict[str, list[tuple[int, float, int, str]]] = {}  # queue -> heap
        self.delayed: list[tuple[float, int, str]] = []
        self.leases: list[tuple[float, int, str, str]] = []  # (deadline, seq, id, token)
        self.counts: Counter[tuple[str, TaskStatus]] = Counter()
        self.order: dict[str, int] = {}  # id -> enqueue seq, the FIFO tie-break of list()
        self.work_waiters: dict[str, set[anyio.Event]] = {}
        self.results: dict[str, TaskResult] = {}
        self.result_waiters: dict[str, set[anyio.Event]] = {}
        self.events: list[tuple[float, int, TaskEvent]] = []  # sorted by (timestamp, append seq)
        self._seq = itertools.count()

    @classmethod
    def named(cls, name: str | None) -> MemoryStore:
        """Return the process-wide store called ``name`` (the URL), creating it once."""
        key = name or DEFAULT_STORE_NAME
        store = cls._named.get(key)
        if store is None:
            store = cls._named[key] = cls()
        return store

    def next_seq(self) -> int:
        """Return the next number of the store-wide sequence."""
        return next(self._seq)

    # -- task bookkeeping -----------------------------------------------------------------------------

    def put(self, task: Task) -> None:
        """Store ``task`` (new or replacing its old version), keeping counters and unique keys."""
        old = self.tasks.get(task.id)
        if old is not None:
            self.counts[(old.queue, old.status)] -= 1
            if old.unique_key is not None and self.unique.get(old.unique_key) == old.id:
                del self.unique[old.unique_key]
        self.tasks[task.id] = task
        self.counts[(task.queue, task.status)] += 1
        if task.unique_key is not None and task.status in _ACTIVE:
            self.unique[task.unique_key] = task.id
        self.queued.pop(task.id, None)
        if task.status is TaskStatus.PENDING and not task.paused:
            self._push_pending(task)

    def remove(self, task: Task) -> None:
        """Forget ``task`` entirely."""
        del self.tasks[task.id]
        self.order.pop(task.id, None)
        self.counts[(task.queue, task.status)] -= 1
        if task.unique_key is not None and self.unique.get(task.unique_key) == task.id:
            del self.unique[task.unique_key]
        self.queued.pop(task.id, None)

    def _push_pending(self, task: Task) -> None:
        seq = self.next_seq()
        self.queued[task.id] = seq
        due = (task.eta or task.created_at).timestamp()
        if task.eta is not None and due > utcnow().timestamp():
            heapq.heappush(self.delayed, (due, seq, task.id))
        else:
            heapq.heappush(self.ready.setdefault(task.queue, []), (-task.priority, due, seq, task.id))
            self.notify_work(task.queue)

    def promote_due(self, now: float) -> None:
        """Move delayed tasks whose eta has come into their queue's ready heap."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            due, seq, task_id = heapq.heappop(delayed)
            if self.queued.get(task_id) != seq:
                continue  # stale entry: the task moved on since it was pushed
            task = self.tasks[task_id]
            heapq.heappush(self.ready.setdefault(task.queue, []), (-task.priority, due, seq, task_id))
            self.notify_work(task.queue)

    def next_due(self) -> float | None:
        """Return the earliest eta among delayed tasks (any queue), or None."""
        delayed = self.delayed
        while delayed and self.queued.get(delayed[0][2]) != delayed[0][1]:
            heapq.heappop(delayed)
        return delayed[0][0] if delayed else None

    def peek_ready(self, queue: str) -> tuple[int, float, int, str] | None:
        """Return the live head of ``queue``'s ready heap, dropping stale entries."""
        heap = self.ready.get(queue)
        while heap:
            head = heap[0]
            if self.queued.get(head[3]) == head[2]:
                return head
            heapq.heappop(heap)
        return None

    def push_lease(self, task: Task) -> None:
        """Index a RUNNING task's lease deadline for recovery."""
        assert task.lease_expires_at is not None and task.lease_token is not None
        heapq.heappush(self.leases, (task.lease_expires_at.timestamp(), self.next_seq(), task.id, task.lease_token))

    # -- wake-ups -------------------------------------------------------------------------------------

    def notify_work(self, queue: str) -> None:
        """Wake every ``wait_for_work`` caller watching ``queue``."""
        for event in self.work_waiters.pop(queue, ()):
            event.set()

    def notify_result(self, task_id: str) -> None:
        """Wake every ``wait`` caller of ``task_id``'s result."""
        for event in self.result_waiters.pop(task_id, ()):
            event.set()

    def store_result(self, result: TaskResult) -> None:
        """Store (or replace) a result and wake its waiters."""
        self.results[result.task_id] = _copy_result(result)
        self.notify_result(result.task_id)


class _MemoryComponent:
    """Mixin: the store lookup shared by the three memory components."""

    def __init__(self, url: str | None = None, *, store: MemoryStore | None = None) -> None:
        self.url = url
        self.store = store if store is not None else MemoryStore.named(url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"


class MemoryTaskQueue(_MemoryComponent, BaseTaskQueue):
    """Task queue kept in process memory (tests, single-process apps).

    Args:
        url: name of the process-wide store to use (``None``: ``"default"``);
            ignored when ``store`` is given.
        store: an explicit store to share with other components.
    """

    backend_name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.BLOCKING_WAIT, Capability.FUSED_RESULTS})

    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task (or return the id holding its unique key)."""
        await anyio.lowlevel.checkpoint()
        return self._enqueue(task)

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks in one atomic step."""
        await anyio.lowlevel.checkpoint()
        return [self._enqueue(task) for task in tasks]

    def _enqueue(self, task: Task) -> str:
        store = self.store
        if task.unique_key is not None:
            holder = store.unique.get(task.unique_key)
            if holder is not None:
                return holder
        existing = store.tasks.get(task.id)
        if existing is not None and existing.status in _ACTIVE:
            return existing.id  # re-enqueueing a live id is a no-op, like a unique key
        stored = _copy_task(task)
        if stored.status is not TaskStatus.PENDING:
            stored.status = TaskStatus.PENDING
        store.order[stored.id] = store.next_seq()
        store.put(stored)
        return stored.id

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks, best first across ``queues``."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        now = utcnow()
        store.promote_due(now.timestamp())
        deadline = now + timedelta(seconds=lease)
        claimed: list[Task] = []
        while len(claimed) < limit:
            best: tuple[int, float, int, str] | None = None
            for queue in queues:
                head = store.peek_ready(queue)
                if head is not None and (best is None or head < best):
                    best = head
            if best is None:
                break
            task_id = best[3]
            del store.queued[task_id]  # invalidates the heap entry
            task = _replace(
                store.tasks[task_id],
                status=TaskStatus.RUNNING,
                attempts=store.tasks[task_id].attempts + 1,
                lease_token=new_id(),
                lease_expires_at=deadline,
                started_at=now,
                updated_at=now,
                worker_id=worker_id,
            )
            store.put(task)
            store.push_lease(task)
            claimed.append(_copy_task(task))
        return claimed

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Sleep until a task is enqueued or becomes due in ``queues``, at most ``timeout`` s."""
        store = self.store
        now = utcnow().timestamp()
        store.promote_due(now)
        if any(store.peek_ready(queue) is not None for queue in queues):
            await anyio.lowlevel.checkpoint()
            return
        next_due = store.next_due()
        if next_due is not None:
            timeout = min(timeout, max(next_due - now, 0.0))
        event = anyio.Event()
        for queue in queues:
            store.work_waiters.setdefault(queue, set()).add(event)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            for queue in queues:
                waiters = store.work_waiters.get(queue)
                if waiters is not None:
                    waiters.discard(event)

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back the deadline of every lease still held."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        now = utcnow()
        deadline = now + timedelta(seconds=lease)
        extended: set[str] = set()
        for task_id, token in leases.items():
            task = store.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.RUNNING or task.lease_token != token:
                continue
            task = _replace(task, lease_expires_at=deadline, updated_at=now)
            store.put(task)
            store.push_lease(task)
            extended.add(task_id)
        return extended

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply token-checked outcomes (and, fused, their results) in one atomic step."""
        await anyio.lowlevel.checkpoint()
        fused = results is not None and self.can_fuse_results(results)
        now = utcnow()
        accepted: list[bool] = []
        for outcome in outcomes:
            ok = self._apply(outcome, now)
            accepted.append(ok)
            if ok and fused and outcome.result is not None:
                self.store.store_result(outcome.result)
        return accepted

    def _apply(self, outcome: Outcome, now: datetime) -> bool:
        task = self.store.tasks.get(outcome.task_id)
        updated = apply_outcome(task, outcome, now) if task is not None else None
        if updated is None:
            return False
        if updated.error is not None:
            updated = _replace(updated, error=_copy_error(updated.error))
        self.store.put(updated)
        return True

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`MemoryResultStorage` on the same store."""
        return isinstance(results, MemoryResultStorage) and results.store is self.store

    async def get(self, task_id: str) -> Task | None:
        """Return a copy of the task, or None."""
        await anyio.lowlevel.checkpoint()
        task = self.store.tasks.get(task_id)
        return _copy_task(task) if task is not None else None

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return copies of several tasks, None for unknown ids."""
        await anyio.lowlevel.checkpoint()
        tasks = self.store.tasks
        return [_copy_task(tasks[i]) if i in tasks else None for i in task_ids]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""
        await anyio.lowlevel.checkpoint()
        order = self.store.order
        matching = (
            task
            for task in self.store.tasks.values()
            if (status is None or task.status is status) and (queue is None or task.queue == queue)
        )
        newest = heapq.nlargest(offset + limit, matching, key=lambda t: (t.created_at, order.get(t.id, 0)))
        return [_copy_task(task) for task in newest[offset:]]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue (O(queues x statuses))."""
        await anyio.lowlevel.checkpoint()
        return sum(
            n
            for (q, s), n in self.store.counts.items()
            if (status is None or s is status) and (queue is None or q == queue)
        )

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; its lease, if any, is lost."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        task = store.tasks.get(task_id)
        if task is None or task.status not in _ACTIVE:
            return False
        now = utcnow()
        store.put(
            _replace(
                task,
                status=TaskStatus.CANCELLED,
                lease_token=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
        return True

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a non-terminal task."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        task = store.tasks.get(task_id)
        if task is None or task.status in TERMINAL_STATUSES:
            return False
        if task.paused != paused:
            store.put(_replace(task, paused=paused, updated_at=utcnow()))
        return True

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete the matching tasks; return how many."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        wanted = None if statuses is None else frozenset(TaskStatus(s) for s in statuses)
        doomed = [
            task
            for task in store.tasks.values()
            if (queue is None or task.queue == queue) and (wanted is None or task.status in wanted)
        ]
        for task in doomed:
            store.remove(task)
        return len(doomed)

    async def recover(self) -> builtins.list[Task]:
        """Requeue (or fail, when out of attempts) RUNNING tasks whose lease deadline passed."""
        await anyio.lowlevel.checkpoint()
        store = self.store
        now = utcnow()
        stamp = now.timestamp()
        recovered: list[Task] = []
        while store.leases and store.leases[0][0] <= stamp:
            _, _, task_id, token = heapq.heappop(store.leases)
            task = store.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.RUNNING or task.lease_token != token:
                continue
            if task.lease_expires_at is not None and task.lease_expires_at > now:
                continue  # extended since; a later heap entry covers it
            cleared: dict[str, Any] = {"lease_token": None, "lease_expires_at": None, "updated_at": now}
            if task.attempts >= task.max_attempts:
                task = _replace(
                    task, status=TaskStatus.FAILED, error=lease_expired_error(task), finished_at=now, **cleared
                )
            else:
                task = _replace(task, status=TaskStatus.PENDING, eta=now, **cleared)
            store.put(task)
            recovered.append(_copy_task(task))
        if recovered:
            logger.info("recovered %d task(s) whose lease expired", len(recovered))
        return recovered


class MemoryResultStorage(_MemoryComponent, BaseResultStorage):
    """Result storage kept in process memory; ``wait`` wakes on :meth:`set`."""

    backend_name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.BLOCKING_WAIT})

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) a result and wake its waiters."""
        await anyio.lowlevel.checkpoint()
        self.store.store_result(result)

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results at once."""
        await anyio.lowlevel.checkpoint()
        for result in results:
            self.store.store_result(result)

    def _live(self, task_id: str) -> TaskResult | None:
        result = self.store.results.get(task_id)
        if result is None:
            return None
        if result.expires_at is not None and result.expires_at <= utcnow():
            del self.store.results[task_id]
            return None
        return _copy_result(result)

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result unless missing or expired."""
        await anyio.lowlevel.checkpoint()
        return self._live(task_id)

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result without polling; None after ``timeout`` seconds."""
        await anyio.lowlevel.checkpoint()
        with anyio.move_on_after(float("inf") if timeout is None else timeout):
            while True:
                result = self._live(task_id)
                if result is not None:
                    return result
                event = anyio.Event()
                self.store.result_waiters.setdefault(task_id, set()).add(event)
                try:
                    await event.wait()
                finally:
                    waiters = self.store.result_waiters.get(task_id)
                    if waiters is not None:
                        waiters.discard(event)
                        if not waiters:
                            del self.store.result_waiters[task_id]
        return self._live(task_id)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was a live one."""
        await anyio.lowlevel.checkpoint()
        live = self._live(task_id) is not None
        self.store.results.pop(task_id, None)
        return live

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""
        await anyio.lowlevel.checkpoint()
        results = self.store.results
        if not expired_only:
            count = len(results)
            results.clear()
            return count
        now = utcnow()
        doomed = [key for key, r in results.items() if r.expires_at is not None and r.expires_at <= now]
        for key in doomed:
            del results[key]
        return len(doomed)


class MemoryEventStorage(_MemoryComponent, BaseEventStorage):
    """Event storage kept in process memory, sorted by timestamp."""

    backend_name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events (kept sorted; in-order appends are O(1))."""
        await anyio.lowlevel.checkpoint()
        log = self.store.events
        for event in events:
            entry = (event.timestamp.timestamp(), self.store.next_seq(), _replace(event))
            if not log or log[-1][:2] <= entry[:2]:
                log.append(entry)
            else:
                _insort(log, entry)

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return events matching all filters (``since <= timestamp < until``), oldest first."""
        await anyio.lowlevel.checkpoint()
        log = self.store.events
        start = 0 if since is None else _bisect(log, since.timestamp())
        stop = len(log) if until is None else _bisect(log, until.timestamp())
        wanted = None if types is None else {getattr(t, "value", t) for t in types}
        found: list[TaskEvent] = []
        for _, _, event in itertools.islice(log, start, stop):
            if len(found) >= limit:
                break
            if (task_id is None or event.task_id == task_id) and (
                wanted is None or getattr(event.type, "value", event.type) in wanted
            ):
                found.append(_replace(event))
        return found

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events with ``timestamp < before`` (all when None)."""
        await anyio.lowlevel.checkpoint()
        log = self.store.events
        cut = len(log) if before is None else _bisect(log, before.timestamp())
        del log[:cut]
        return cut


def _bisect(log: list[tuple[float, int, TaskEvent]], stamp: float) -> int:
    """Index of the first entry whose timestamp is >= ``stamp``."""
    lo, hi = 0, len(log)
    while lo < hi:
        mid = (lo + hi) // 2
        if log[mid][0] < stamp:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _insort(log: list[tuple[float, int, TaskEvent]], entry: tuple[float, int, TaskEvent]) -> None:
    """Insert ``entry`` after every entry with an equal or smaller (timestamp, seq)."""
    lo, hi = 0, len(log)
    while lo < hi:
        mid = (lo + hi) // 2
        if log[mid][:2] <= entry[:2]:
            lo = mid + 1
        else:
            hi = mid
    log.insert(lo, entry)


# -- plugin registration (entry point ``memory = "omniq.backends.memory"``) --------------------------------


@hookimpl
def omniq_task_queue_types() -> list[BackendSpec]:
    """Register the memory task queue."""
    return [
        BackendSpec(
            name="memory",
            path="omniq.backends.memory:MemoryTaskQueue",
            distribution="omniq-core",
            capabilities=MemoryTaskQueue.capabilities,
        )
    ]


@hookimpl
def omniq_result_storage_types() -> list[BackendSpec]:
    """Register the memory result storage."""
    return [
        BackendSpec(
            name="memory",
            path="omniq.backends.memory:MemoryResultStorage",
            distribution="omniq-core",
            capabilities=MemoryResultStorage.capabilities,
        )
    ]


@hookimpl
def omniq_event_storage_types() -> list[BackendSpec]:
    """Register the memory event storage."""
    return [
        BackendSpec(
            name="memory",
            path="omniq.backends.memory:MemoryEventStorage",
            distribution="omniq-core",
            capabilities=MemoryEventStorage.capabilities,
        )
    ]
