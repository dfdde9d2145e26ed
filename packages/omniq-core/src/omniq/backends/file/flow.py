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
* Tasks without limits never come here: each caller branches on ``task.limits``.

A paused queue is a marker file in its pending folder (:data:`~.layout.PAUSED_MARKER`):
the claim and ``wait_for_work`` list that folder anyway, so the check costs no
extra file operation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.flow_control import admit
from omniq.models import Task, TaskStatus, encode_task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.backends.file.task_files import TaskFiles

__all__ = [
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
    files.store.write(layout.limit_state_file(key), _encoder.encode(state))


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
        count, earliest = 0, None
        if limits.concurrency is not None:
            for task_id, until in list(state.holders.items()):
                if until <= stamp:
                    del state.holders[task_id]  # its lease ran out: the slot is free, recovered or not
                elif task_id != task.id:
                    count += 1
                    earliest = until if earliest is None else min(earliest, until)
        verdict = admit(task, stamp, count, earliest, state.tat)
        if verdict.tat is not None:
            state.tat = verdict.tat
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
        _save(files, limits.key, state)
        return False


def _hold(files: TaskFiles, key: str, task: Task, path: str) -> None:
    """List ``task`` (its file at ``path``) among the key's held tasks."""
    folder = layout.limit_held_dir(key)
    entry, data = f"{folder}/{layout.held_entry(task)}", path.encode()
    try:
        files.store.write(entry, data)
    except FileNotFoundError:  # the key's first held task: its folder comes first
        files.store.makedirs(folder)
        files.store.write(entry, data)


def extend_holder(files: TaskFiles, task: Task) -> None:
    """Move a holder's deadline to its extended lease (under the task's lock)."""
    assert task.limits is not None and task.lease_expires_at is not None
    with files.store.lock(layout.limit_lock(task.limits.key)):
        state = _load(files, task.limits.key)
        state.holders[task.id] = task.lease_expires_at.timestamp()
        _save(files, task.limits.key, state)


def release(files: TaskFiles, task: Task, owned: str, later: list[tuple[str, str]]) -> bool:
    """Free the slot of ``task``, leaving RUNNING, and wake one held task of its key; True when one woke.

    Called under ``task``'s lock (named ``owned``). A held task whose lock is
    busy is appended to ``later`` as ``(key, id)`` for :func:`wake_later`.
    """
    assert task.limits is not None
    key = task.limits.key
    folder = layout.limit_held_dir(key)
    with files.store.lock(layout.limit_lock(key)):
        state = _load(files, key)
        state.holders.pop(task.id, None)
        _save(files, key, state)
        woke = False
        names = files.store.listdir(folder)
        while names and not woke:  # in claim order; the first usually wakes, so no sort of them all
            name = min(names)
            names.remove(name)
            lock = layout.task_lock(layout.held_entry_id(name))
            if lock == owned:
                woke = _wake(files, key, name)
            else:
                with files.store.lock(lock, blocking=False) as acquired:
                    if not acquired:
                        later.append((key, name))
                        break
                    woke = _wake(files, key, name)
        return woke


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
