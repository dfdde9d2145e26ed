"""The file engine's flow control: one state file per limit key, and paused-queue markers (synchronous).

The rules are :mod:`omniq.flow_control`'s (:func:`~omniq.flow_control.admit`);
this module keeps their state in files under the locking discipline of
:mod:`.task_files`, so several processes on the host cannot over-admit:

* A limit key's state (:class:`KeyState`: its holders with their lease
  deadlines, its rate's ``tat``) lives in ``limits/<sha256>.state`` and is
  read and rewritten only under the key's lock stripe (``k###``), which is
  always taken *inside* a task lock: the claim of a limited task, an
  ``extend`` of a holder, and a holder leaving RUNNING (finish, cancel,
  recover, purge) all hold the task's lock first.
* A claim that meets a limited task it may not start parks it, under both
  locks: the task goes back to its queue folder PENDING, due at its ``eta``
  (a held task at the earliest holder deadline, a reserved one at its rate
  slot), and a held task gets a small file in ``limits/<sha256>.held/``,
  named in claim order, holding its path. (Version 1 listed the held tasks
  in the state file, rewritten whole at each park and wake: parking 5,000
  tasks took 13 s. Such a list is ignored now; its tasks come back at their eta.)
* A holder's exit wakes the key's first held task (claim order) under the
  key lock: its file is renamed to its old place in the queue (``eta`` None).
  That needs the held task's lock too, which is tried without waiting (the
  order key lock -> task lock is the reverse of the claim's); when it is
  busy the wake is finished after the locks are released (:func:`wake_later`).
  A finish that claims (:func:`.leases.finish_and_claim`) leases that task to
  its worker instead, when it may take it (:class:`HandOver`).
* Tasks without limits never come here: each caller branches on ``task.limits``.
* The key state and the held entries are written without fsync (``durable=False``),
  still atomically: a crashed process never leaves either half-written, and only a
  power loss, which stops every worker on the host with it, can lose a write.
  Then a holder list may come back older (a dead holder counts until its lease
  deadline: fewer start, never more), a ``tat`` older (the next starts may come up
  to one burst early, once) and a held entry gone (its task comes back at its
  ``eta``). The task files themselves stay fsynced. The fsync was a fifth of a
  rate-limited drain's worker time (one of five per task: claim, park, key state,
  result, done; py-spy, ``flow_control.py rate --engines file``).

A paused queue is a marker file in its pending folder (:data:`~.layout.PAUSED_MARKER`):
the claim and ``wait_for_work`` list that folder anyway, so the check costs no
extra file operation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.flow_control import admit, claim_share
from omniq.models import Task, TaskStatus, encode_task

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from omniq.backends.file.task_files import TaskFiles

__all__ = [
    "HandOver",
    "KeyState",
    "admit_claim",
    "extend_holder",
    "paused_queues",
    "release",
    "set_queue_paused",
    "wake_later",
]

_replace = msgspec.structs.replace


class KeyState(msgspec.Struct, omit_defaults=True):
    """What a limit key's state file holds (a version 1 file's ``held`` list is skipped when read).

    Attributes:
        holders: id -> lease deadline (seconds, engine clock) of each RUNNING task holding a slot.
        tat: the rate's theoretical arrival time (seconds), None before the first start.
    """

    holders: dict[str, float] = msgspec.field(default_factory=dict)
    tat: float | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(KeyState)


def _load(files: TaskFiles, key: str) -> KeyState:
    data = files.store.read(layout.limit_state_file(key))
    if data is None:
        return KeyState()
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:  # a damaged state file: start afresh (held tasks still come back at their eta)
        return KeyState()


def _save(files: TaskFiles, key: str, state: KeyState) -> None:
    files.store.write(layout.limit_state_file(key), _encoder.encode(state), durable=False)


def admit_claim(files: TaskFiles, task: Task, path: str, now: datetime, deadline: datetime) -> bool:
    """Whether the claim may start the limited ``task`` (its file at ``path``, under its lock).

    True: the task is counted (a holder until ``deadline``, its rate slot
    taken) and the caller makes it RUNNING. False: it was parked back in its
    queue, due at its eta (see the module's rules).
    """
    limits = task.limits
    assert limits is not None
    stamp = now.timestamp()
    with files.store.lock(layout.limit_lock(limits.key)):
        state = _load(files, limits.key)
        count, earliest, changed = 0, None, False
        if limits.concurrency is not None:
            for task_id, until in list(state.holders.items()):
                if until <= stamp:
                    del state.holders[task_id]  # its lease ran out: the slot is free, recovered or not
                    changed = True
                elif task_id != task.id:
                    count += 1
                    earliest = until if earliest is None else min(earliest, until)
        verdict = admit(task, stamp, count, earliest, state.tat)
        if verdict.tat is not None:
            state.tat = verdict.tat
            changed = True
        if task.held:  # due at its eta without a wake: no longer held
            files.store.unlink(f"{layout.limit_held_dir(limits.key)}/{layout.held_entry(task)}")
        if verdict.claim:
            if limits.concurrency is not None:
                state.holders[task.id] = deadline.timestamp()
            _save(files, limits.key, state)
            return True
        assert verdict.eta is not None
        eta = datetime.fromtimestamp(max(verdict.eta, stamp + 1e-3), timezone.utc)  # after now: not due again
        parked = _replace(task, eta=eta, held=verdict.held, rate_reserved=not verdict.held)
        target = layout.pending_file(parked)
        if files.store.rename(path, target):
            files.store.write(target, encode_task(parked))
            if verdict.held:
                _hold(files, limits.key, parked, target)
        if changed:  # a park for a full key changes nothing there: no write (a third of a park's cost)
            _save(files, limits.key, state)
        return False


def _hold(files: TaskFiles, key: str, task: Task, path: str) -> None:
    """List ``task`` (its file at ``path``) among the key's held tasks."""
    folder = layout.limit_held_dir(key)
    entry, data = f"{folder}/{layout.held_entry(task)}", path.encode()
    try:
        files.store.write(entry, data, durable=False)
    except FileNotFoundError:  # the key's first held task: its folder comes first
        files.store.makedirs(folder)
        files.store.write(entry, data, durable=False)


def extend_holder(files: TaskFiles, task: Task) -> None:
    """Move a holder's deadline to its extended lease (under the task's lock)."""
    assert task.limits is not None and task.lease_expires_at is not None
    with files.store.lock(layout.limit_lock(task.limits.key)):
        state = _load(files, task.limits.key)
        state.holders[task.id] = task.lease_expires_at.timestamp()
        _save(files, task.limits.key, state)


class HandOver:
    """A finish that claims: the slots it frees go to the held tasks it may take, leased to its worker.

    Per freed slot, the key's first held task is leased here (see :func:`release`)
    when it is in one of ``queues`` (not paused), has no rate limit (the claim
    checks that) and the finish has room, at most a claim's share of the key's
    limit (:func:`~omniq.flow_control.claim_share`), so two workers sharing a key
    each keep theirs; otherwise it is woken as for any finish. One leased task
    costs the rename into ``running/`` and its write, where a wake and the
    claim after it took two renames, two writes and a key-state write more.

    With no room (the defaults) it leases nothing and each freed slot wakes its
    key's first held task: a finish that does not claim, a recovery, a cancel.
    Either way a key's held folder is listed once per batch (:meth:`held`).

    Args:
        queues: the claimer's queues.
        room: the most tasks to lease.
        deadline: their lease deadline (seconds, engine clock).
        start: the leased version of a held task (its RUNNING fields set).
    """

    def __init__(
        self,
        queues: Sequence[str] = (),
        room: int = 0,
        deadline: float = 0.0,
        start: Callable[[Task], Task] = lambda task: task,
    ) -> None:
        self.queues = frozenset(queues)
        self.room = room
        self.deadline = deadline
        self.start = start
        self.taken: list[Task] = []
        self._shares: dict[str, int] = {}
        self._paused: dict[str, bool] = {}
        self._held: dict[str, list[str]] = {}

    def held(self, files: TaskFiles, folder: str) -> list[str]:
        """The entries of a key's held folder, in reverse claim order (``pop()`` gives the first).

        Listed once per batch, not once per freed slot (a folder of 3,000 entries: 0.57 ms a
        listing, a quarter of a limited drain's time), and again once the list ran out: an
        entry another process took meanwhile is found gone and passed over, one it added is
        seen by then at the latest (never left to its eta while a slot is free).
        """
        names = self._held.get(folder)
        if not names:
            names = self._held[folder] = sorted(files.store.listdir(folder), reverse=True)
        return names

    def wants(self, files: TaskFiles, task: Task) -> bool:
        """Whether the held ``task`` is leased here rather than woken."""
        limits = task.limits
        if limits is None or limits.concurrency is None or limits.rate is not None:
            return False
        if len(self.taken) >= self.room or task.queue not in self.queues:
            return False
        if self._shares.get(limits.key, 0) >= claim_share(limits.concurrency):
            return False
        paused = self._paused.get(task.queue)
        if paused is None:
            marker = f"{layout.queue_dir(task.queue)}/{layout.PAUSED_MARKER}"
            paused = self._paused[task.queue] = files.store.exists(marker)
        return not paused

    def took(self, task: Task) -> None:
        """Count ``task`` (leased) against the room and its key's share."""
        assert task.limits is not None
        self.taken.append(task)
        self._shares[task.limits.key] = self._shares.get(task.limits.key, 0) + 1


def release(files: TaskFiles, task: Task, owned: str, later: list[tuple[str, str]], handover: HandOver) -> bool:
    """Free the slot of ``task``, leaving RUNNING, and give it to a held task of its key; True when one woke.

    Called under ``task``'s lock (named ``owned``). The key's first held task
    is leased to ``handover`` when it wants it (not a wake: False), else
    woken. A held task whose lock is busy is appended to ``later`` as
    ``(key, id)`` for :func:`wake_later`. The key state is written once,
    before a leased task's file (a crash in between leaves a holder that
    holds nothing until its deadline, never one too many).
    """
    assert task.limits is not None
    key = task.limits.key
    folder = layout.limit_held_dir(key)
    with files.store.lock(layout.limit_lock(key)):
        state = _load(files, key)
        state.holders.pop(task.id, None)
        given: bool | None = None  # True: woken; False: leased (the state written then)
        names = handover.held(files, folder)
        while names and given is None:  # in claim order
            name = names.pop()
            lock = layout.task_lock(layout.held_entry_id(name))
            if lock == owned:
                given = _give(files, key, name, state, handover)
            else:
                with files.store.lock(lock, blocking=False) as acquired:
                    if not acquired:
                        later.append((key, name))
                        break
                    given = _give(files, key, name, state, handover)
        if given is not False:
            _save(files, key, state)
        return bool(given)


def _give(files: TaskFiles, key: str, name: str, state: KeyState, handover: HandOver) -> bool | None:
    """Lease the held task of entry ``name`` to ``handover`` (False) or wake it (True); None if it is gone."""
    if not handover.room:
        return True if _wake(files, key, name) else None
    entry = f"{layout.limit_held_dir(key)}/{name}"
    data = files.store.read(entry)
    if data is None:
        return None
    path = data.decode(errors="replace")
    found = files.read(path, layout.PENDING_DIR, salvage=True)
    if found is None or found.task.status is not TaskStatus.PENDING or not found.task.held:
        files.store.unlink(entry)
        return None
    if not handover.wants(files, found.task):
        return True if _wake(files, key, name) else None
    leased = handover.start(found.task)
    state.holders[leased.id] = handover.deadline
    _save(files, key, state)
    files.store.unlink(entry)
    running = layout.task_file(layout.RUNNING_DIR, leased.id)
    if not files.store.rename(path, running):  # gone meanwhile (only possible without locks)
        del state.holders[leased.id]
        _save(files, key, state)
        return None
    files.store.write(running, encode_task(leased))
    handover.took(leased)
    return False


def wake_later(files: TaskFiles, later: Sequence[tuple[str, str]]) -> bool:
    """Finish the wakes :func:`release` left (task lock, then key lock); True when one woke."""
    woke = False
    for key, name in later:
        with files.store.lock(layout.task_lock(layout.held_entry_id(name))), files.store.lock(layout.limit_lock(key)):
            woke = _wake(files, key, name) or woke
    return woke


def _wake(files: TaskFiles, key: str, name: str) -> bool:
    """Put the held task of entry ``name`` back at its old place in its queue, and drop the entry.

    False when the entry is gone (woken by another) or its task is no longer held there.
    """
    entry = f"{layout.limit_held_dir(key)}/{name}"
    data = files.store.read(entry)
    if data is None:
        return False
    files.store.unlink(entry)
    path = data.decode(errors="replace")
    found = files.read(path, layout.PENDING_DIR, salvage=True)
    if found is None or found.task.status is not TaskStatus.PENDING or not found.task.held:
        return False
    woken = _replace(found.task, held=False, eta=None)
    target = layout.pending_file(woken)
    if not files.store.rename(path, target):
        return False
    files.store.write(target, encode_task(woken))
    return True


# -- queue pause ---------------------------------------------------------------------------------------


def set_queue_paused(files: TaskFiles, queue: str, paused: bool) -> None:
    """Write or remove the queue's pause marker."""
    marker = f"{layout.queue_dir(queue)}/{layout.PAUSED_MARKER}"
    if paused:
        if not files.store.exists(marker):
            files.store.write(marker, b"")
    else:
        files.store.unlink(marker)
    files.store.flush()


def paused_queues(files: TaskFiles) -> list[str]:
    """The queues whose pending folder holds the pause marker, sorted."""
    store = files.store
    names = store.listdir(layout.PENDING_DIR)
    return sorted(
        layout.queue_of(name) for name in names if store.exists(f"{layout.PENDING_DIR}/{name}/{layout.PAUSED_MARKER}")
    )
