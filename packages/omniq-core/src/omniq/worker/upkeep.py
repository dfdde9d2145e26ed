"""A pool's upkeep: it keeps its leases alive, recovers dead workers' tasks and cleans up expired data.

* heartbeat: every ``heartbeat_interval`` extends every lease the pool holds,
  in one call, and stops the runners whose lease was lost (the task was
  cancelled, or the lease expired): their outcome would not be accepted;
* sweeper: every ``sweep_interval`` recovers tasks whose lease expired (their
  worker died), from any worker, and records what happened to them; tasks
  that failed for good get their result, so waiters wake;
* housekeeping: every ``HOUSEKEEPING_SECONDS`` (spread out, so that workers
  started together do not all clean up at once) deletes expired results and
  events older than ``event_ttl``.

A failing engine is logged and tried again at the next tick: upkeep never
stops a pool.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import anyio

from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus, utcnow

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ
    from omniq.lifecycle import Lifecycle

__all__ = ["Upkeep"]

logger = logging.getLogger("omniq.worker")


class Held(Protocol):
    """A task the pool is running: its record (with the lease token) and how to stop it."""

    task: Task
    cancelled: bool

    def cancel(self) -> None:
        """Stop running the task."""


class Upkeep:
    """The heartbeat and sweeper loops of one pool, with the intervals they were started with."""

    def __init__(
        self,
        app: AsyncOmniQ,
        held: Mapping[str, Held],
        *,
        lifecycle: Lifecycle,
        worker_id: str,
        lease: float,
        heartbeat_interval: float,
        sweep_interval: float,
        housekeeping_interval: float,
    ) -> None:
        self.app = app
        self.held = held  # the pool's running tasks by id, read at every heartbeat
        self.lifecycle = lifecycle
        self.worker_id = worker_id
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval
        self.sweep_interval = sweep_interval
        self.housekeeping_interval = housekeeping_interval

    async def heartbeat(self) -> None:
        """Extend the held leases every ``heartbeat_interval``; stop the tasks whose lease was lost."""
        queue = self.app.task_queue
        while True:
            await anyio.sleep(self.heartbeat_interval)
            leases = {task_id: held.task.lease_token or "" for task_id, held in self.held.items()}
            if not leases:
                continue
            try:
                kept = await queue.extend(leases, self.lease)
            except Exception as exc:
                logger.warning("heartbeat failed (%s); will retry", exc)
                continue
            for task_id in set(leases) - kept:
                held = self.held.get(task_id)
                if held is not None:
                    held.cancelled = True
                    held.cancel()
                    if self.lifecycle.task_lease_lost is not None:
                        self.lifecycle.task_lease_lost(held.task, self.worker_id)

    async def sweep(self) -> None:
        """Recover expired leases every ``sweep_interval``, and clean up now and then."""
        queue = self.app.task_queue
        # Spread out so that many workers started together do not all clean up at once.
        next_housekeeping = anyio.current_time() + self.housekeeping_interval * (0.5 + random.random())
        while True:
            try:
                recovered = await queue.recover()
            except Exception as exc:
                logger.warning("lease recovery failed (%s); will retry", exc)
                recovered = []
            if recovered:
                await self._record_recovered(recovered)
            if anyio.current_time() >= next_housekeeping:
                next_housekeeping = anyio.current_time() + self.housekeeping_interval
                await self._housekeeping()
            await anyio.sleep(self.sweep_interval)

    async def _housekeeping(self) -> None:
        """Delete expired results and events older than ``event_ttl`` (every worker, spread out in time)."""
        app = self.app
        try:
            await app.result_storage.purge(expired_only=True)
            if app.settings.events_enabled and app.settings.event_ttl is not None:
                await app.event_storage.purge(before=utcnow() - timedelta(seconds=app.settings.event_ttl))
        except Exception as exc:
            logger.warning("clean-up of expired results and events failed (%s); will retry", exc)

    async def _record_recovered(self, tasks: list[Task]) -> None:
        """Events for recovered tasks, and results for those that failed for good (so waiters wake)."""
        app = self.app
        now = utcnow()
        failed = [t for t in tasks if t.status is TaskStatus.FAILED]
        logger.warning(
            "recovered %d task(s) whose worker stopped renewing its lease (%d failed for good)", len(tasks), len(failed)
        )
        if failed:
            await app.result_storage.set_many([TaskResult.from_task(t, finished_at=now) for t in failed])
        app.record_events(
            [
                TaskEvent(
                    task_id=t.id,
                    type=EventType.FAILED if t.status is TaskStatus.FAILED else EventType.RECOVERED,
                    timestamp=now,
                    queue=t.queue,
                    func=t.func,
                    attempt=t.attempts,
                    message=t.error.message if t.error else "",
                )
                for t in tasks
            ]
        )
