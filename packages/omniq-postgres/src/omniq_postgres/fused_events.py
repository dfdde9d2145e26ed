"""Fused events (``Capability.FUSED_EVENTS``): a bulk enqueue's events written beside its tasks.

The two INSERTs run in parallel (PostgreSQL puts them on two cores); the
events' transaction commits only after the tasks' INSERT has, so no event
shows for a task that was not stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from omniq.models import Task, TaskEvent
    from omniq_postgres.event_storage import PostgresEventStorage

__all__ = ["enqueue_beside"]

logger = logging.getLogger("omniq.postgres")


def _consume_outcome(future: asyncio.Future[bool]) -> None:
    """Retrieve a background write's exception so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


async def enqueue_beside(
    enqueue_many: Callable[[Sequence[Task]], Awaitable[list[str]]],
    tasks: Sequence[Task],
    events: Sequence[TaskEvent],
    storage: PostgresEventStorage,
) -> tuple[list[str], list[TaskEvent]]:
    """``enqueue_many(tasks)``, with ``events`` inserted meanwhile on a connection of ``storage``.

    A batch without unique keys only (the caller sees to it). When an id turns
    out to be taken, when the events' write fails, or when the event storage
    has no connection to give before the tasks are in (the enqueue never
    waits for one), the stored tasks' events are handed back.
    """
    decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    acquired = asyncio.Event()
    writing = asyncio.ensure_future(storage.append_once_decided(events, decision, acquired))
    writing.add_done_callback(_consume_outcome)  # also when nobody awaits it (below)
    ids: list[str] | None = None
    try:
        ids = await enqueue_many(tasks)
    finally:
        all_stored = ids is not None and ids == [task.id for task in tasks]  # a C loop, mostly identity checks
        decision.set_result(all_stored)
        committed = False
        if not acquired.is_set():
            # The event storage had no connection to give by the time the tasks were in (it is
            # connecting to an unreachable server, or its pool is exhausted): no waiting for it.
            writing.cancel()
        else:
            try:
                # Shielded: a cancelled enqueue still lets the events' transaction settle.
                committed = await asyncio.shield(writing)
            except Exception as exc:  # the event storage failed; the tasks are stored all the same
                logger.warning("writing %d enqueue events failed (%s); handed back to the buffer", len(events), exc)
    assert ids is not None  # an exception from enqueue_many left through the finally
    if committed:
        return ids, []
    return ids, [event for event, task, task_id in zip(events, tasks, ids, strict=True) if task.id == task_id]
