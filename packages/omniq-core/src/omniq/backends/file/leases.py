"""The lease state machine over task files: claim, extend, finish, recover (synchronous).

A claim is an atomic rename of a due task's file from its queue folder into
``tasks/running/``; extend, finish and recovery rewrite that file under the
task's lock, after checking the lease token it holds (see :mod:`.task_files`
for the rules that keep several processes honest). A task that ends (finish
with a terminal outcome, recovery out of attempts) lowers the count of the
tasks waiting on it once its lock is released (:mod:`.dependencies`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import dependencies, flow, layout
from omniq.backends.file.task_files import CLEAR_LEASE
from omniq.base.task_queue import claim_after_finish_failed
from omniq.lease import apply_outcome, lease_expired_error
from omniq.models import Outcome, Task, TaskStatus, encode_task, new_id, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from omniq.backends.file.result_files import ResultFiles
    from omniq.backends.file.task_files import Found, Taken, TaskFiles

__all__ = ["claim", "extend", "finish", "finish_and_claim", "free_slot", "recover"]

logger = logging.getLogger("omniq.file")

_replace = msgspec.structs.replace
#: limited candidates a claim parks before it stops parking: past them it takes only
#: tasks due at a rate slot they reserved (named so: ``layout.is_reserved``) and returns; the rest
#: wait for the next claim, which the worker sends at once (they are due). Without the cap the first
#: claim of a backlog under a full limit parked all of it before anything else could start: 5,000
#: held tasks, 4 s before the claim's 50 started; 11,000 rate-limited tasks at 500/s, 13 s in which
#: nothing started, the tasks whose reserved slots fell due meanwhile sorting behind the backlog.
#: 25, not 100: a claim that parks less comes round sooner for the tasks falling due (rate_limit=500/s,
#: ``flow_control.py rate --engines file``, 3 runs each: 1.017-1.025x the limit with 25, 0.838-0.840x with 100).
PARKS_PER_CLAIM = 25
#: a due task found by listing: (file name, queue folder, id); names sort in claim order.
_Candidate = tuple[str, str, str]


def claim(files: TaskFiles, queues: Sequence[str], limit: int, lease: float, worker_id: str) -> list[Task]:
    """Lease up to ``limit`` due tasks, best first across ``queues``."""
    if limit <= 0:
        return []
    store = files.store
    now = utcnow()
    due = layout.micros(now)
    candidates: list[_Candidate] = []
    for queue in dict.fromkeys(queues):
        qdir = layout.queue_dir(queue)
        names = store.listdir(qdir)
        if layout.PAUSED_MARKER in names:
            continue  # a paused queue: its marker is in the listing the claim reads anyway
        for name in names:
            parsed = layout.parse_pending(name)
            if parsed is not None and parsed[0] <= due:
                candidates.append((name, qdir, parsed[1]))
    candidates.sort()
    walk = _Walk(files, limit, now, now + timedelta(seconds=lease), worker_id)
    busy = walk.take(candidates, wait=False)
    walk.take(busy, wait=True)  # a stripe can be busy for an unrelated task: try those again, waiting
    store.flush()
    return walk.claimed


class _Walk:
    """One claim's walk over its candidates, in claim order (see :data:`PARKS_PER_CLAIM`)."""

    def __init__(self, files: TaskFiles, limit: int, now: datetime, deadline: datetime, worker_id: str) -> None:
        self.files, self.limit, self.now, self.deadline, self.worker_id = files, limit, now, deadline, worker_id
        self.claimed: list[Task] = []
        self.parked = 0  # limited candidates parked back in their queue (one found gone costs nothing)

    def take(self, candidates: list[_Candidate], *, wait: bool) -> list[_Candidate]:
        """Lease what it may of ``candidates``; return those whose lock was busy (none when ``wait``)."""
        busy: list[_Candidate] = []
        for candidate in candidates:
            if len(self.claimed) >= self.limit:
                break
            if self.parked >= PARKS_PER_CLAIM and not layout.is_reserved(candidate[0]):
                continue
            # Skip a task whose lock is busy (another claimer is on it) rather than queue behind it.
            with self.files.store.lock(layout.task_lock(candidate[2]), blocking=wait) as acquired:
                task = self._one(candidate) if acquired else None
            if not acquired:
                busy.append(candidate)
            elif task is not None:
                self.claimed.append(task)
        return busy

    def _one(self, candidate: _Candidate) -> Task | None:
        """Lease one candidate (under its lock); None when it is gone or was parked."""
        store = self.files.store
        name, qdir, task_id = candidate
        source = f"{qdir}/{name}"
        running = layout.task_file(layout.RUNNING_DIR, task_id)
        if not store.exists(source):
            return None  # another process claimed it since our listing
        if store.exists(running) or store.exists(layout.task_file(layout.DONE_DIR, task_id)):
            # The same id enqueued twice while PENDING (enqueue checks only running/ and paused/,
            # so it never lists a queue): the first copy ran or runs, this one is the duplicate.
            logger.warning("task %s was enqueued again while live; dropped the duplicate %s", task_id, source)
            store.unlink(source)
            return None
        if not store.rename(source, running):
            return None  # gone after all (only possible without locks)
        found = self.files.read(running, layout.RUNNING_DIR, salvage=True)
        if found is None:
            return None
        task = found.task
        if task.limits is not None:  # the one branch an unlimited task pays
            if not flow.admit_claim(self.files, task, running, self.now, self.deadline):
                self.parked += 1
                return None  # parked back in its queue, due at its eta
        task = _leased(task, self.now, self.deadline, self.worker_id)
        store.write(running, encode_task(task))
        return task


def _claim_order(task: Task) -> tuple[int, datetime]:
    """Sort key of tasks in claim order (as held entries and pending names sort)."""
    return -task.priority, task.created_at


def _leased(task: Task, now: datetime, deadline: datetime, worker_id: str) -> Task:
    """``task`` (PENDING) as the claim of ``worker_id`` makes it: RUNNING until ``deadline``."""
    return _replace(
        task,
        status=TaskStatus.RUNNING,
        attempts=task.attempts + 1,
        lease_token=new_id(),
        lease_expires_at=deadline,
        started_at=now,
        updated_at=now,
        worker_id=worker_id,
        paused=False,
        waiting=0,  # a queue folder waits for nothing (a stale count from a crash is dropped here)
        held=False,
        rate_reserved=False,
    )


def _held(files: TaskFiles, task_id: str, token: str) -> Found | None:
    """The running task if ``token`` still holds its lease (call under the task's lock)."""
    found = files.read(layout.task_file(layout.RUNNING_DIR, task_id), layout.RUNNING_DIR, salvage=True)
    if found is None or found.task.status is not TaskStatus.RUNNING or found.task.lease_token != token:
        return None
    return found


def extend(files: TaskFiles, leases: Mapping[str, str], lease: float) -> set[str]:
    """Push back the deadline of every lease still held."""
    now = utcnow()
    deadline = now + timedelta(seconds=lease)
    extended: set[str] = set()
    for task_id, token in leases.items():
        with files.store.lock(layout.task_lock(task_id)):
            found = _held(files, task_id, token)
            if found is not None:
                task = _replace(found.task, lease_expires_at=deadline, updated_at=now)
                files.store.write(found.path, encode_task(task))
                if task.limits is not None and task.limits.concurrency is not None:
                    flow.extend_holder(files, task)  # a holder keeps its slot as long as its lease
                extended.add(task_id)
    files.store.flush()
    return extended


def finish_and_claim(
    files: TaskFiles,
    outcomes: Sequence[Outcome],
    results: ResultFiles | None,
    queues: Sequence[str],
    limit: int,
    lease: float,
    worker_id: str,
) -> tuple[list[bool], list[Task], bool]:
    """:func:`finish`, the slots it frees handed to held tasks leased here (:class:`.flow.HandOver`).

    When it leased none, :func:`claim` follows for up to ``limit`` tasks; when
    it leased some, no claim follows: the tasks it woke for the other slots
    (past the key's share) are the other claimers'. Returns the accepted
    flags, the leased tasks in claim order and whether a task was woken.
    """
    now = utcnow()
    deadline = now + timedelta(seconds=lease)
    handover = flow.HandOver(queues, limit, deadline.timestamp(), lambda task: _leased(task, now, deadline, worker_id))
    accepted, woke = finish(files, outcomes, results, handover)
    if handover.taken:
        return accepted, sorted(handover.taken, key=_claim_order), woke
    try:
        return accepted, claim(files, queues, limit, lease, worker_id), woke
    except Exception as exc:
        return accepted, claim_after_finish_failed(exc), woke


def finish(
    files: TaskFiles, outcomes: Sequence[Outcome], results: ResultFiles | None, handover: flow.HandOver | None = None
) -> tuple[list[bool], bool]:
    """Apply token-checked outcomes; with ``results``, write accepted results first (fused).

    Returns which outcomes were accepted, and whether a task was woken (a
    limited holder's finish frees its slot; a dependant's last dependency ended).
    With ``handover``, a freed slot's held task may be leased to it instead.
    """
    handover = handover or flow.HandOver()  # wakes only; a key's held tasks listed once for the batch
    now = utcnow()
    accepted: list[bool] = []
    freed: list[tuple[str, str]] = []
    later: list[tuple[str, str]] = []
    ended: list[Taken] = []
    woke = False
    for outcome in outcomes:
        with files.store.lock(layout.task_lock(outcome.task_id)):
            found = _held(files, outcome.task_id, outcome.lease_token)
            if found is not None:
                if results is not None and outcome.result is not None:
                    results.write(outcome.result)  # before the outcome: a waiter never misses it
                updated = apply_outcome(found.task, outcome, now)
                assert updated is not None  # the token was checked above, under the lock
                files.move(found, updated, freed, ended)
                if found.task.limits is not None:  # the one branch an unlimited task pays
                    woke = free_slot(files, found.task, later, handover) or woke
        accepted.append(found is not None)
    files.free_unique(freed)
    woke = (bool(later) and flow.wake_later(files, later)) or woke
    woke = (bool(ended) and dependencies.release(files, ended)) or woke
    files.store.flush()
    return accepted, woke


def free_slot(files: TaskFiles, task: Task, later: list[tuple[str, str]], handover: flow.HandOver) -> bool:
    """Free a limited holder's slot as it leaves RUNNING (under its lock); nothing for other tasks.

    ``handover``: one per batch (a finish, a recovery, a purge), so a key's held tasks are listed once.
    """
    if task.limits is None or task.limits.concurrency is None:
        return False
    return flow.release(files, task, layout.task_lock(task.id), later, handover)


def recover(files: TaskFiles) -> tuple[list[Task], bool]:
    """Requeue (or fail, out of attempts) running tasks whose lease passed; repair crash leftovers.

    Returns the recovered tasks, and whether a task was woken besides them (a
    held task given a freed slot, a dependant made ready).
    """
    store = files.store
    now = utcnow()
    recovered: list[Task] = []
    freed: list[tuple[str, str]] = []
    later: list[tuple[str, str]] = []
    ended: list[Taken] = []
    handover = flow.HandOver()  # wakes only; a key's held tasks listed once for the recovery
    for name in store.listdir(layout.RUNNING_DIR):
        task_id = layout.parse_task_file(name)
        if task_id is None:
            continue
        found = files.read(f"{layout.RUNNING_DIR}/{name}", layout.RUNNING_DIR, salvage=True)
        if found is None or not _lease_over(found.task, now):
            continue
        with store.lock(layout.task_lock(task_id)):
            task = _recover_one(files, task_id, now, freed, later, ended, handover)
        if task is not None:
            recovered.append(task)
    files.free_unique(freed)
    woke = bool(later) and flow.wake_later(files, later)
    woke = dependencies.release(files, ended) or woke
    woke = dependencies.repair(files) or woke  # journals a crashed step left behind
    _sweep_tmp(files)
    store.flush()
    if recovered:
        logger.info("recovered %d task(s) whose lease expired", len(recovered))
    return recovered, woke


def _recover_one(
    files: TaskFiles,
    task_id: str,
    now: datetime,
    freed: list[tuple[str, str]],
    later: list[tuple[str, str]],
    ended: list[Taken],
    handover: flow.HandOver,
) -> Task | None:
    found = files.read(layout.task_file(layout.RUNNING_DIR, task_id), layout.RUNNING_DIR, salvage=True)
    if found is None or not _lease_over(found.task, now):
        return None  # finished or extended meanwhile
    if files.store.exists(layout.task_file(layout.DONE_DIR, task_id)):
        files.store.unlink(found.path)  # a finish that crashed after writing done/
        return None
    task = found.task
    if task.status is not TaskStatus.RUNNING:
        # A claim that crashed between its rename and its rewrite: the attempt never started.
        task = _replace(task, status=TaskStatus.PENDING, **CLEAR_LEASE)
    elif task.attempts >= task.max_attempts:
        error = lease_expired_error(task)
        task = _replace(task, status=TaskStatus.FAILED, error=error, finished_at=now, updated_at=now, **CLEAR_LEASE)
    else:
        task = _replace(task, status=TaskStatus.PENDING, eta=now, updated_at=now, **CLEAR_LEASE)
    files.move(found, task, freed, ended)
    if found.task.status is TaskStatus.RUNNING:
        free_slot(files, found.task, later, handover)
    return task


def _lease_over(task: Task, now: datetime) -> bool:
    """Whether a file in running/ needs recovery: lease past, or not RUNNING at all (a crashed claim)."""
    if task.status is not TaskStatus.RUNNING:
        return True
    return task.lease_expires_at is None or task.lease_expires_at <= now


def _sweep_tmp(files: TaskFiles) -> None:
    """Delete temp files older than :data:`~.layout.TMP_MAX_AGE`: what crashed writers left."""
    store = files.store
    for name in store.listdir(layout.TMP_DIR):
        path = f"{layout.TMP_DIR}/{name}"
        age = store.age(path)
        if age is not None and age > layout.TMP_MAX_AGE:
            store.unlink(path)
            logger.info("deleted the temp file %s left by a crashed writer", path)
