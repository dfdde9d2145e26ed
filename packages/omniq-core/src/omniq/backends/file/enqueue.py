"""Storing new tasks, and the unique-key markers that keep a key to one live task (synchronous).

A batch holding a task with ``depends_on`` also counts what each dependant
waits for (:class:`.dependencies.Counting`); any other batch does exactly
what it did before dependencies existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.backends.file.dependencies import Candidate, Counting
from omniq.backends.file.task_files import CLEAR_LEASE
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus, encode_task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.backends.file.task_files import TaskFiles

__all__ = ["enqueue_many", "unique_holder"]

#: the folders where a live task with this id means "already stored" (see _store_new).
_LIVE = (layout.RUNNING_DIR, layout.PAUSED_DIR)
_LIVE_DEPENDANT = (layout.RUNNING_DIR, layout.PAUSED_DIR, layout.WAITING_DIR)


def enqueue_many(files: TaskFiles, tasks: Sequence[Task]) -> list[str]:
    """Store PENDING tasks (unique keys honoured) and make them durable; one id per task."""
    counting = Counting(files, tasks) if any(task.depends_on for task in tasks) else None
    ids = [_enqueue(files, task, counting) for task in tasks]
    if counting is not None:
        counting.register()  # once every task of the batch is stored: one append per dependency
    files.store.flush()
    if counting is not None:
        counting.close()  # the batch is durable: its journal is no longer needed
    return ids


def _enqueue(files: TaskFiles, task: Task, counting: Counting | None) -> str:
    if task.status is not TaskStatus.PENDING or task.lease_token is not None or task.waiting:
        task = msgspec.structs.replace(task, status=TaskStatus.PENDING, waiting=0, **CLEAR_LEASE)
    # Looked up before any lock is taken: the look may take a dependency's lock.
    candidates = counting.candidates(task) if counting is not None and task.depends_on else None
    key = task.unique_key
    if key is None:
        return _store_new(files, task, counting, candidates)
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
        return _store_new(files, task, counting, candidates)


def unique_holder(files: TaskFiles, marker: str) -> str | None:
    """The id named by a unique marker if that task is still PENDING or RUNNING (else the marker is stale)."""
    data = files.store.read(marker)
    if data is None:
        return None
    holder = data.decode("utf-8", "replace")
    found = files.locate_locked(holder, salvage=True)
    return holder if found is not None and found.task.status not in TERMINAL_STATUSES else None


def _store_new(files: TaskFiles, task: Task, counting: Counting | None, candidates: list[Candidate] | None) -> str:
    # Re-enqueueing a live id is a no-op (cheap checks only: a copy still in pending/ is not
    # looked for, the claim drops whichever copy comes second). A terminal id is replaced.
    # Only a task with depends_on can be waiting, so only its enqueue looks in waiting/: a
    # same-id task without it is stored beside, and the claim drops the second copy as above.
    store = files.store
    with store.lock(layout.task_lock(task.id)):
        for folder in _LIVE_DEPENDANT if task.depends_on else _LIVE:
            if store.exists(layout.task_file(folder, task.id)):
                return task.id
        if candidates:
            task = msgspec.structs.replace(task, waiting=len(candidates))
        path = layout.home_of(task)
        store.write(path, encode_task(task))
        store.unlink(layout.task_file(layout.DONE_DIR, task.id))
        if counting is not None:
            counting.stored(task, path, candidates)
    return task.id
