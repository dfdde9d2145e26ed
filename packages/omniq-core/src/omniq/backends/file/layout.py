"""Every folder and file name of the file backend, and how task files are named.

A task lives in exactly one place, and the place says what it is waiting for::

    tasks/pending/q_<queue>/<priority>_<ready>_<seq>_<id>.task   ready or scheduled
    tasks/paused/<id>.task                                       PENDING but paused
    tasks/waiting/<id>.task                                      PENDING, waiting for dependencies
    tasks/running/<id>.task                                      leased (token and deadline inside)
    tasks/done/<id>.task                                         terminal
    tasks/pending/q_<queue>/paused                               the queue is paused (claims skip it)
    limits/<sha256 of the key>.state                             a limit key's holders, held tasks, tat
    dependants/<id>.deps                                         the tasks waiting on <id>, until it ends
    dependants/journal/<random>.deps                             dependants whose count a step is lowering
    workers/<worker id>.worker                                   a live worker (expiry inside)

Pending names are fixed-width, so a sorted directory listing is claim order:
inverted priority first, then the ready time (``eta`` or ``created_at``, in
microseconds), then an enqueue sequence. A claimer reads the ready time from
the name and never opens a task that is not due.
"""

from __future__ import annotations

import hashlib
import itertools
import zlib
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from omniq.models import Task

#: tasks that are ready or scheduled; one sub-folder per queue.
PENDING_DIR = "tasks/pending"
#: PENDING tasks that are paused (claim never looks here).
PAUSED_DIR = "tasks/paused"
#: PENDING tasks whose ``waiting`` is above 0 (claim never looks here; see :mod:`.dependencies`).
WAITING_DIR = "tasks/waiting"
#: RUNNING tasks, each under a lease; claim moves files here by rename.
RUNNING_DIR = "tasks/running"
#: terminal tasks (SUCCEEDED, FAILED, CANCELLED, EXPIRED).
DONE_DIR = "tasks/done"
#: unique-key markers: file named by the key's SHA-256, body = id of the PENDING/RUNNING holder.
UNIQUE_DIR = "unique"
#: one result file per task.
RESULTS_DIR = "results"
#: one event file per appended batch.
EVENTS_DIR = "events"
#: flock stripes guarding read-modify-write of tasks (``t###``, which also guards a task's dependants
#: record), unique keys (``u###``), limit keys (``k###``) and events (``events``).
LOCKS_DIR = "locks"
#: one state file per limit key (:mod:`.flow`): its holders, its held tasks and its rate's ``tat``.
LIMITS_DIR = "limits"
#: one record per task that others wait on: the ids of its dependants (:mod:`.dependencies`).
DEPENDANTS_DIR = "dependants"
#: dependants a step is lowering the count of (an ended task's taken record, an enqueue's batch);
#: one is left behind only by a crash, and ``recover`` finishes it.
JOURNAL_DIR = "dependants/journal"
#: one file per registered worker, its expiry inside (checked at read, removed once expired).
WORKERS_DIR = "workers"
#: temp files are written here, fsynced, then renamed into place; leftovers are crash debris.
TMP_DIR = "tmp"
#: undecodable files are moved here (never deleted) so one bad file cannot stall a queue.
CORRUPT_DIR = "corrupt"

#: every folder connect() creates.
ALL_DIRS = (
    PENDING_DIR,
    PAUSED_DIR,
    WAITING_DIR,
    RUNNING_DIR,
    DONE_DIR,
    UNIQUE_DIR,
    RESULTS_DIR,
    EVENTS_DIR,
    WORKERS_DIR,
    LIMITS_DIR,
    DEPENDANTS_DIR,
    JOURNAL_DIR,
    LOCKS_DIR,
    TMP_DIR,
    CORRUPT_DIR,
)

#: suffix of task files; any other name in a task folder (temp debris) is ignored.
TASK_SUFFIX = ".task"
#: suffix of limit state files.
STATE_SUFFIX = ".state"
#: name of the marker in a paused queue's pending folder; the claim's listing of the folder sees it.
PAUSED_MARKER = "paused"
#: suffix of dependants records and journals.
DEPENDANTS_SUFFIX = ".deps"
#: suffix of result files.
RESULT_SUFFIX = ".res"
#: suffix of event batch files.
EVENT_SUFFIX = ".evt"
#: suffix of worker files.
WORKER_SUFFIX = ".worker"
#: name of the lock serialising changes to worker files.
WORKERS_LOCK = "workers"
#: prefix of a queue's pending folder (keeps "." and ".." queue names harmless).
QUEUE_PREFIX = "q_"
#: number of lock files per kind; ids hash onto them.
LOCK_STRIPES = 256
#: name of the lock serialising event purges.
EVENTS_LOCK = "events"
#: seconds after which a leftover temp file is deleted by recover().
TMP_MAX_AGE = 3600.0

_PRIORITY_BIAS = 1 << 40  # priorities are clamped to +-(2**40 - 1) so the inverted value stays 13 digits
_PRIORITY_WIDTH = 13
_READY_WIDTH = 18  # microseconds since the epoch
_SEQ_WIDTH = 12
#: where the sequence field begins in a pending name (after ``<priority>_<ready>_``).
_SEQ_AT = _PRIORITY_WIDTH + 1 + _READY_WIDTH + 1
_sequence = itertools.count()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def file_id(task_id: str) -> str:
    """Encode a task id for use in a file name (``/`` and other unsafe characters are %-escaped)."""
    return quote(task_id, safe="")


def task_file(folder: str, task_id: str) -> str:
    """Path of ``<folder>/<id>.task``."""
    return f"{folder}/{file_id(task_id)}{TASK_SUFFIX}"


def queue_dir(queue: str) -> str:
    """The pending folder of ``queue``."""
    return f"{PENDING_DIR}/{QUEUE_PREFIX}{quote(queue, safe='')}"


def micros(when: datetime) -> str:
    """A datetime as fixed-width microseconds since the epoch (names compare as strings).

    Integer arithmetic, not ``timestamp() * 1e6``: float rounding would shift
    boundaries by a microsecond.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # OmniQ times are UTC; tolerate a naive one
    value = max((when - _EPOCH) // _MICROSECOND, 0)
    return f"{value:0{_READY_WIDTH}d}"


def pending_file(task: Task) -> str:
    """Path of a PENDING, unpaused task: its name sorts in claim order.

    The sequence field's first digit is 1 for a task parked at a rate slot it
    reserved (``rate_reserved``), else 0: a claim that stops parking can still
    find, by name, the tasks it may start without a check (:func:`is_reserved`).
    A name from before the flag has a 0 there (a counter below 10**11).
    """
    priority = max(min(task.priority, _PRIORITY_BIAS - 1), 1 - _PRIORITY_BIAS)
    inverted = f"{_PRIORITY_BIAS - priority:0{_PRIORITY_WIDTH}d}"
    ready = micros(task.eta or task.created_at)
    seq = f"{1 if task.rate_reserved else 0}{next(_sequence) % 10 ** (_SEQ_WIDTH - 1):0{_SEQ_WIDTH - 1}d}"
    return f"{queue_dir(task.queue)}/{inverted}_{ready}_{seq}_{file_id(task.id)}{TASK_SUFFIX}"


def home_of(task: Task) -> str:
    """Where a PENDING task belongs: the waiting folder, the paused folder, or its queue folder.

    Waiting comes first: a paused dependant waits for its dependencies too, and
    goes to the paused folder when the last one ends (pause and waiting are
    independent).
    """
    if task.waiting > 0:
        return task_file(WAITING_DIR, task.id)
    return task_file(PAUSED_DIR, task.id) if task.paused else pending_file(task)


def parse_pending(name: str) -> tuple[str, str] | None:
    """Return ``(ready, id)`` from a pending file name, or None for anything else (temp debris)."""
    if not name.endswith(TASK_SUFFIX):
        return None
    parts = name[: -len(TASK_SUFFIX)].split("_", 3)
    if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit()):
        return None
    if len(parts[1]) != _READY_WIDTH or not parts[3]:
        return None
    return parts[1], unquote(parts[3])


def is_reserved(name: str) -> bool:
    """Whether a pending name (one :func:`parse_pending` accepts) is a task's at the rate slot it reserved.

    A hint for the claim's walk, not the record: the task file's ``rate_reserved`` decides.
    """
    return name[_SEQ_AT] == "1"


def parse_task_file(name: str) -> str | None:
    """Return the id from ``<id>.task``, or None for anything else."""
    if not name.endswith(TASK_SUFFIX) or len(name) == len(TASK_SUFFIX):
        return None
    return unquote(name[: -len(TASK_SUFFIX)])


def queue_of(qdir: str) -> str:
    """The queue whose pending folder is named ``qdir`` (the inverse of :func:`queue_dir`'s last part)."""
    return unquote(qdir.removeprefix(QUEUE_PREFIX))


def worker_file(worker_id: str) -> str:
    """Path of a registered worker's file."""
    return f"{WORKERS_DIR}/{file_id(worker_id)}{WORKER_SUFFIX}"


def unique_file(key: str) -> str:
    """Path of the marker of a unique key."""
    return f"{UNIQUE_DIR}/{hashlib.sha256(key.encode()).hexdigest()}"


def limit_state_file(key: str) -> str:
    """Path of the state file of a limit key."""
    return f"{LIMITS_DIR}/{hashlib.sha256(key.encode()).hexdigest()}{STATE_SUFFIX}"


def limit_held_dir(key: str) -> str:
    """Folder of a limit key's held tasks: one small file each, named in claim order (see :func:`held_entry`)."""
    return f"{LIMITS_DIR}/{hashlib.sha256(key.encode()).hexdigest()}.held"


def held_entry(task: Task) -> str:
    """Name of ``task``'s entry among its key's held tasks: priority (highest first), enqueue time, id."""
    priority = max(min(task.priority, _PRIORITY_BIAS - 1), 1 - _PRIORITY_BIAS)
    return f"{_PRIORITY_BIAS - priority:0{_PRIORITY_WIDTH}d}-{micros(task.created_at)}-{task.id}"


def held_entry_id(name: str) -> str:
    """The task id in a :func:`held_entry` name."""
    return name.split("-", 2)[2]


def limit_lock(key: str) -> str:
    """Name of the lock stripe guarding a limit key's state (taken inside a task lock, never two at once)."""
    return f"k{zlib.crc32(key.encode()) % LOCK_STRIPES:03d}"


def task_lock(task_id: str) -> str:
    """Name of the lock stripe guarding ``task_id``."""
    return f"t{zlib.crc32(task_id.encode()) % LOCK_STRIPES:03d}"


def unique_lock(key: str) -> str:
    """Name of the lock stripe guarding a unique key."""
    return f"u{zlib.crc32(key.encode()) % LOCK_STRIPES:03d}"


def dependants_file(task_id: str) -> str:
    """Path of the record of the tasks waiting on ``task_id``."""
    return f"{DEPENDANTS_DIR}/{file_id(task_id)}{DEPENDANTS_SUFFIX}"


def journal_file(name: str) -> str:
    """Path of a journal of dependants being lowered (``name``: a fresh random id)."""
    return f"{JOURNAL_DIR}/{name}{DEPENDANTS_SUFFIX}"


def result_file(task_id: str) -> str:
    """Path of a task's result."""
    return f"{RESULTS_DIR}/{file_id(task_id)}{RESULT_SUFFIX}"
