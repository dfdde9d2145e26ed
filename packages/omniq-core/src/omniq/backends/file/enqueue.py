"""Storing new tasks, and the unique-key markers that keep a key to one live task (synchronous)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.backends.file.task_files import CLEAR_LEASE
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus, encode_task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.backends.file.task_files import TaskFiles

__all__ = ["enqueue_many", "unique_holder"]


def enqueue_many(files: TaskFiles, tasks: Sequence[Task]) -> list[str]:
    """Store PENDING tasks (unique keys honoured) and make them durable; one id per task."""
    ids = [_enqueue(files, task) for task in tasks]
    files.store.flush()
    return ids


def _enqueue(files: TaskFiles, task: Task) -> str:
    if task.status is not TaskStatus.PENDING or task.lease_token is not None:
        task = msgspec.structs.replace(task, status=TaskStatus.PENDING, **CLEAR_LEASE)
    key = task.unique_key
    if key is None:
        return _store_new(files, task)
    store = files.store
    marker = layout.unique_file(key)
    with store.lock(layout.unique_lock(key)):
        holder = unique_holder(files, marker)
        if holder is not None:
            return holder
        # Marker first: a crash before the task is written leaves a stale marker (detected
        # above), never a task without its marker.
        if not store.create_exclusive(marker, task.id.encode()):
            store.write(marker, task.id.encode())
        return _store_new(files, task)


def unique_holder(files: TaskFiles, marker: str) -> str | None:
    """The id named by a unique marker if that task is still PENDING or RUNNING (else the marker is stale)."""
    data = files.store.read(marker)
    if data is None:
        return None
    holder = data.decode("utf-8", "replace")
    found = files.locate_locked(holder, salvage=True)
    return holder if found is not None and found.task.status not in TERMINAL_STATUSES else None


def _store_new(files: TaskFiles, task: Task) -> str:
    # Re-enqueueing a live id is a no-op (cheap checks only: a copy still in pending/ is not
    # looked for, the claim drops whichever copy comes second). A terminal id is replaced.
    store = files.store
    with store.lock(layout.task_lock(task.id)):
        for folder in (layout.RUNNING_DIR, layout.PAUSED_DIR):
            if store.exists(layout.task_file(folder, task.id)):
                return task.id
        store.write(layout.home_of(task), encode_task(task))
        store.unlink(layout.task_file(layout.DONE_DIR, task.id))
    return task.id
