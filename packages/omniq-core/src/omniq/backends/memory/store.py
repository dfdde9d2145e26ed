"""The memory engine: :class:`MemoryStore`, the state the three memory components share.

Components built on the same store see the same data, which is how one
application's three components (and the conformance suite's several
"connections") share state. The store belongs to one event loop: mutations
never await, so each method is atomic with respect to other tasks on that
loop, and wake-ups use :class:`anyio.Event` instead of polling.

Data structures:

* ``tasks``: id -> :class:`~omniq.models.Task`, the source of truth.
* ``dependants``: id -> ids of the tasks waiting on it (``Task.waiting``), until it ends.
* ``workers``: the worker registry of everyone on this store (entries expire
  on the monotonic clock, checked at read).
* a ready heap per queue keyed ``(-priority, eta or created_at, seq)``, a
  delayed heap keyed ``(eta, seq)`` for tasks not yet due, and a lease heap
  keyed ``(lease deadline, seq)`` for recovery. Heaps are lazy: an entry is
  live only while ``queued[id]`` still holds its seq (or, for leases, while
  the task still runs under that token), so removing a task from a heap is
  O(1) and claiming N tasks is O(N log n).

Tasks, results and events are copied on the way in and out (:func:`copy_task`,
:func:`copy_result`), so callers never hold a reference to stored state.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from typing import ClassVar

import anyio
import msgspec

from omniq.backends.memory.flow import FlowState
from omniq.models import TERMINAL_STATUSES, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.monitoring import LocalWorkers

__all__ = ["DEFAULT_STORE_NAME", "MemoryStore", "copy_result", "copy_task"]

#: store name used when no URL is given.
DEFAULT_STORE_NAME = "default"

_replace = msgspec.structs.replace


def copy_task(task: Task) -> Task:
    """Copy a task, including its (mutable) error struct."""
    if task.error is not None:
        return _replace(task, error=_replace(task.error))
    return _replace(task)


def copy_result(result: TaskResult) -> TaskResult:
    """Copy a result without its in-memory ``result`` value (never stored)."""
    error = _replace(result.error) if result.error is not None else None
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
        self.work_waiters: dict[str, set[anyio.Event]] = {}
        self.results: dict[str, TaskResult] = {}
        self.result_waiters: dict[str, set[anyio.Event]] = {}
        self.events: list[tuple[float, int, TaskEvent]] = []  # sorted by (timestamp, append seq)
        self.workers = LocalWorkers()  # the registry of every component on this store
        self.dependants: dict[str, list[str]] = {}  # dependency id -> ids of the tasks waiting on it
        self.flow = FlowState()  # limits' holders, held tasks and rate state; paused queues
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
        if task.unique_key is not None and task.status not in TERMINAL_STATUSES:
            self.unique[task.unique_key] = task.id
        self.queued.pop(task.id, None)
        if task.status is TaskStatus.PENDING and not task.paused and not task.waiting:
            self._push_pending(task)
        if task.limits is not None or (old is not None and old.limits is not None):
            self.flow.track(old, task, self.tasks, self.put)
        if task.status in TERMINAL_STATUSES and task.id in self.dependants:
            self._release_dependants(task.id)

    def count_waiting(self, task: Task) -> int:
        """How many of ``task``'s dependencies are stored and not terminal; registers it as waiting on those."""
        waiting = 0
        for dep_id in dict.fromkeys(task.depends_on):
            dep = self.tasks.get(dep_id)
            if dep is not None and dep.status not in TERMINAL_STATUSES:
                self.dependants.setdefault(dep_id, []).append(task.id)
                waiting += 1
        return waiting

    def _release_dependants(self, dep_id: str) -> None:
        """A dependency ended (or was deleted): one less to wait for, for each task waiting on it.

        A registration left by an earlier task of the same id (ended, then replaced by an enqueue of
        its id) counts only if the task stored now depends on ``dep_id`` too, and once.
        """
        for task_id in dict.fromkeys(self.dependants.pop(dep_id, ())):
            task = self.tasks.get(task_id)
            if task is not None and task.waiting > 0 and dep_id in task.depends_on:
                self.put(_replace(task, waiting=task.waiting - 1))  # ready (pushed, waking workers) at 0

    def remove(self, task: Task) -> None:
        """Forget ``task`` entirely."""
        del self.tasks[task.id]
        self.counts[(task.queue, task.status)] -= 1
        if task.unique_key is not None and self.unique.get(task.unique_key) == task.id:
            del self.unique[task.unique_key]
        self.queued.pop(task.id, None)
        if task.limits is not None:
            self.flow.track(task, None, self.tasks, self.put)
        if task.id in self.dependants:
            self._release_dependants(task.id)

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
        self.results[result.task_id] = copy_result(result)
        self.notify_result(result.task_id)
