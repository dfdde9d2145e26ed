"""What an operator does to tasks by id or in bulk: cancel, pause and resume, purge (synchronous)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.backends.file.task_files import CLEAR_LEASE
from omniq.models import TERMINAL_STATUSES, TaskStatus, utcnow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.backends.file.task_files import Found, TaskFiles

__all__ = ["cancel", "purge", "set_paused"]

_replace = msgspec.structs.replace


def cancel(files: TaskFiles, task_id: str) -> bool:
    """CANCELLED for a PENDING or RUNNING task; its lease, if any, is lost."""
    freed: list[tuple[str, str]] = []
    with files.store.lock(layout.task_lock(task_id)):
        found = files.locate(task_id, salvage=True)
        if found is None or found.task.status in TERMINAL_STATUSES:
            return False
        now = utcnow()
        task = _replace(found.task, status=TaskStatus.CANCELLED, finished_at=now, updated_at=now, **CLEAR_LEASE)
        files.move(found, task, freed)
    files.free_unique(freed)
    files.store.flush()
    return True


def set_paused(files: TaskFiles, task_id: str, paused: bool) -> bool:
    """Pause or resume a task that is not terminal."""
    with files.store.lock(layout.task_lock(task_id)):
        found = files.locate(task_id, salvage=True)
        if found is None or found.task.status in TERMINAL_STATUSES:
            return False
        if found.task.paused != paused:
            files.move(found, _replace(found.task, paused=paused, updated_at=utcnow()), [])
    files.store.flush()
    return True


def purge(files: TaskFiles, queue: str | None, statuses: Sequence[TaskStatus] | None) -> int:
    """Delete matching tasks; return how many."""
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
    for found in doomed:
        with files.store.lock(layout.task_lock(found.task.id)):
            if files.store.unlink(found.path):
                count += 1
                if found.task.unique_key is not None and found.task.status not in TERMINAL_STATUSES:
                    freed.append((found.task.unique_key, found.task.id))
    files.free_unique(freed)
    files.store.flush()
    return count
