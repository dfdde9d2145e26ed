"""What an operator looks at: live workers, queue statistics, and pages of tasks.

These are the records of the operations part of the contract
(:meth:`omniq.base.BaseTaskQueue.register_worker`, ``list_workers``,
``queue_stats``, ``list_page``), shared by every engine, the app, the CLI
and the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import msgspec

from omniq.errors import ConfigurationError
from omniq.models import AwareDatetime, Task, TaskStatus

if TYPE_CHECKING:
    from omniq.base import BaseTaskQueue

__all__ = [
    "THROUGHPUT_MINUTES",
    "QueueStats",
    "TaskQuery",
    "WorkerInfo",
    "decode_cursor",
    "empty_stats",
    "stats_from_groups",
    "page_cursor",
    "scan_tasks",
    "select_page",
    "stats_of",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_STATUS_VALUES = tuple(status.value for status in TaskStatus)
_MICROSECOND = timedelta(microseconds=1)

#: minutes of throughput history in :attr:`QueueStats.completed_per_minute`.
THROUGHPUT_MINUTES = 60


class WorkerInfo(msgspec.Struct, kw_only=True):
    """One live worker process, as it registers itself in the task queue's engine.

    Refreshed at every heartbeat; an entry not refreshed within its TTL
    disappears (a killed worker is gone within 2 x its heartbeat TTL).
    """

    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    pool: str
    concurrency: int
    version: str
    started_at: AwareDatetime
    heartbeat_at: AwareDatetime
    in_flight: int = 0
    processed: int = 0
    failed: int = 0


class QueueStats(msgspec.Struct, kw_only=True):
    """One queue at a glance.

    Attributes:
        queue: the queue's name.
        counts: tasks by status value, every status present (0 when none).
        oldest_ready_age: seconds the oldest ready task has waited (now minus
            its ``eta``, or ``created_at`` without one), over PENDING, unpaused
            tasks whose eta has passed; None when none is ready.
        completed_per_minute: tasks that reached SUCCEEDED or FAILED (by
            ``finished_at``) in each of the last :data:`THROUGHPUT_MINUTES`
            minutes, oldest first; the last entry is the current minute so far.
            An operator's gauge, not an audit: an engine may count from the
            tasks' current state (a task retried or purged since drops out of
            its minute) or from counters kept at finish (its count stays).
    """

    queue: str
    counts: dict[str, int]
    oldest_ready_age: float | None = None
    completed_per_minute: list[int] = msgspec.field(default_factory=list)


class TaskQuery(msgspec.Struct, kw_only=True, frozen=True):
    """A page of tasks: the filters and where the page starts.

    The order is newest first: ``created_at`` descending, then ``id``
    descending. Paging is by key, not offset: ``after`` is the cursor of the
    last task of the previous page (:func:`page_cursor`), and the next page
    holds tasks strictly after it in that order, so tasks inserted or deleted
    meanwhile never make a page repeat or skip one.

    Attributes:
        status / queue / func: equality filters (``func`` is the registered name).
        since / until: ``since <= created_at < until`` (half-open).
        limit: at most this many tasks.
        after: the previous page's cursor, or None for the first page.
    """

    status: TaskStatus | None = None
    queue: str | None = None
    func: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = 25
    after: str | None = None


def empty_stats(queue: str) -> QueueStats:
    """The statistics of ``queue`` before anything is counted: every status at 0, 60 empty minutes."""
    return QueueStats(
        queue=queue,
        counts=dict.fromkeys(_STATUS_VALUES, 0),
        completed_per_minute=[0] * THROUGHPUT_MINUTES,
    )


def stats_from_groups(groups: Iterable[tuple[str, str, int | None, int, float | None]]) -> list[QueueStats]:
    """:class:`QueueStats` per queue from rows an engine grouped by queue, status and minute.

    Each group is ``(queue, status value, minute, count, ready age)``: ``minute``
    is the completion minute's index in ``completed_per_minute`` (None when the
    group is not a completion, or out of the window), ``ready age`` the seconds
    the oldest ready task of the group has waited (None when it holds none). A
    status that is not one (a corrupted record) is not counted.
    """
    stats: dict[str, QueueStats] = {}
    for queue, status, minute, count, age in groups:
        entry = stats.get(queue)
        if entry is None:
            entry = stats[queue] = empty_stats(queue)
        if status in entry.counts:
            entry.counts[status] += count
        if age is not None:
            entry.oldest_ready_age = max(age, 0.0, entry.oldest_ready_age or 0.0)
        if minute is not None and 0 <= minute < THROUGHPUT_MINUTES:
            entry.completed_per_minute[minute] += count
    return sorted(stats.values(), key=lambda entry: entry.queue)


def page_cursor(created_at: datetime, task_id: str) -> str:
    """The cursor of a task: its ``created_at`` in integer microseconds and its id."""
    micros = (created_at - _EPOCH) // _MICROSECOND
    return f"{micros}:{task_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` of a cursor made by :func:`page_cursor`.

    Raises:
        ConfigurationError: not a cursor.
    """
    micros, sep, task_id = cursor.partition(":")
    try:
        if not sep or not task_id:
            raise ValueError(cursor)
        created_at = _EPOCH + int(micros) * _MICROSECOND
    except (ValueError, OverflowError, OSError):
        raise ConfigurationError(f"cursor {cursor[:80]!r} is not a page cursor") from None
    return created_at, task_id


# -- the contract's defaults, for a backend that does not override them -----------------------------
# Correct and engine-agnostic, built on get / list / count / enqueue; slow on large queues (they
# read every task). First-party engines override each with one query or script.

_SCAN_PAGE = 500


async def scan_tasks(task_queue: BaseTaskQueue, status: TaskStatus | None = None) -> list[Task]:
    """Every task (of ``status``), read through ``list`` page by page."""
    found: list[Task] = []
    offset = 0
    while True:
        page = await task_queue.list(status=status, limit=_SCAN_PAGE, offset=offset)
        found += page
        if len(page) < _SCAN_PAGE:
            return found
        offset += _SCAN_PAGE


def select_page(tasks: list[Task], query: TaskQuery) -> list[Task]:
    """``query``'s page out of ``tasks``: the filters, the order, the cursor and the limit."""
    after = decode_cursor(query.after) if query.after is not None else None
    chosen = [
        task
        for task in tasks
        if (query.status is None or task.status is query.status)
        and (query.queue is None or task.queue == query.queue)
        and (query.func is None or task.func == query.func)
        and (query.since is None or task.created_at >= query.since)
        and (query.until is None or task.created_at < query.until)
        and (after is None or (task.created_at, task.id) < after)
    ]
    chosen.sort(key=lambda task: (task.created_at, task.id), reverse=True)
    return chosen[: query.limit]


def stats_of(tasks: list[Task], now: datetime) -> list[QueueStats]:
    """:class:`QueueStats` per queue, computed from the tasks themselves."""
    stats: dict[str, QueueStats] = {}
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    for task in tasks:
        entry = stats.get(task.queue)
        if entry is None:
            entry = stats[task.queue] = empty_stats(task.queue)
        entry.counts[task.status.value] += 1
        ready_since = task.eta or task.created_at
        if task.status is TaskStatus.PENDING and not task.paused and not task.waiting and ready_since <= now:
            age = (now - ready_since).total_seconds()
            entry.oldest_ready_age = max(age, entry.oldest_ready_age or 0.0)
        done = task.finished_at
        if task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) and done is not None and start <= done <= now:
            entry.completed_per_minute[int((done - start).total_seconds() // 60)] += 1
    return sorted(stats.values(), key=lambda entry: entry.queue)


#: the statuses :meth:`~omniq.base.BaseTaskQueue.retry` accepts.
RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})


def reset_for_retry(task: Task, now: datetime) -> Task:
    """``task`` made PENDING again with a fresh attempt budget (see ``BaseTaskQueue.retry``)."""
    return msgspec.structs.replace(
        task,
        status=TaskStatus.PENDING,
        eta=None,
        paused=False,
        attempts=0,
        error=None,
        started_at=None,
        finished_at=None,
        worker_id=None,
        lease_token=None,
        lease_expires_at=None,
        updated_at=now,
        held=False,
        rate_reserved=False,
    )


class LocalWorkers:
    """The default worker registry: this process's workers only, for engines without a shared one."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[WorkerInfo, float]] = {}

    def register(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` until ``ttl`` seconds from now."""
        self._entries[worker.id] = (worker, time.monotonic() + ttl)

    def unregister(self, worker_id: str) -> None:
        """Forget a worker."""
        self._entries.pop(worker_id, None)

    def live(self) -> list[WorkerInfo]:
        """The workers whose entry has not expired, oldest first."""
        now = time.monotonic()
        for worker_id in [key for key, (_, deadline) in self._entries.items() if deadline <= now]:
            del self._entries[worker_id]
        return sorted((worker for worker, _ in self._entries.values()), key=lambda worker: worker.started_at)


#: the process's default registry (forked children start with the parent's entries and refresh their own).
LOCAL_WORKERS = LocalWorkers()
