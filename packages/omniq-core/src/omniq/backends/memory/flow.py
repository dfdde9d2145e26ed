"""The memory engine's flow control: per-key holders, held tasks and rate state, and paused queues.

The reference of :mod:`omniq.flow_control`'s rules. :class:`MemoryStore.put`
calls :meth:`FlowState.track` on every change of a limited task, so a holder
is added when a claim makes it RUNNING, its deadline follows ``extend``, and
its slot is given up (waking one held task of its key) whatever takes it out
of RUNNING: finish, cancel, recover, purge.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import msgspec

from omniq.flow_control import admit
from omniq.models import Task, TaskStatus

__all__ = ["FlowState"]

_replace = msgspec.structs.replace


class FlowState:
    """Flow-control state of one memory store."""

    def __init__(self) -> None:
        self.holders: dict[str, dict[str, float]] = {}  # key -> {task id: lease deadline}
        self.held: dict[str, set[str]] = {}  # key -> ids of tasks held for a concurrency slot
        self.tat: dict[str, float] = {}  # key -> theoretical arrival time (GCRA)
        self.paused: set[str] = set()

    def track(self, old: Task | None, new: Task | None, tasks: dict[str, Task], put: Callable[[Task], None]) -> None:
        """Follow a limited task's change from ``old`` to ``new`` (None: absent)."""
        task = new or old
        assert task is not None and task.limits is not None
        if task.limits.concurrency is None:
            return
        key = task.limits.key
        if new is not None and new.status is TaskStatus.RUNNING and new.lease_expires_at is not None:
            self.holders.setdefault(key, {})[new.id] = new.lease_expires_at.timestamp()
            return
        if old is not None and old.status is TaskStatus.RUNNING:
            holders = self.holders.get(key)
            if holders is not None and holders.pop(old.id, None) is not None:
                self.wake_one(key, tasks, put)

    def wake_one(self, key: str, tasks: dict[str, Task], put: Callable[[Task], None]) -> None:
        """Make the first held task of ``key`` (in claim order) ready at its old place."""
        held = self.held.get(key)
        while held:
            first = min(held, key=lambda i: (-tasks[i].priority, tasks[i].created_at) if i in tasks else (0, _FAR))
            held.discard(first)
            task = tasks.get(first)
            if task is not None and task.status is TaskStatus.PENDING and task.held:
                put(_replace(task, held=False, eta=None))
                return

    def park(self, task: Task, tasks: dict[str, Task], now: float) -> Task | None:
        """None when a claim may take the limited candidate ``task``; else the task parked, for the caller to store."""
        limits = task.limits
        assert limits is not None
        count, earliest = 0, None
        if limits.concurrency is not None:
            holders = self.holders.get(limits.key, {})
            for task_id, deadline in list(holders.items()):
                holder = tasks.get(task_id)
                if holder is None or holder.status is not TaskStatus.RUNNING:
                    del holders[task_id]
                elif deadline > now:
                    count += 1
                    earliest = deadline if earliest is None else min(earliest, deadline)
        verdict = admit(task, now, count, earliest, self.tat.get(limits.key))
        if verdict.tat is not None:
            self.tat[limits.key] = verdict.tat
        if verdict.claim:
            return None
        assert verdict.eta is not None
        eta = datetime.fromtimestamp(max(verdict.eta, now + 1e-3), timezone.utc)  # after now: not ready again
        if verdict.held:
            self.held.setdefault(limits.key, set()).add(task.id)
            return _replace(task, eta=eta, held=True, rate_reserved=False)
        return _replace(task, eta=eta, held=False, rate_reserved=True)


_FAR = datetime.max.replace(tzinfo=timezone.utc)
