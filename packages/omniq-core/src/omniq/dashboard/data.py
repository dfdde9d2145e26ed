"""What each page shows, read through the app's public API (never a backend directly).

Each function returns plain values for a template; escaping is the
templates' job (autoescaped), so user data (task arguments, results, error
messages) passes through here as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from omniq.app import AsyncOmniQ
from omniq.cli.apps import places
from omniq.cli.schedules import recurring
from omniq.dashboard.charts import Chart, throughput_chart
from omniq.errors import OmniQError
from omniq.models import Task, TaskEvent, TaskStatus, utcnow
from omniq.monitoring import RETRYABLE_STATUSES, QueueStats, WorkerInfo, page_cursor
from omniq.progress import describe_progress
from omniq.scheduling import Schedule

__all__ = [
    "PAGE_SIZE",
    "SHOWN_CHARS",
    "STATUSES",
    "Overview",
    "TaskDetail",
    "TaskFilters",
    "TaskPage",
    "age",
    "clipped",
    "overview",
    "purge_count",
    "schedules",
    "task_detail",
    "task_page",
    "when",
    "workers",
]

#: tasks per page of the task list.
PAGE_SIZE = 50
#: every status value, in the contract's order (the columns of the overview).
STATUSES = [status.value for status in TaskStatus]
_CANCELLABLE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
#: the longest argument list or result shown (a page stays readable with a large payload).
SHOWN_CHARS = 20_000


def clipped(text: str) -> str:
    """``text``, cut at :data:`SHOWN_CHARS` with a note saying how much was left out."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text) - SHOWN_CHARS} more characters)"


@dataclass
class Overview:
    """The overview page: where, each queue's counts, age and chart, and the total chart."""

    places: list[str]
    queues: list[QueueStats]
    charts: dict[str, Chart]
    total_chart: Chart
    totals: dict[str, int]
    workers: int
    shared_registry: bool


async def overview(app: AsyncOmniQ) -> Overview:
    """Read the queues' statistics and the workers' count."""
    stats = await app.queue_stats()
    totals = {status: sum(entry.counts.get(status, 0) for entry in stats) for status in STATUSES}
    combined = [sum(column) for column in zip(*(entry.completed_per_minute for entry in stats), strict=False)]
    now = utcnow()
    return Overview(
        places=places(app),
        queues=stats,
        charts={entry.queue: throughput_chart(entry.completed_per_minute, now) for entry in stats},
        total_chart=throughput_chart(combined, now),
        totals=totals,
        workers=len(await app.list_workers()),
        shared_registry=app.shared_worker_registry,
    )


@dataclass(frozen=True)
class TaskFilters:
    """The task list's filters, as the query string gives them (empty strings mean no filter)."""

    status: str = ""
    queue: str = ""
    name: str = ""
    after: str = ""

    @classmethod
    def from_query(cls, query: Any) -> TaskFilters:
        """From a request's query parameters (a mapping); an unknown status reads as none."""
        status = str(query.get("status", "")).strip().lower()
        return cls(
            status=status if status in STATUSES else "",
            queue=str(query.get("queue", "")).strip(),
            name=str(query.get("name", "")).strip(),
            after=str(query.get("after", "")).strip(),
        )

    def params(self, **changes: str) -> dict[str, str]:
        """The non-empty filters as query parameters, with ``changes`` applied."""
        values = {"status": self.status, "queue": self.queue, "name": self.name, "after": self.after, **changes}
        return {key: value for key, value in values.items() if value}


@dataclass
class TaskPage:
    """One page of the task list and the cursor of the next (None on the last page)."""

    filters: TaskFilters
    tasks: list[Task]
    next_after: str | None
    error: str | None = None


async def task_page(app: AsyncOmniQ, filters: TaskFilters) -> TaskPage:
    """The page of tasks ``filters`` select, newest first."""
    try:
        tasks = await app.list_tasks(
            filters.status or None,
            PAGE_SIZE,
            queue=filters.queue or None,
            name=filters.name or None,
            after=filters.after or None,
        )
    except OmniQError as exc:  # a hand-edited cursor
        return TaskPage(filters, [], None, error=str(exc))
    last = tasks[-1] if len(tasks) == PAGE_SIZE else None
    return TaskPage(filters, tasks, page_cursor(last.created_at, last.id) if last else None)


@dataclass
class TaskDetail:
    """A task's page: the record, its decoded arguments and result, its events and what may be done."""

    task: Task
    call: str
    result: str | None
    result_error: str | None
    events: list[TaskEvent]
    can_retry: bool
    can_cancel: bool
    facts: list[tuple[str, Any]] = field(default_factory=list)


def _call(app: AsyncOmniQ, task: Task) -> str:
    """``(1, 'a', key=...)``: the arguments as Python shows them, or why they cannot be decoded."""
    try:
        args, kwargs = app.decode_args(task)
    except OmniQError as exc:
        return f"<undecodable: {exc}>"
    parts = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return clipped(f"({', '.join(parts)})")


async def task_detail(app: AsyncOmniQ, task_id: str) -> TaskDetail | None:
    """Everything about one task, or None when it is unknown."""
    task = await app.get_task(task_id)
    if task is None:
        return None
    shown_result: str | None = None
    result_error: str | None = None
    try:
        result = await app.get_result(task_id)
    except OmniQError as exc:
        result, result_error = None, f"<undecodable: {exc}>"
    if result is not None and result.status is TaskStatus.SUCCEEDED:
        shown_result = clipped(repr(result.result))
    events = await app.get_events(task_id)
    facts: list[tuple[str, Any]] = [
        ("name", task.func),
        ("queue", task.queue),
        ("status", task.status.value + (" (paused)" if task.paused else "")),
        ("attempts", f"{task.attempts} of {task.max_retries + 1}"),
        ("priority", task.priority),
        ("created", task.created_at),
        ("eta", task.eta),
        ("started", task.started_at),
        ("finished", task.finished_at),
        ("worker", task.worker_id),
        ("progress", describe_progress(task.progress)),
        ("timeout", f"{task.timeout:g}s" if task.timeout is not None else None),
        ("expires", task.expires_at),
        ("unique key", task.unique_key),
        ("depends on", _ids(task.depends_on)),
        ("waiting on", f"{task.waiting} of them" if task.waiting else None),
        ("workflow", task.workflow_id),
        ("schedule", task.cron or (f"every {task.interval:g}s" if task.interval else None)),
    ]
    return TaskDetail(
        task=task,
        call=_call(app, task),
        result=shown_result,
        result_error=result_error,
        events=events,
        can_retry=task.status in RETRYABLE_STATUSES,
        can_cancel=task.status in _CANCELLABLE,
        facts=facts,
    )


async def workers(app: AsyncOmniQ) -> tuple[list[WorkerInfo], bool]:
    """The live workers, and whether the registry is shared (False: this process's own only)."""
    return await app.list_workers(), app.shared_worker_registry


async def schedules(app: AsyncOmniQ) -> list[Schedule]:
    """Every live recurring task as a schedule."""
    return await recurring(app)


async def purge_count(app: AsyncOmniQ, queue: str | None, statuses: list[str]) -> int:
    """How many tasks a purge of ``queue`` / ``statuses`` would delete."""
    chosen: list[str | None] = [*statuses] if statuses else [None]
    return sum([await app.count_tasks(status, queue=queue) for status in chosen])


def age(seconds: float | None) -> str:
    """``45s``, ``12m 3s``, ``2h 5m``, ``3d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def when(value: datetime | None) -> str:
    """A time in UTC to the second (``2026-01-02 03:04:05``); ``-`` for None."""
    if value is None:
        return "-"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _ids(ids: tuple[str, ...], shown: int = 5) -> str | None:
    """Task ids as a line: the first few, then how many more (a chord's callback may have thousands)."""
    if not ids:
        return None
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more
