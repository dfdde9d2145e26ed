"""The task queue's lease state machine over a :class:`~.store.Store` (synchronous).

Every method is one batch operation, run in a worker thread by
:class:`omniq.backends.file.FileTaskQueue`. Rules that keep several
processes honest on a local disk:

* Every change to one task happens under its lock stripe (``flock``), so a
  read-modify-write never interleaves with another process's.
* A task moves between folders by **rename first, rewrite second**: the
  rename is the atomic step (a claim that loses the race sees the source
  gone), and a crash between the two leaves a stale body in the right
  folder, which the folder overrides (:func:`_as_found`) or ``recover``
  repairs. Moving to ``done/`` is the one exception: the terminal file is
  written first and the running file removed second, so a finished task is
  never seen as lost; ``recover`` deletes the leftover.
* Readers (get, list, count) take no lock: every file they open is complete.
"""

from __future__ import annotations

import heapq
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.backends._file import layout
from omniq.base import apply_outcome, lease_expired_error, salvage_blob
from omniq.errors import SerializationError
from omniq.models import (
    TERMINAL_STATUSES,
    Outcome,
    Task,
    TaskStatus,
    decode_task,
    encode_task,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from omniq.backends._file.records import ResultFiles
    from omniq.backends._file.store import Store

__all__ = ["TaskFiles"]

logger = logging.getLogger("omniq.file")

_ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
_replace = msgspec.structs.replace
_CLEAR_LEASE: dict[str, Any] = {"lease_token": None, "lease_expires_at": None}


class _Found(msgspec.Struct):
    """A task and the file it was read from."""

    path: str
    folder: str
    task: Task


def _as_found(folder: str, task: Task) -> Task:
    """The folder is the truth for PENDING tasks: a stale body left by a crash is corrected on read."""
    if folder in (layout.PAUSED_DIR, layout.PENDING_DIR):
        paused = folder == layout.PAUSED_DIR
        if task.status is not TaskStatus.PENDING or task.paused != paused or task.lease_token is not None:
            return _replace(task, status=TaskStatus.PENDING, paused=paused, **_CLEAR_LEASE)
    return task


class TaskFiles:
    """Synchronous task-queue operations on one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading -----------------------------------------------------------------------------------

    def _decode(self, path: str, data: bytes, salvage: bool) -> Task | None:
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

    def _read(self, path: str, folder: str, salvage: bool = False) -> _Found | None:
        data = self.store.read(path)
        if data is None:
            return None
        task = self._decode(path, data, salvage)
        return None if task is None else _Found(path, folder, _as_found(folder, task))

    def _pending_index(self) -> dict[str, str]:
        """Map id -> path of every pending task (one listing per queue folder)."""
        index: dict[str, str] = {}
        for qdir in self.store.listdir(layout.PENDING_DIR):
            folder = f"{layout.PENDING_DIR}/{qdir}"
            for name in self.store.listdir(folder):
                parsed = layout.parse_pending(name)
                if parsed is not None:
                    index[parsed[1]] = f"{folder}/{name}"
        return index

    def _locate(self, task_id: str, pending: dict[str, str] | None = None, salvage: bool = False) -> _Found | None:
        """Find a task wherever it is; ``pending`` is a prebuilt :meth:`_pending_index`."""
        for folder in (layout.DONE_DIR, layout.RUNNING_DIR, layout.PAUSED_DIR):
            found = self._read(layout.task_file(folder, task_id), folder, salvage)
            if found is not None:
                return found
        path = (self._pending_index() if pending is None else pending).get(task_id)
        return None if path is None else self._read(path, layout.PENDING_DIR, salvage)

    def _locate_locked(self, task_id: str, salvage: bool = False) -> _Found | None:
        with self.store.lock(layout.task_lock(task_id)):
            return self._locate(task_id, salvage=salvage)

    def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return tasks by id; a lock-free pass, then a locked one for the ids caught mid-move."""
        pending: dict[str, str] | None = None
        tasks: list[Task | None] = []
        for task_id in task_ids:
            found = None
            for folder in (layout.DONE_DIR, layout.RUNNING_DIR, layout.PAUSED_DIR):
                found = self._read(layout.task_file(folder, task_id), folder)
                if found is not None:
                    break
            if found is None:
                if pending is None:
                    pending = self._pending_index()
                path = pending.get(task_id)
                found = None if path is None else self._read(path, layout.PENDING_DIR)
            if found is None:
                found = self._locate_locked(task_id)
            tasks.append(None if found is None else found.task)
        return tasks

    def _pending_dirs(self, queue: str | None) -> list[str]:
        if queue is not None:
            return [layout.queue_dir(queue)]
        return [f"{layout.PENDING_DIR}/{name}" for name in self.store.listdir(layout.PENDING_DIR)]

    def _scan(self, status: TaskStatus | None, queue: str | None, salvage: bool = False) -> Iterator[Task]:
        """Every task matching the filters (reads the bodies it needs; see :meth:`_decode` for ``salvage``)."""
        folders = []
        if status in (None, TaskStatus.PENDING):
            for qdir in self._pending_dirs(queue):
                for name in self.store.listdir(qdir):
                    found = (
                        self._read(f"{qdir}/{name}", layout.PENDING_DIR, salvage)
                        if layout.parse_pending(name)
                        else None
                    )
                    if found is not None:
                        yield found.task
            folders.append(layout.PAUSED_DIR)
        if status in (None, TaskStatus.RUNNING):
            folders.append(layout.RUNNING_DIR)
        if status is None or status in TERMINAL_STATUSES:
            folders.append(layout.DONE_DIR)
        for folder in folders:
            for task in self._scan_folder(folder, salvage):
                if (queue is None or task.queue == queue) and (status is None or task.status is status):
                    yield task

    def list_tasks(self, status: TaskStatus | None, queue: str | None, limit: int, offset: int) -> list[Task]:
        """Tasks matching the filters, newest first."""
        newest = heapq.nlargest(offset + limit, self._scan(status, queue), key=lambda t: (t.created_at, t.id))
        return newest[offset:]

    def count(self, status: TaskStatus | None, queue: str | None) -> int:
        """Count tasks; pending and running counts come from listings alone when no body is needed."""
        if status is TaskStatus.RUNNING and queue is None:
            return sum(1 for n in self.store.listdir(layout.RUNNING_DIR) if layout.parse_task_file(n) is not None)
        if status is TaskStatus.PENDING:
            qdirs = self._pending_dirs(queue)
            ready = sum(1 for d in qdirs for n in self.store.listdir(d) if layout.parse_pending(n) is not None)
            paused = sum(1 for t in self._scan_folder(layout.PAUSED_DIR, True) if queue is None or t.queue == queue)
            return ready + paused
        return sum(1 for _ in self._scan(status, queue, salvage=True))  # a corrupted field elsewhere counts too

    def _scan_folder(self, folder: str, salvage: bool = False) -> Iterator[Task]:
        for name in self.store.listdir(folder):
            if layout.parse_task_file(name) is not None:
                found = self._read(f"{folder}/{name}", folder, salvage)
                if found is not None:
                    yield found.task

    def ready_exists(self, queues: Sequence[str]) -> bool:
        """Whether any of ``queues`` holds a task that is due (names only)."""
        now = layout.micros(utcnow())
        for queue in queues:
            for name in self.store.listdir(layout.queue_dir(queue)):
                parsed = layout.parse_pending(name)
                if parsed is not None and parsed[0] <= now:
                    return True
        return False

    # -- enqueue -----------------------------------------------------------------------------------

    def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store PENDING tasks (unique keys honoured) and make them durable."""
        ids = [self._enqueue(task) for task in tasks]
        self.store.flush()
        return ids

    def _enqueue(self, task: Task) -> str:
        if task.status is not TaskStatus.PENDING or task.lease_token is not None:
            task = _replace(task, status=TaskStatus.PENDING, **_CLEAR_LEASE)
        key = task.unique_key
        if key is None:
            return self._store_new(task)
        marker = layout.unique_file(key)
        with self.store.lock(layout.unique_lock(key)):
            holder = self._unique_holder(marker)
            if holder is not None:
                return holder
            # Marker first: a crash before the task is written leaves a stale marker (detected
            # above), never a task without its marker.
            if not self.store.create_exclusive(marker, task.id.encode()):
                self.store.write(marker, task.id.encode())
            return self._store_new(task)

    def _unique_holder(self, marker: str) -> str | None:
        """The id named by a unique marker if that task is still PENDING or RUNNING (else the marker is stale)."""
        data = self.store.read(marker)
        if data is None:
            return None
        holder = data.decode("utf-8", "replace")
        found = self._locate_locked(holder, salvage=True)
        return holder if found is not None and found.task.status in _ACTIVE else None

    def _store_new(self, task: Task) -> str:
        # Re-enqueueing a live id is a no-op (cheap checks only: a copy still in pending/ is not
        # looked for, the claim drops whichever copy comes second). A terminal id is replaced.
        with self.store.lock(layout.task_lock(task.id)):
            for folder in (layout.RUNNING_DIR, layout.PAUSED_DIR):
                if self.store.exists(layout.task_file(folder, task.id)):
                    return task.id
            self.store.write(layout.home_of(task), encode_task(task))
            self.store.unlink(layout.task_file(layout.DONE_DIR, task.id))
        return task.id

    # -- leases ------------------------------------------------------------------------------------

    def claim(self, queues: Sequence[str], limit: int, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` due tasks, best first across ``queues``."""
        if limit <= 0:
            return []
        now = utcnow()
        due = layout.micros(now)
        candidates: list[tuple[str, str, str]] = []  # (name, folder, id): names sort in claim order
        for queue in dict.fromkeys(queues):
            qdir = layout.queue_dir(queue)
            for name in self.store.listdir(qdir):
                parsed = layout.parse_pending(name)
                if parsed is not None and parsed[0] <= due:
                    candidates.append((name, qdir, parsed[1]))
        candidates.sort()
        deadline = now + timedelta(seconds=lease)
        claimed: list[Task] = []
        busy: list[tuple[str, str, str]] = []
        for candidate in candidates:
            if len(claimed) >= limit:
                break
            # Skip a task whose lock is busy (another claimer is on it) rather than queue behind it.
            with self.store.lock(layout.task_lock(candidate[2]), blocking=False) as acquired:
                task = self._claim_one(candidate, now, deadline, worker_id) if acquired else None
            if not acquired:
                busy.append(candidate)
            elif task is not None:
                claimed.append(task)
        for candidate in busy:  # a stripe can be busy for an unrelated task: try those again, waiting
            if len(claimed) >= limit:
                break
            with self.store.lock(layout.task_lock(candidate[2])):
                task = self._claim_one(candidate, now, deadline, worker_id)
            if task is not None:
                claimed.append(task)
        self.store.flush()
        return claimed

    def _claim_one(
        self, candidate: tuple[str, str, str], now: datetime, deadline: datetime, worker_id: str
    ) -> Task | None:
        name, qdir, task_id = candidate
        source = f"{qdir}/{name}"
        running = layout.task_file(layout.RUNNING_DIR, task_id)
        if not self.store.exists(source):
            return None  # another process claimed it since our listing
        if self.store.exists(running) or self.store.exists(layout.task_file(layout.DONE_DIR, task_id)):
            # The same id enqueued twice while PENDING (enqueue checks only running/ and paused/,
            # so it never lists a queue): the first copy ran or runs, this one is the duplicate.
            logger.warning("task %s was enqueued again while live; dropped the duplicate %s", task_id, source)
            self.store.unlink(source)
            return None
        if not self.store.rename(source, running):
            return None  # gone after all (only possible without locks)
        found = self._read(running, layout.RUNNING_DIR, salvage=True)
        if found is None:
            return None
        task = _replace(
            found.task,
            status=TaskStatus.RUNNING,
            attempts=found.task.attempts + 1,
            lease_token=new_id(),
            lease_expires_at=deadline,
            started_at=now,
            updated_at=now,
            worker_id=worker_id,
            paused=False,
        )
        self.store.write(running, encode_task(task))
        return task

    def _held(self, task_id: str, token: str) -> _Found | None:
        """The running task if ``token`` still holds its lease (call under the task's lock)."""
        found = self._read(layout.task_file(layout.RUNNING_DIR, task_id), layout.RUNNING_DIR, salvage=True)
        if found is None or found.task.status is not TaskStatus.RUNNING or found.task.lease_token != token:
            return None
        return found

    def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back the deadline of every lease still held."""
        now = utcnow()
        deadline = now + timedelta(seconds=lease)
        extended: set[str] = set()
        for task_id, token in leases.items():
            with self.store.lock(layout.task_lock(task_id)):
                found = self._held(task_id, token)
                if found is not None:
                    task = _replace(found.task, lease_expires_at=deadline, updated_at=now)
                    self.store.write(found.path, encode_task(task))
                    extended.add(task_id)
        self.store.flush()
        return extended

    def finish(self, outcomes: Sequence[Outcome], results: ResultFiles | None) -> list[bool]:
        """Apply token-checked outcomes; with ``results``, write accepted results first (fused)."""
        now = utcnow()
        accepted: list[bool] = []
        freed: list[tuple[str, str]] = []
        for outcome in outcomes:
            with self.store.lock(layout.task_lock(outcome.task_id)):
                found = self._held(outcome.task_id, outcome.lease_token)
                if found is not None:
                    if results is not None and outcome.result is not None:
                        results.write(outcome.result)  # before the outcome: a waiter never misses it
                    self._apply(found, outcome, now, freed)
            accepted.append(found is not None)
        self._free_unique(freed)
        self.store.flush()
        return accepted

    def _apply(self, found: _Found, outcome: Outcome, now: datetime, freed: list[tuple[str, str]]) -> None:
        # the caller has checked the lease token under the task's lock
        updated = apply_outcome(found.task, outcome, now)
        assert updated is not None
        self._move(found, updated, freed)

    def _move(self, found: _Found, task: Task, freed: list[tuple[str, str]]) -> None:
        """Store ``task`` where its new status belongs and remove the old file (under the task's lock)."""
        if task.status in TERMINAL_STATUSES:
            self.store.write(layout.task_file(layout.DONE_DIR, task.id), encode_task(task))
            self.store.unlink(found.path)
            if task.unique_key is not None:
                freed.append((task.unique_key, task.id))
            return
        target = layout.home_of(task) if task.status is TaskStatus.PENDING else found.path
        if target != found.path and not self.store.rename(found.path, target):
            return
        self.store.write(target, encode_task(task))

    def _free_unique(self, freed: Sequence[tuple[str, str]]) -> None:
        """Drop unique markers still naming these tasks (after their task locks are released)."""
        for key, task_id in freed:
            marker = layout.unique_file(key)
            with self.store.lock(layout.unique_lock(key)):
                data = self.store.read(marker)
                if data is not None and data.decode("utf-8", "replace") == task_id:
                    self.store.unlink(marker)

    # -- management --------------------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """CANCELLED for a PENDING or RUNNING task; its lease, if any, is lost."""
        freed: list[tuple[str, str]] = []
        with self.store.lock(layout.task_lock(task_id)):
            found = self._locate(task_id, salvage=True)
            if found is None or found.task.status not in _ACTIVE:
                return False
            now = utcnow()
            task = _replace(found.task, status=TaskStatus.CANCELLED, finished_at=now, updated_at=now, **_CLEAR_LEASE)
            self._move(found, task, freed)
        self._free_unique(freed)
        self.store.flush()
        return True

    def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        with self.store.lock(layout.task_lock(task_id)):
            found = self._locate(task_id, salvage=True)
            if found is None or found.task.status in TERMINAL_STATUSES:
                return False
            if found.task.paused != paused:
                self._move(found, _replace(found.task, paused=paused, updated_at=utcnow()), [])
        self.store.flush()
        return True

    def purge(self, queue: str | None, statuses: Sequence[TaskStatus] | None) -> int:
        """Delete matching tasks; return how many."""
        wanted = None if statuses is None else frozenset(TaskStatus(s) for s in statuses)
        doomed: list[_Found] = []
        for folder, paths in self._all_paths():
            for path in paths:
                found = self._read(path, folder, salvage=True)
                if found is None:
                    continue
                task = found.task
                if (queue is None or task.queue == queue) and (wanted is None or task.status in wanted):
                    doomed.append(found)
        count = 0
        freed: list[tuple[str, str]] = []
        for found in doomed:
            with self.store.lock(layout.task_lock(found.task.id)):
                if self.store.unlink(found.path):
                    count += 1
                    if found.task.unique_key is not None and found.task.status in _ACTIVE:
                        freed.append((found.task.unique_key, found.task.id))
        self._free_unique(freed)
        self.store.flush()
        return count

    def _all_paths(self) -> Iterator[tuple[str, list[str]]]:
        for qdir in self.store.listdir(layout.PENDING_DIR):
            folder = f"{layout.PENDING_DIR}/{qdir}"
            names = [n for n in self.store.listdir(folder) if layout.parse_pending(n) is not None]
            yield layout.PENDING_DIR, [f"{folder}/{n}" for n in names]
        for folder in (layout.PAUSED_DIR, layout.RUNNING_DIR, layout.DONE_DIR):
            names = [n for n in self.store.listdir(folder) if layout.parse_task_file(n) is not None]
            yield folder, [f"{folder}/{n}" for n in names]

    def recover(self) -> list[Task]:
        """Requeue (or fail, out of attempts) running tasks whose lease passed; repair crash leftovers."""
        now = utcnow()
        recovered: list[Task] = []
        freed: list[tuple[str, str]] = []
        for name in self.store.listdir(layout.RUNNING_DIR):
            task_id = layout.parse_task_file(name)
            if task_id is None:
                continue
            found = self._read(f"{layout.RUNNING_DIR}/{name}", layout.RUNNING_DIR, salvage=True)
            if found is None or not _lease_over(found.task, now):
                continue
            with self.store.lock(layout.task_lock(task_id)):
                task = self._recover_one(task_id, now, freed)
            if task is not None:
                recovered.append(task)
        self._free_unique(freed)
        self._sweep_tmp()
        self.store.flush()
        if recovered:
            logger.info("recovered %d task(s) whose lease expired", len(recovered))
        return recovered

    def _recover_one(self, task_id: str, now: datetime, freed: list[tuple[str, str]]) -> Task | None:
        found = self._read(layout.task_file(layout.RUNNING_DIR, task_id), layout.RUNNING_DIR, salvage=True)
        if found is None or not _lease_over(found.task, now):
            return None  # finished or extended meanwhile
        if self.store.exists(layout.task_file(layout.DONE_DIR, task_id)):
            self.store.unlink(found.path)  # a finish that crashed after writing done/
            return None
        task = found.task
        if task.status is not TaskStatus.RUNNING:
            # A claim that crashed between its rename and its rewrite: the attempt never started.
            task = _replace(task, status=TaskStatus.PENDING, **_CLEAR_LEASE)
        elif task.attempts >= task.max_attempts:
            error = lease_expired_error(task)
            task = _replace(
                task, status=TaskStatus.FAILED, error=error, finished_at=now, updated_at=now, **_CLEAR_LEASE
            )
        else:
            task = _replace(task, status=TaskStatus.PENDING, eta=now, updated_at=now, **_CLEAR_LEASE)
        self._move(found, task, freed)
        return task

    def _sweep_tmp(self) -> None:
        for name in self.store.listdir(layout.TMP_DIR):
            path = f"{layout.TMP_DIR}/{name}"
            age = self.store.age(path)
            if age is not None and age > layout.TMP_MAX_AGE:
                self.store.unlink(path)
                logger.info("deleted the temp file %s left by a crashed writer", path)


def _lease_over(task: Task, now: datetime) -> bool:
    """Whether a file in running/ needs recovery: lease past, or not RUNNING at all (a crashed claim)."""
    if task.status is not TaskStatus.RUNNING:
        return True
    return task.lease_expires_at is None or task.lease_expires_at <= now
