"""What the task KV bucket stores, the lease-state transitions on it, and how they are written.

A record is the task plus the reply subject of the JetStream delivery that
currently represents it (``ack``): the ticket a worker holds while the task
is RUNNING, or the nak-delayed ticket of a PENDING retry. Acking, naking or
``+WPI``-ing that subject acts on the ticket from any connection, which is
what lets ``recover`` and ``cancel`` release a ticket held by a dead worker.

Every change of a record is a compare-and-set on the key's revision
(:func:`transition`), so the lease token check is real and no task has two
live leases.

A record also holds its task's dependency edges (:mod:`omniq_nats.dependencies`):
the tasks waiting on it (``dependants``) and the dependencies it still waits
for (``awaited``). Every change keeps them (:func:`with_task`) but the one that
ends the task, which drops its ``dependants`` and so releases them; a
:func:`transition` that releases some files a note of them ahead of its write
(:mod:`omniq_nats.notes`). Both are empty lists, two bytes, for every task
without dependencies.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from omniq.base import apply_outcome, lease_expired_error, msgpack_decoder, salvage_task
from omniq.errors import SerializationError
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus, new_id
from omniq_nats import subjects as names
from omniq_nats.notes import update_noting

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from omniq_nats.connection import QueueClient

__all__ = [
    "ACTIVE",
    "CAS_ROUNDS",
    "Record",
    "ack_sequence",
    "apply_outcome",
    "claimed",
    "decode_record",
    "encode_record",
    "expired",
    "leased_record",
    "read_all",
    "released",
    "transition",
    "with_task",
]

#: the statuses of a live task (one whose ticket matters).
ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
#: compare-and-set retries before a contended change is given up (a contended ticket is handed back).
CAS_ROUNDS = 5


class Record(msgspec.Struct, array_like=True):
    """One task KV value."""

    task: Task
    #: reply subject of the ticket delivery tied to this state ("" when none is known).
    ack: str = ""
    #: ids of the tasks waiting on this one, registered while it is live; the write that ends it drops them.
    dependants: list[str] = []
    #: ids among ``task.depends_on`` it still waits for (``task.waiting`` is how many).
    awaited: list[str] = []


_encoder = msgspec.msgpack.Encoder()
_decode = msgpack_decoder(Record, "task record")


def encode_record(record: Record) -> bytes:
    """Encode a record to MessagePack."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> Record:
    """Decode :func:`encode_record` output, strictly.

    Raises:
        omniq.errors.SerializationError: the bytes are not a record.
    """
    return _decode(data)


def leased_record(data: bytes) -> Record:
    """:func:`decode_record` for a record a claim is about to lease, salvaging a broken task.

    A record whose task fails strict decoding comes back salvaged (a
    CorruptTask the worker fails) instead of raising.

    Raises:
        omniq.errors.SerializationError: not even an ``[task, ack]`` array with the task's id.
    """
    try:
        return _decode(data)
    except SerializationError as exc:
        try:
            raw = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            raise exc from None
        if not isinstance(raw, list) or not raw or not isinstance(raw[0], dict):
            raise
        ack = raw[1] if len(raw) > 1 and isinstance(raw[1], str) else ""
        # the dependency edges are kept too: a waiting task or a dependency stays waited on / waited for.
        dependants, awaited = (_ids(raw[i]) if len(raw) > i else [] for i in (2, 3))
        return Record(salvage_task(raw[0], str(exc)), ack, dependants, awaited)


def _ids(value: object) -> list[str]:
    """A salvaged list of ids ([] when it is not one)."""
    return value if isinstance(value, list) and all(isinstance(i, str) for i in value) else []


def with_task(record: Record, task: Task, ack: str | None = None) -> Record:
    """``record`` holding ``task`` (and ``ack``, when given) instead, its dependency edges kept.

    A terminal ``task`` drops the ``dependants``: the write that ends a task
    releases the tasks waiting on it (its caller then counts their waits
    down, see :func:`released`), and nothing registers on an ended task.
    """
    dependants = [] if task.status in TERMINAL_STATUSES else record.dependants
    return Record(task, record.ack if ack is None else ack, dependants, record.awaited)


def released(task_id: str, old: Record, new: Record) -> list[tuple[str, str]]:
    """(dependency, dependant) pairs a change of ``task_id``'s record from ``old`` to ``new`` releases."""
    if not old.dependants:
        return []
    kept = new.dependants
    return [(task_id, dependant) for dependant in old.dependants if dependant not in kept]


def ack_sequence(reply: str) -> int:
    """Stream sequence of the ticket a ``$JS.ACK...`` reply subject acknowledges (0 if unknown)."""
    parts = reply.split(".")
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending> (9 tokens);
    # v2 adds <domain>.<account hash> after ACK and a random token at the end (12 tokens).
    if len(parts) == 9:
        return int(parts[5])
    if len(parts) >= 12:
        return int(parts[7])
    return 0


def claimed(task: Task, *, now: datetime, lease: float, worker_id: str, lease_token: str | None = None) -> Task:
    """The task as a fresh claim leaves it (RUNNING, attempt + 1, new token, or ``lease_token``, and deadline)."""
    return msgspec.structs.replace(
        task,
        status=TaskStatus.RUNNING,
        attempts=task.attempts + 1,
        lease_token=lease_token or new_id(),
        lease_expires_at=now + timedelta(seconds=lease),
        started_at=now,
        updated_at=now,
        worker_id=worker_id,
    )


def expired(task: Task, now: datetime) -> Task:
    """The task as lease recovery leaves it: PENDING again, or FAILED when out of attempts."""
    cleared = {"lease_token": None, "lease_expires_at": None, "updated_at": now}
    if task.attempts >= task.max_attempts:
        return msgspec.structs.replace(
            task, status=TaskStatus.FAILED, error=lease_expired_error(task), finished_at=now, **cleared
        )
    return msgspec.structs.replace(task, status=TaskStatus.PENDING, eta=now, **cleared)


# -- changes by compare-and-set ----------------------------------------------------------------------


async def transition(
    client: QueueClient,
    ids: Sequence[str],
    change: Callable[[Record, datetime], Record | None],
    *,
    use_cache: bool = True,
) -> dict[str, tuple[Record, Record, int]]:
    """Apply ``change`` to each task's record by compare-and-set, retrying lost races.

    ``change`` gets the current record and the engine time and returns the
    new record, or None to leave it. With ``use_cache`` a record this
    connection wrote last (``client.cache``) is tried at its revision first,
    and read only when the compare-and-set says it moved. A change that
    drops dependants (see :func:`released`) files a note of them ahead of
    its write; releasing them is the caller's next step.

    Returns:
        id -> (old record, new record, new revision) for every change written.
    """
    bucket = client.tasks
    done: dict[str, tuple[Record, Record, int]] = {}
    known: dict[str, tuple[int, Record] | None] = {}
    if use_cache:
        known = {i: client.cache[i] for i in ids if i in client.cache}
    todo = list(dict.fromkeys(ids))
    for _ in range(CAS_ROUNDS):
        if not todo:
            break
        missing = [i for i in todo if known.get(i) is None]
        entries = await bucket.get_many([names.token(i) for i in missing]) if missing else []
        for task_id, entry in zip(missing, entries, strict=True):
            known[task_id] = None if entry is None or entry.deleted else (entry.revision, leased_record(entry.value))
        now = await client.clock.now()
        plans: list[tuple[str, Record, Record, int]] = []
        for task_id in todo:
            current = known.get(task_id)
            if current is None:
                continue
            new = change(current[1], now)
            if new is not None:
                plans.append((task_id, current[1], new, current[0]))
        writes = [(names.token(i), encode_record(new), rev) for i, _, new, rev in plans]
        ends = [pair for i, old, new, _ in plans if old.dependants for pair in released(i, old, new)]
        revisions = await (update_noting(client, writes, ends, now) if ends else bucket.update_many(writes))
        todo = []
        for (task_id, old, new, _), revision in zip(plans, revisions, strict=True):
            if revision is None:
                known[task_id] = None  # moved under us: re-read and decide again
                client.cache.pop(task_id, None)
                todo.append(task_id)
            else:
                done[task_id] = (old, new, revision)
    return done


async def read_all(client: QueueClient, *, salvage: bool = False) -> list[tuple[str, int, Record]]:
    """Every record as (key, revision, record).

    Raises:
        SerializationError: a corrupted record, unless ``salvage`` (then it
            comes back salvaged, as a claim would read it).
    """
    entries = await client.tasks.entries()
    decode = leased_record if salvage else decode_record
    return [(key, entry.revision, decode(entry.value)) for key, entry in entries if "." not in key]
