"""Dependencies in the engine: a dependant waits in ``tasks/waiting/`` until the step that ends its last dependency.

The rules are :meth:`~omniq.base.BaseTaskQueue.enqueue`'s
(``Capability.DEPENDENCIES``); this module keeps them in files, under the
locking discipline of :mod:`.task_files`, for several processes on one host.

Where things live:

* The count is the dependant's own ``Task.waiting``, in its body. While it is
  above 0 the body lives in ``tasks/waiting/<id>.task``: the claim lists only
  queue folders, so it never sees a waiting task; get, list, count and the
  statistics read it as PENDING (paused or not: pause and waiting are
  independent, see :func:`.layout.home_of`).
* The reverse edges: ``dependants/<dep id>.deps``, one line per task that
  counts on ``dep`` (``<id> <crc32>``), appended to only under ``dep``'s task
  lock; a line that does not check (torn by a power loss) is skipped.
* ``dependants/journal/<random>.deps``: the dependants a step is lowering the
  count of, deleted when it is done. One is left behind only by a crash.

Counting, at enqueue (:class:`Counting`, once per batch that holds a task
with ``depends_on``):

1. As each dependant is stored, its dependency ids are looked up: one seen
   in ``done/`` (terminal) or found nowhere (checked under its lock) does not
   count; every other one is a *candidate*. A dependency stored earlier in the
   batch is a candidate without a look; one stored later was not there yet.
   The dependant is written with ``waiting`` = its number of candidates, to
   ``waiting/`` (to its queue folder when there are none: a child of
   finished tasks costs one write, as any task).
2. Then, for each candidate, under the dependency's task lock: still live
   (stored, not terminal)? The dependant's id is appended to its record.
   Ended or gone meanwhile? The dependant is owed one.
3. A dependant owed ``k`` is lowered by ``k`` under its own lock (see below).

Ending: every step that makes a task terminal (``finish`` with a terminal
outcome, fused results or not; ``cancel``; ``recover`` failing a task out of
attempts) or deletes it (``purge``) takes its record, under the task's lock
and before the terminal file is written or the file deleted: the record is
renamed into a journal (:meth:`.TaskFiles.take_dependants`). Once the step's
task locks are released, :func:`release` lowers each dependant listed by one
(by ``k`` when ``k`` of its dependencies ended in the same batch), under the
dependant's lock; the one that reaches 0 is moved to its queue folder (or to
``paused/``), at the place its priority and ``eta`` or ``created_at`` give it,
and the step wakes waiting workers as an enqueue does. Then the journal is
deleted. RETRY, RELEASE and RESCHEDULE move a task without ending it and take
nothing.

Why a dependant is claimed exactly once, even when several processes end
its dependencies at the same time:

* Registering C on D (check D live, append C's line) and taking D's record
  (the rename) run under the same lock, D's task lock. Either the
  registration comes first, the take moves C's line, and D's ending step
  lowers C; or the take comes first, D is terminal or gone when the
  registration looks, and C's enqueue lowers C (step 3). So each candidate
  lowers C exactly once: never zero times, never twice. Every end takes the
  record, so a record only holds registrations made since D last ended (a
  retried D's second end lowers those who counted on the second run only).
* C is written, with its count, before any registration, so a lowering always
  finds it, even when D ends while C's enqueue is still running.
* Lowering is a read-modify-write of C's body under C's lock: the processes
  ending C's dependencies serialise there, the count never goes below 0, and
  only the step that takes it from 1 to 0 moves C out of ``waiting/``; a later
  one no longer finds C there and does nothing.
* No step holds two task locks at once (registration holds D's, lowering
  C's, one after the other): a dependant and its dependency may share a lock
  stripe, and two processes' stripes may cross, so nesting them could deadlock.

A dependant cancelled while it waits keeps its count and keeps being lowered
(in ``done/``), so a ``retry`` puts it back in ``waiting/`` with the count of
what it still waits for, or makes it ready.

Crash safety: the journals. An enqueue writes one that lists its batch's
dependants, made durable before any of them is stored; the ending step's take
*is* one. Each is deleted only once the counts it lowers are flushed. A
process that dies in between (C stored but not registered, or a record taken
but not lowered) leaves its journal, and ``recover`` (:func:`repair`) looks at
each dependant listed: one still waiting whose dependencies have all ended
(terminal or gone) is made ready (``waiting`` 0); one still waiting on a live
dependency stays listed, for a later recover; the journal is deleted when no
one is left. Repair never lowers by one, it only sets 0 once nothing is left
to wait for, so it can never make a task ready early, and running it beside a
step still in flight, or in several processes at once, is harmless. A
dependant found nowhere is kept while its journal is younger than
:data:`~.layout.TMP_MAX_AGE` (the enqueue that lists it may not have stored it
yet). What a crash costs is delay: its dependants become ready at the first
recover after their last dependency ended.

What tasks without dependencies pay:

* enqueue: nothing (a batch without ``depends_on`` never comes here, and
  ``waiting/`` is checked for an id enqueued again only when the task has
  ``depends_on``);
* claim: nothing (it lists queue folders, as before);
* a step that ends a task: one failed open of ``dependants/<id>.deps`` (a
  lookup of a name that is not there, in a folder holding only the records of
  tasks that others wait on: cheaper than any file the step writes). A
  ``finish`` that requeues (RETRY, RELEASE, RESCHEDULE) pays nothing;
* ``get`` of a PENDING task: one failed open (``waiting/<id>.task``) before
  the listing of the queue folders it already does;
* ``recover``: one listing of the (empty) journal folder.

A limit: a task file quarantined as undecodable (:meth:`.TaskFiles.decode`)
vanishes without ending, so the tasks waiting on it wait until an operator
cancels or purges them.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING
from urllib.parse import unquote

import msgspec

from omniq.backends.file import layout
from omniq.models import TERMINAL_STATUSES, encode_task, new_id

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from omniq.backends.file.task_files import Taken, TaskFiles
    from omniq.models import Task

__all__ = ["Candidate", "Counting", "decode_ids", "encode_ids", "lower", "release", "repair"]

_replace = msgspec.structs.replace
#: a candidate dependency: its id, and where it was seen (a hint for the check under its lock).
Candidate = tuple[str, str | None]


# -- records and journals: lines of ``<file id> <crc32>`` ---------------------------------------------


def encode_ids(ids: Iterable[str]) -> bytes:
    """Lines naming ``ids``, each with its checksum; starts with a newline, so a torn line before stays apart."""
    lines = [b"%s %08x" % (name, zlib.crc32(name)) for name in (layout.file_id(i).encode() for i in ids)]
    return b"\n" + b"\n".join(lines) + b"\n"


def decode_ids(data: bytes) -> list[str]:
    """The ids named by the lines of a record or journal; a line whose checksum fails (torn) is skipped."""
    ids = []
    for line in data.split(b"\n"):
        name, _, check = line.partition(b" ")  # a file id has no space: quote() escapes it
        if name and check == b"%08x" % zlib.crc32(name):
            ids.append(unquote(name.decode("ascii")))
    return ids


def _distinct(task: Task) -> list[str]:
    """``task``'s dependency ids, each once, less its own (a task never waits on itself)."""
    return [dep for dep in dict.fromkeys(task.depends_on) if dep != task.id]


# -- counting at enqueue -------------------------------------------------------------------------------


class Counting:
    """The dependants of one enqueue batch: looked up as they are stored, registered once all are.

    Built only for a batch holding a task with ``depends_on``; writes the
    batch's journal (durable before any dependant is stored), which
    :meth:`close` deletes once the batch is flushed.
    """

    def __init__(self, files: TaskFiles, tasks: Sequence[Task]) -> None:
        self.files = files
        self.written: dict[str, str] = {}  # id -> path of each task this batch stored
        self.waiting: list[tuple[str, list[Candidate]]] = []  # the dependants stored waiting, with candidates
        self._pending: dict[str, str] | None = None  # the pending folders' index, listed once, when first needed
        self.journal = layout.journal_file(new_id())
        files.store.write(self.journal, encode_ids(task.id for task in tasks if task.depends_on))
        files.store.flush()

    def candidates(self, task: Task) -> list[Candidate]:
        """``task``'s dependencies that may count: all but those seen ended or found nowhere (call without locks)."""
        found: list[Candidate] = []
        for dep in _distinct(task):
            live, where = self._look(dep)
            if live:
                found.append((dep, where))
        return found

    def _look(self, dep: str) -> tuple[bool, str | None]:
        path = self.written.get(dep)
        if path is not None:
            return True, path  # stored earlier in this batch
        files = self.files
        store = files.store
        if store.exists(layout.task_file(layout.DONE_DIR, dep)):
            return False, None  # terminal when looked at: does not count
        for folder in (layout.RUNNING_DIR, layout.WAITING_DIR, layout.PAUSED_DIR):
            path = layout.task_file(folder, dep)
            if store.exists(path):
                return True, path
        if self._pending is None:
            self._pending = files.pending_index()
        path = self._pending.get(dep)
        if path is not None:
            return True, path
        # Not seen: unknown, or caught mid-move, or stored since the listing; the lock settles it.
        located = files.locate_locked(dep, salvage=True)
        if located is None or located.task.status in TERMINAL_STATUSES:
            return False, None
        return True, located.path

    def stored(self, task: Task, path: str, candidates: list[Candidate] | None) -> None:
        """Note a task this batch wrote (at ``path``); one stored waiting is registered by :meth:`register`."""
        self.written[task.id] = path
        if task.waiting and candidates:
            self.waiting.append((task.id, candidates))

    def register(self) -> None:
        """Append each waiting dependant to its live candidates' records; lower it for those that ended meanwhile."""
        files = self.files
        by_dep: dict[str, tuple[str | None, list[str]]] = {}
        for task_id, candidates in self.waiting:
            for dep, where in candidates:
                by_dep.setdefault(dep, (where, []))[1].append(task_id)
        owed: dict[str, list[str]] = {}  # dependant -> its dependencies that ended meanwhile
        for dep, (where, dependants) in by_dep.items():  # one append per dependency: a fan-out is one line each
            with files.store.lock(layout.task_lock(dep)):
                if _live(files, dep, where):
                    files.store.append(layout.dependants_file(dep), encode_ids(dependants))
                else:
                    for task_id in dependants:
                        owed.setdefault(task_id, []).append(dep)
        for task_id, deps in owed.items():  # after the dependency's lock: never two task locks at once
            with files.store.lock(layout.task_lock(task_id)):
                lower(files, task_id, deps)

    def close(self) -> None:
        """Delete the batch's journal (after the caller flushed the batch)."""
        self.files.store.unlink(self.journal)


def _live(files: TaskFiles, dep: str, where: str | None) -> bool:
    """Whether ``dep`` is stored and not terminal (under its lock: it cannot move meanwhile)."""
    store = files.store
    if store.exists(layout.task_file(layout.DONE_DIR, dep)):
        return False
    if where is not None and store.exists(where):
        return True
    located = files.locate(dep, salvage=True)  # moved since it was seen (claimed, parked, requeued)
    return located is not None and located.task.status not in TERMINAL_STATUSES


# -- lowering -----------------------------------------------------------------------------------------


def lower(files: TaskFiles, task_id: str, ended: Collection[str]) -> bool:
    """Lower a dependant's ``waiting`` for the dependencies in ``ended`` (under its lock); True when it became claimable.

    Only those the task stored now depends on count, each once: a registration left by an earlier
    task of the same id (ended, then replaced by an enqueue of its id) lowers nothing.

    At 0 the task moves from ``waiting/`` to its queue folder (or to
    ``paused/``), renamed first and rewritten second like every move; a
    crash in between leaves a stale count that the folder overrides (see
    :func:`.task_files.as_found`).
    """
    store = files.store
    found = files.read(layout.task_file(layout.WAITING_DIR, task_id), layout.WAITING_DIR, salvage=True)
    if found is None:
        # Not waiting: ready already (repaired), gone, or ended while waiting. A cancelled
        # dependant keeps counting down, so that a retry finds its count right.
        done = files.read(layout.task_file(layout.DONE_DIR, task_id), layout.DONE_DIR, salvage=True)
        if done is not None and done.task.waiting > 0:
            by = _counted(done.task, ended)
            store.write(done.path, encode_task(_replace(done.task, waiting=max(done.task.waiting - by, 0))))
        return False
    by = _counted(found.task, ended)
    if not by:
        return False
    task = _replace(found.task, waiting=max(found.task.waiting - by, 0))
    if task.waiting:
        store.write(found.path, encode_task(task))
        return False
    files.move(found, task, [], [])
    return not task.paused


def _counted(task: Task, ended: Collection[str]) -> int:
    """How many of the distinct dependencies in ``ended`` ``task`` depends on."""
    return sum(1 for dep in set(ended) if dep in task.depends_on)


def release(files: TaskFiles, ended: Sequence[Taken]) -> bool:
    """Lower the dependants of the tasks that ended, once the caller's task locks are released.

    ``ended`` holds the records :meth:`.TaskFiles.take_dependants` took. Their
    journals are deleted once the lowered counts are flushed. Returns whether
    a dependant became claimable (the caller wakes waiting workers).
    """
    if not ended:
        return False
    owed: dict[str, list[str]] = {}  # dependant -> the dependencies of ``ended`` it is registered on
    for _, data, dep in ended:
        for task_id in decode_ids(data):
            owed.setdefault(task_id, []).append(dep)
    woke = False
    for task_id, deps in owed.items():
        with files.store.lock(layout.task_lock(task_id)):
            woke = lower(files, task_id, deps) or woke
    files.store.flush()
    for journal, _, _ in ended:
        files.store.unlink(journal)
    return woke


# -- repair (recover) ---------------------------------------------------------------------------------


class _Repair:
    """One recover's pass over the journals a crash left (see the module's crash safety)."""

    def __init__(self, files: TaskFiles) -> None:
        self.files = files
        self.ended: dict[str, bool] = {}  # dependency id -> whether it ended (terminal or gone), once per pass
        self._pending: dict[str, str] | None = None
        self.woke = False

    def pending(self) -> dict[str, str]:
        if self._pending is None:
            self._pending = self.files.pending_index()
        return self._pending

    def journal(self, path: str) -> None:
        """Settle what a journal lists: rewrite it with those still waiting on a live dependency, or delete it."""
        store = self.files.store
        data = store.read(path)
        if data is None:
            return
        age = store.age(path)
        young = age is not None and age < layout.TMP_MAX_AGE
        listed = list(dict.fromkeys(decode_ids(data)))
        kept = [task_id for task_id in listed if not self.settle(task_id, young)]
        if not kept:
            store.unlink(path)
        elif len(kept) < len(listed):
            store.write(path, encode_ids(kept))

    def settle(self, task_id: str, young: bool) -> bool:
        """Whether ``task_id`` needs no more looking at (made ready here if all it waits for ended)."""
        files = self.files
        path = layout.task_file(layout.WAITING_DIR, task_id)
        found = files.read(path, layout.WAITING_DIR, salvage=True)
        if found is None:
            # Not waiting (ready, running, ended, gone); found nowhere while the journal is
            # young, it may be a dependant its enqueue has not stored yet.
            return not young or files.locate(task_id, self.pending(), salvage=True) is not None
        if not all(self.has_ended(dep) for dep in _distinct(found.task)):
            return False
        with files.store.lock(layout.task_lock(task_id)):  # the dependencies were looked at outside it
            found = files.read(path, layout.WAITING_DIR, salvage=True)
            if found is not None:
                task = _replace(found.task, waiting=0)
                files.move(found, task, [], [])
                self.woke = self.woke or not task.paused
        return True

    def has_ended(self, dep: str) -> bool:
        """Whether ``dep`` is terminal or gone (a pending listing from earlier in the pass errs towards live)."""
        known = self.ended.get(dep)
        if known is not None:
            return known
        store = self.files.store
        if store.exists(layout.task_file(layout.DONE_DIR, dep)):
            ended = True
        elif any(store.exists(layout.task_file(f, dep)) for f in (layout.RUNNING_DIR, layout.WAITING_DIR)):
            ended = False
        elif store.exists(layout.task_file(layout.PAUSED_DIR, dep)) or dep in self.pending():
            ended = False
        else:
            located = self.files.locate_locked(dep, salvage=True)
            ended = located is None or located.task.status in TERMINAL_STATUSES
        self.ended[dep] = ended
        return ended


def repair(files: TaskFiles) -> bool:
    """Finish what crashed steps left in the journal folder (called by ``recover``); True when a task became ready."""
    names = [n for n in files.store.listdir(layout.JOURNAL_DIR) if n.endswith(layout.DEPENDANTS_SUFFIX)]
    if not names:
        return False  # the common case: one listing of an empty folder
    pass_ = _Repair(files)
    for name in names:
        pass_.journal(f"{layout.JOURNAL_DIR}/{name}")
    files.store.flush()
    return pass_.woke
