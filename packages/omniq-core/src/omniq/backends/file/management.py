"""What an operator does to tasks by id or in bulk: cancel, pause and resume, retry, purge (synchronous).

Cancelling or purging a task ends it for the tasks waiting on it: their
counts are lowered once the task locks are released (:mod:`.dependencies`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import dependencies, flow, layout
from omniq.backends.file.enqueue import unique_holder
from omniq.backends.file.leases import free_slot
from omniq.backends.file.task_files import CLEAR_LEASE
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus, utcnow
from omniq.monitoring import RETRYABLE_STATUSES, reset_for_retry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.backends.file.task_files import Found, Taken, TaskFiles

__all__ = ["cancel", "purge", "retry", "set_paused"]

_replace = msgspec.structs.replace


def cancel(files: TaskFiles, task_id: str) -> bool:
    """CANCELLED for a PENDING or RUNNING task; its lease, if any, is lost (and its slot, if limited, freed)."""
    freed: list[tuple[str, str]] = []
    later: list[tuple[str, str]] = []
    ended: list[Taken] = []
    with files.store.lock(layout.task_lock(task_id)):
        found = files.locate(task_id, salvage=True)
        if found is None or found.task.status in TERMINAL_STATUSES:
            return False
        now = utcnow()
        task = _replace(found.task, status=TaskStatus.CANCELLED, finished_at=now, updated_at=now, **CLEAR_LEASE)
        files.move(found, task, freed, ended)
        if found.task.status is TaskStatus.RUNNING:
            free_slot(files, found.task, later, flow.HandOver())
    files.free_unique(freed)
    if later:
        flow.wake_later(files, later)
    dependencies.release(files, ended)  # the caller wakes workers after any cancel
    files.store.flush()
    return True


def set_paused(files: TaskFiles, task_id: str, paused: bool) -> bool:
    """Pause or resume a task that is not terminal."""
    with files.store.lock(layout.task_lock(task_id)):
        found = files.locate(task_id, salvage=True)
        if found is None or found.task.status in TERMINAL_STATUSES:
            return False
        if found.task.paused != paused:
            files.move(found, _replace(found.task, paused=paused, updated_at=utcnow()), [], [])
    files.store.flush()
    return True


def retry(files: TaskFiles, task_id: str) -> Task | None:
    """PENDING again with a fresh attempt budget, for a FAILED, CANCELLED or EXPIRED task.

    A task with a unique key takes the key's marker first (the unique lock,
    then the task lock, as an enqueue does), and is left alone when another
    live task holds the key.
    """
    found = files.locate(task_id, salvage=True)
    if found is None or found.task.status not in RETRYABLE_STATUSES:
        return None
    key = found.task.unique_key
    if key is None:
        return _reset(files, task_id, None)
    marker = layout.unique_file(key)
    with files.store.lock(layout.unique_lock(key)):
        holder = unique_holder(files, marker)
        if holder is not None and holder != task_id:
            return None
        # Marker first, as an enqueue writes it: a crash before the move leaves a stale marker.
        files.store.write(marker, task_id.encode())
        fresh = _reset(files, task_id, key)
        if fresh is None:  # not retried after all (it changed meanwhile): drop the marker written above
            files.store.unlink(marker)
    return fresh


def _reset(files: TaskFiles, task_id: str, key: str | None) -> Task | None:
    """Move a retryable task back to its queue, reset; None when it changed since it was read."""
    with files.store.lock(layout.task_lock(task_id)):
        found = files.locate(task_id, salvage=True)
        if found is None or found.task.status not in RETRYABLE_STATUSES or found.task.unique_key != key:
            return None
        fresh = reset_for_retry(found.task, utcnow())
        files.move(found, fresh, [], [])
    files.store.flush()
    return fresh


def purge(files: TaskFiles, queue: str | None, statuses: Sequence[TaskStatus] | None) -> tuple[int, bool]:
    """Delete matching tasks; return how many, and whether a task waiting on one became ready."""
    wanted = None if statuses is None else frozenset(TaskStatus(s) for s in statuses)
    doomed: list[Found] = []
    for folder, paths in files.all_paths():
        for path in paths:
            found = files.read(path, folder, salvage=True)
            if found is None:
                continue
            task = found.task
            if (queue is None or task.queue == queue) and (wanted is None or task.status in wanted):
                doomed.append(found)
    count = 0
    freed: list[tuple[str, str]] = []
    holders: list[Task] = []
    ended: list[Taken] = []
    for found in doomed:
        with files.store.lock(layout.task_lock(found.task.id)):
            if not files.store.exists(found.path):
                continue  # moved since the scan (claimed, finished, requeued): not this file to delete
            # Deleted ends the wait as an end does; taken first, like an end (see task_files.move).
            files.take_dependants(found.task.id, ended)
            if files.store.unlink(found.path):
                count += 1
                if found.task.unique_key is not None and found.task.status not in TERMINAL_STATUSES:
                    freed.append((found.task.unique_key, found.task.id))
                if found.task.status is TaskStatus.RUNNING and found.task.limits is not None:
                    holders.append(found.task)
    files.free_unique(freed)
    # Slots are freed once the purge is done, so a wake never moves a task the purge is deleting.
    later: list[tuple[str, str]] = []
    handover = flow.HandOver()  # wakes only; a key's held tasks listed once for the purge
    for task in holders:
        with files.store.lock(layout.task_lock(task.id)):
            free_slot(files, task, later, handover)
    if later:
        flow.wake_later(files, later)
    woke = dependencies.release(files, ended)  # after the purge, so no lowering races a deletion of this one
    files.store.flush()
    return count, woke
