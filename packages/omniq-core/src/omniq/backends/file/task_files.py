"""Finding, reading and moving task files over a :class:`~.store.Store` (synchronous).

A task lives in one folder, and the folder says what it waits for (see
:mod:`.layout`). The operations of the task queue (:mod:`.enqueue`,
:mod:`.leases`, :mod:`.management`) run in a worker thread, one batch per
thread hop, and keep several processes honest on a local disk by these rules:

* Every change to one task happens under its lock stripe (``flock``), so a
  read-modify-write never interleaves with another process's.
* A task moves between folders by **rename first, rewrite second**: the
  rename is the atomic step (a claim that loses the race sees the source
  gone), and a crash between the two leaves a stale body in the right
  folder, which the folder overrides (:func:`as_found`) or ``recover``
  repairs. Moving to ``done/`` is the one exception: the terminal file is
  written first and the running file removed second, so a finished task is
  never seen as lost; ``recover`` deletes the leftover.
* A task that ends (or is deleted) takes its dependants record first, under
  its lock (:meth:`TaskFiles.take_dependants`); the caller lowers those
  dependants' counts once its locks are released (:mod:`.dependencies`).
* Readers (get, list, count) take no lock: every file they open is complete.
"""

from __future__ import annotations

import heapq
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.backends.file import layout
from omniq.base import salvage_blob
from omniq.errors import SerializationError
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus, decode_task, encode_task, new_id, utcnow

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from omniq.backends.file.store import Store

__all__ = ["CLEAR_LEASE", "Found", "Taken", "TaskFiles", "as_found"]

logger = logging.getLogger("omniq.file")

_replace = msgspec.structs.replace
#: the fields a task sheds when it stops running.
CLEAR_LEASE: dict[str, Any] = {"lease_token": None, "lease_expires_at": None}
#: the folders holding one ``<id>.task`` per task, searched in this order.
_BY_ID = (layout.DONE_DIR, layout.RUNNING_DIR, layout.PAUSED_DIR, layout.WAITING_DIR)
#: a dependants record taken by a task that ended: ``(journal path, the record's bytes, that task's id)``.
Taken = tuple[str, bytes, str]


class Found(msgspec.Struct):
    """A task and the file it was read from."""

    path: str
    folder: str
    task: Task


def as_found(folder: str, task: Task) -> Task:
    """The folder is the truth for PENDING tasks: a stale body left by a crash is corrected on read.

    A task in a queue folder or in ``paused/`` waits for nothing (a dependant
    moved there when its count reached 0 may still carry the old count); one
    in ``waiting/`` keeps its count and its paused flag from the body.
    """
    if folder in (layout.PAUSED_DIR, layout.PENDING_DIR):
        paused = folder == layout.PAUSED_DIR
        if (
            task.status is not TaskStatus.PENDING
            or task.paused != paused
            or task.lease_token is not None
            or task.waiting
        ):
            return _replace(task, status=TaskStatus.PENDING, paused=paused, waiting=0, **CLEAR_LEASE)
    elif folder == layout.WAITING_DIR:
        if task.status is not TaskStatus.PENDING or task.lease_token is not None:
            return _replace(task, status=TaskStatus.PENDING, **CLEAR_LEASE)
    return task


class TaskFiles:
    """The task files of one store: find, read, scan and move them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading -----------------------------------------------------------------------------------

    def decode(self, path: str, data: bytes, salvage: bool) -> Task | None:
        """The task in a file; None once a file that is not even a task envelope is quarantined.

        A valid envelope whose fields fail strict decoding (a naive datetime, a
        non-finite duration) stays in place: with ``salvage`` (claim, finish,
        recovery, purge) it comes back as a CorruptTask for the worker to fail,
        otherwise (get, list) it raises SerializationError.
        """
        try:
            return decode_task(data)
        except SerializationError as exc:
            problem = f"the task file {path} is corrupted: {exc}"
            try:
                task = salvage_blob(data, problem)
            except SerializationError:
                self._quarantine(path, exc)
                return None
            if salvage:
                return task
            raise SerializationError(problem) from exc

    def _quarantine(self, path: str, exc: Exception) -> None:
        target = f"{layout.CORRUPT_DIR}/{path.replace('/', '__')}.{new_id()[:8]}"
        if self.store.rename(path, target):
            logger.error("moved the corrupted file %s to %s: %s", path, target, exc)

    def read(self, path: str, folder: str, salvage: bool = False) -> Found | None:
        """The task in ``path`` (a file of ``folder``), or None when it is gone or quarantined."""
        data = self.store.read(path)
        if data is None:
            return None
        task = self.decode(path, data, salvage)
        return None if task is None else Found(path, folder, as_found(folder, task))

    def pending_index(self) -> dict[str, str]:
        """Map id -> path of every pending task (one listing per queue folder)."""
        index: dict[str, str] = {}
        for qdir in self.store.listdir(layout.PENDING_DIR):
            folder = f"{layout.PENDING_DIR}/{qdir}"
            for name in self.store.listdir(folder):
                parsed = layout.parse_pending(name)
                if parsed is not None:
                    index[parsed[1]] = f"{folder}/{name}"
        return index

    def locate(self, task_id: str, pending: dict[str, str] | None = None, salvage: bool = False) -> Found | None:
        """Find a task wherever it is; ``pending`` is a prebuilt :meth:`pending_index`."""
        for folder in _BY_ID:
            found = self.read(layout.task_file(folder, task_id), folder, salvage)
            if found is not None:
                return found
        path = (self.pending_index() if pending is None else pending).get(task_id)
        return None if path is None else self.read(path, layout.PENDING_DIR, salvage)

    def locate_locked(self, task_id: str, salvage: bool = False) -> Found | None:
        """:meth:`locate` under the task's lock: never misses a task in the middle of a move."""
        with self.store.lock(layout.task_lock(task_id)):
            return self.locate(task_id, salvage=salvage)

    def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return tasks by id; a lock-free pass, then a locked one for the ids caught mid-move."""
        pending: dict[str, str] | None = None
        tasks: list[Task | None] = []
        for task_id in task_ids:
            found = None
            for folder in _BY_ID:
                found = self.read(layout.task_file(folder, task_id), folder)
                if found is not None:
                    break
            if found is None:
                if pending is None:
                    pending = self.pending_index()
                path = pending.get(task_id)
                found = None if path is None else self.read(path, layout.PENDING_DIR)
            if found is None:
                found = self.locate_locked(task_id)
            tasks.append(None if found is None else found.task)
        return tasks

    # -- scanning ----------------------------------------------------------------------------------

    def _pending_dirs(self, queue: str | None) -> list[str]:
        if queue is not None:
            return [layout.queue_dir(queue)]
        return [f"{layout.PENDING_DIR}/{name}" for name in self.store.listdir(layout.PENDING_DIR)]

    def scan(self, status: TaskStatus | None, queue: str | None, salvage: bool = False) -> Iterator[Task]:
        """Every task matching the filters (reads the bodies it needs; see :meth:`decode` for ``salvage``)."""
        folders: list[str] = []
        if status in (None, TaskStatus.PENDING):
            for qdir in self._pending_dirs(queue):
                for name in self.store.listdir(qdir):
                    found = (
                        self.read(f"{qdir}/{name}", layout.PENDING_DIR, salvage) if layout.parse_pending(name) else None
                    )
                    if found is not None:
                        yield found.task
            folders += (layout.PAUSED_DIR, layout.WAITING_DIR)
        if status in (None, TaskStatus.RUNNING):
            folders.append(layout.RUNNING_DIR)
        if status is None or status in TERMINAL_STATUSES:
            folders.append(layout.DONE_DIR)
        for folder in folders:
            for task in self._scan_folder(folder, salvage):
                if (queue is None or task.queue == queue) and (status is None or task.status is status):
                    yield task

    def _scan_folder(self, folder: str, salvage: bool = False) -> Iterator[Task]:
        for name in self.store.listdir(folder):
            if layout.parse_task_file(name) is not None:
                found = self.read(f"{folder}/{name}", folder, salvage)
                if found is not None:
                    yield found.task

    def all_paths(self) -> Iterator[tuple[str, list[str]]]:
        """``(folder, paths of its task files)`` for every folder holding tasks."""
        for qdir in self.store.listdir(layout.PENDING_DIR):
            folder = f"{layout.PENDING_DIR}/{qdir}"
            names = [n for n in self.store.listdir(folder) if layout.parse_pending(n) is not None]
            yield layout.PENDING_DIR, [f"{folder}/{n}" for n in names]
        for folder in (layout.PAUSED_DIR, layout.WAITING_DIR, layout.RUNNING_DIR, layout.DONE_DIR):
            names = [n for n in self.store.listdir(folder) if layout.parse_task_file(n) is not None]
            yield folder, [f"{folder}/{n}" for n in names]

    def list_tasks(self, status: TaskStatus | None, queue: str | None, limit: int, offset: int) -> list[Task]:
        """Tasks matching the filters, newest first."""
        newest = heapq.nlargest(offset + limit, self.scan(status, queue), key=lambda t: (t.created_at, t.id))
        return newest[offset:]

    def count(self, status: TaskStatus | None, queue: str | None) -> int:
        """Count tasks; pending and running counts come from listings alone when no body is needed."""
        if status is TaskStatus.RUNNING and queue is None:
            return sum(1 for n in self.store.listdir(layout.RUNNING_DIR) if layout.parse_task_file(n) is not None)
        if status is TaskStatus.PENDING:
            qdirs = self._pending_dirs(queue)
            ready = sum(1 for d in qdirs for n in self.store.listdir(d) if layout.parse_pending(n) is not None)
            paused = sum(1 for t in self._scan_folder(layout.PAUSED_DIR, True) if queue is None or t.queue == queue)
            if queue is None:  # waiting tasks: their names will do
                waiting = sum(
                    1 for n in self.store.listdir(layout.WAITING_DIR) if layout.parse_task_file(n) is not None
                )
            else:
                waiting = sum(1 for t in self._scan_folder(layout.WAITING_DIR, True) if t.queue == queue)
            return ready + paused + waiting
        return sum(1 for _ in self.scan(status, queue, salvage=True))  # a corrupted field elsewhere counts too

    def next_due(self, queues: Sequence[str]) -> float | None:
        """Seconds until a task of ``queues`` is due (0.0: one is due now); None when none waits (names only)."""
        now = layout.micros(utcnow())
        first: str | None = None
        for queue in queues:
            names = self.store.listdir(layout.queue_dir(queue))
            if layout.PAUSED_MARKER in names:
                continue  # a paused queue's tasks wake nobody (its resume does, by the next poll)
            for name in names:
                parsed = layout.parse_pending(name)
                if parsed is None:
                    continue
                if parsed[0] <= now:
                    return 0.0
                if first is None or parsed[0] < first:
                    first = parsed[0]
        return None if first is None else (int(first) - int(now)) / 1e6

    # -- moving ------------------------------------------------------------------------------------

    def move(self, found: Found, task: Task, freed: list[tuple[str, str]], ended: list[Taken]) -> None:
        """Store ``task`` where its new status belongs and remove the old file (under the task's lock).

        A task that reaches a terminal status appends ``(unique_key, id)`` to
        ``freed`` and its taken dependants record, if any, to ``ended``: once
        its task locks are released, the caller drops those markers with
        :meth:`free_unique` and lowers those dependants' counts with
        :func:`.dependencies.release`.
        """
        if task.status in TERMINAL_STATUSES:
            # Taken before the terminal file is written: a crash in between leaves a journal
            # (which recover finishes), never an ended task whose record nobody will take.
            self.take_dependants(task.id, ended)
            self.store.write(layout.task_file(layout.DONE_DIR, task.id), encode_task(task))
            self.store.unlink(found.path)
            if task.unique_key is not None:
                freed.append((task.unique_key, task.id))
            return
        target = layout.home_of(task) if task.status is TaskStatus.PENDING else found.path
        if target != found.path and not self.store.rename(found.path, target):
            return
        self.store.write(target, encode_task(task))

    def take_dependants(self, task_id: str, ended: list[Taken]) -> None:
        """Move the record of the tasks waiting on ``task_id`` into a journal (under the task's lock).

        Called as the task ends or is deleted. The record is only ever
        appended to under the same lock (:mod:`.dependencies`), so what is
        read here is what is moved. For a task nobody waits on this costs one
        failed open (no such file), the one file operation dependencies add to
        a finish.
        """
        record = layout.dependants_file(task_id)
        data = self.store.read(record)
        if data is None:
            return
        journal = layout.journal_file(new_id())
        if self.store.rename(record, journal):
            ended.append((journal, data, task_id))

    def free_unique(self, freed: Sequence[tuple[str, str]]) -> None:
        """Drop unique markers still naming these tasks (after their task locks are released)."""
        for key, task_id in freed:
            marker = layout.unique_file(key)
            with self.store.lock(layout.unique_lock(key)):
                data = self.store.read(marker)
                if data is not None and data.decode("utf-8", "replace") == task_id:
                    self.store.unlink(marker)
