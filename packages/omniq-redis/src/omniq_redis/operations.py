"""The operator's calls on the task queue: a page of tasks, the queues' statistics, retry, purge.

Each is one script call (:mod:`omniq_redis.lua_operations`), run through the
task queue's script runner (driver errors translated).

Costs, on the server, in one script each:

- ``list_page``: per queue asked (every queue in QUEUES without a queue filter) and per status
  asked (all six without one), one ``ZRANGE BYSCORE REV LIMIT`` of ``limit`` members of the
  per-status zset (scored by created_at), then one ``HMGET`` per task of the page: O(queues x
  statuses x (log n + limit)). A ``func`` filter is matched against each member's stored envelope
  (one ``HGET`` per task passed), so it reads tasks newest first until ``limit`` match: up to
  every task of the filtered zsets when few match.
- ``queue_stats``: per queue, six ``ZCARD``, one ``ZRANGE`` per distinct priority among the ready
  tasks and one of the delayed zset's head, and one ``MGET`` of the last hour's minute counters
  (``{P:q}:done:<minute>``, kept by the finish and recover scripts): no scan of the tasks.
- ``retry``: a handful of hash and zset commands on one task.
- ``purge``: one script per queue and 500 tasks of each status asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from omniq.models import Task, TaskStatus
from omniq.monitoring import THROUGHPUT_MINUTES, QueueStats, TaskQuery, decode_cursor
from omniq_redis._codec import task_from_row, to_us
from omniq_redis.keys import queue_tag

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    Run = Callable[[str, Sequence[Any]], Awaitable[Any]]

__all__ = ["list_page", "purge", "queue_stats", "retry"]

_STATUS_NAMES = [status.value for status in TaskStatus]
#: tasks deleted per purge script call (bounds how long one call blocks the server).
_PURGE_CHUNK = 500


def _func_bytes(func: str) -> bytes:
    """The envelope's bytes for its ``func`` field: the msgpack key ``"func"`` and the name."""
    return msgspec.msgpack.encode("func") + msgspec.msgpack.encode(func)


async def list_page(run: Run, prefix: str, query: TaskQuery) -> list[Task]:
    """A page of tasks matching ``query``, newest first (``created_at``, then id, descending)."""
    if query.limit <= 0:
        return []
    if query.queue is not None:
        queue_tag(prefix, query.queue)  # validates the name
    low = "-inf" if query.since is None else str(to_us(query.since))
    high = "+inf" if query.until is None else f"({to_us(query.until)}"
    tie, tie_id = "", ""
    if query.after is not None:
        created_at, tie_id = decode_cursor(query.after)
        cursor_us = to_us(created_at)
        if query.until is None or cursor_us < to_us(query.until):
            high = tie = str(cursor_us)
    statuses = _STATUS_NAMES if query.status is None else [TaskStatus(query.status).value]
    func = _func_bytes(query.func) if query.func is not None else b""
    args = [prefix, query.limit, low, high, tie, tie_id, func, query.queue or "", *statuses]
    return [task_from_row(row) for row in await run("list_page", args)]


async def queue_stats(run: Run, prefix: str) -> list[QueueStats]:
    """Per queue holding tasks, sorted by name: counts, the oldest ready task's age, completions per minute."""
    stats = []
    for queue, counts, age_us, done in await run("queue_stats", [prefix, THROUGHPUT_MINUTES, *_STATUS_NAMES]):
        age = int(age_us)
        stats.append(
            QueueStats(
                queue=queue.decode(),
                counts=dict(zip(_STATUS_NAMES, counts, strict=True)),
                oldest_ready_age=age / 1_000_000 if age >= 0 else None,
                completed_per_minute=[int(count) if count else 0 for count in done],
            )
        )
    return stats


async def retry(run: Run, prefix: str, task_id: str) -> Task | None:
    """Run a FAILED, CANCELLED or EXPIRED task again (see ``BaseTaskQueue.retry``); None when it was not."""
    row = await run("retry", [prefix, task_id])
    return task_from_row(row) if row != 0 else None


async def purge(run: Run, prefix: str, queues: Sequence[str], statuses: Sequence[TaskStatus] | None) -> int:
    """Delete the tasks of ``queues`` in ``statuses`` (all by default), a batch per script call; how many."""
    names = [TaskStatus(status).value for status in (statuses if statuses is not None else list(TaskStatus))]
    deleted = 0
    for queue in queues if names else ():
        queue_tag(prefix, queue)  # validates the name
        while count := int(await run("purge", [prefix, queue, _PURGE_CHUNK, *names])):
            deleted += count
    return deleted
