"""Dependencies in the engine: a dependant waits in its own record, listed in its live dependencies' records.

The rules are :meth:`omniq.base.BaseTaskQueue.enqueue`'s (``Capability.DEPENDENCIES``).
JetStream has no transaction over two keys, so the state lives on both ends
of each edge, every change of it a compare-and-set on one record
(:class:`~omniq_nats.records.Record`):

* the dependency's record lists its ``dependants`` (the reverse edges),
  registered while it is live (PENDING or RUNNING) and dropped by the very
  write that ends it (finish with a terminal outcome, cancel, recover or a
  claim failing it out of attempts; purge deletes the record with them);
* the dependant's record lists the dependencies it still ``awaited``, and
  ``Task.waiting`` is how many. Nothing is added to it after it is created;
  :func:`release` takes ended dependencies out of it (a set difference, so
  doing it twice is harmless), and publishes the task's ticket from the
  write that empties it.

Enqueueing a dependant C (:func:`prepare`, then :func:`settle`):

1. register C on each dependency D outside the batch: a compare-and-set of
   D's record adding C to its ``dependants``, written only while D is live
   (read in the same revision). A dependency earlier in the same batch gets
   C in the record it is created with, before C's (should the record there
   be another one, a live task of that id or one its ticket's fetcher
   created first, C is registered on that one as above); a self-reference,
   a later task of the batch (not stored yet) and an unknown or ended id do
   not count;
2. create C's record with ``awaited`` = the dependencies it registered on,
   and no ticket unless that is none;
3. read each awaited D again, and release C from those no longer live and
   listing C.

Why each wait ends exactly once, and only when its dependency ended:

* Registration and end are both compare-and-sets on D's record, so one
  comes first. Registered first: the end's write drops C from ``dependants``
  it read in that same revision, and its caller releases C. Ended first: the
  registration finds D ended, and C never waits for D.
* The releaser reads C after D's end. If C's record is not there yet, C is
  created after that read, so C's own re-read (step 3, after its creation)
  finds D ended and releases it. If step 3 finds D still live and listing C,
  D ends after C's creation, and its releaser finds C. Either way one of
  them, or both, takes D out of C's ``awaited`` (the buckets are R1 and read
  by direct get from their only server, so a read follows every write it
  comes after).
* ``awaited`` only shrinks, and only by compare-and-set, so exactly one
  write empties it: that writer, alone, publishes C's ticket (unless C is
  paused or no longer PENDING). Many connections finishing C's last
  dependencies at once thus ready C once. Those writes are retried until
  they land, however contended (:func:`_settled`).
* A claim never takes a waiting task: it has no ticket, and a stray one (a
  resume, an operator retry) is dropped by :func:`~omniq_nats.tickets.decide`
  while the record says ``waiting > 0``. The ticket that readies it comes
  after the record says 0.
* Pause is independent: the end of a wait publishes nothing for a paused
  task, and ``set_paused(False)`` (an operator ``retry`` likewise) publishes
  a ticket only when ``waiting`` is 0. Both are compare-and-sets on C's
  record: whichever writes second sees the other's change and publishes.
* No cycle can form: C can only register on a record that exists, and its
  own record is created after its registrations, so a task never waits on
  one created after it.

Crash safety (:mod:`omniq_nats.notes`): the write that ends a dependency
others wait on, and the creation of a waiting task, each file a note of
their (dependency, dependant) pairs in the lease index, ``ack_wait`` seconds
ahead, sent just before the write. ``recover`` reads due seconds of that
index anyway; :func:`sweep` releases each noted pair whose dependency is no
longer live and listing its dependant (a process that died between an end
and its release, or between a creation and its re-read), and gives a ticket
to every noted dependant it finds ready, PENDING and unpaused (one that died
between the write that readied it and its ticket; an extra ticket is
harmless, see :mod:`omniq_nats.tickets`).

Costs: a task without ``depends_on`` and a dependency nobody waits on take
the paths they always took: no extra round trip, a falsy check of a list
and two empty lists (two bytes) in the record. An enqueue with dependencies
adds a read and a compare-and-set of its outside dependencies and a re-read
of them; the end of a dependency adds a read and a compare-and-set of its
dependants' records and their tickets. A record is rewritten whole, so a
fan-in of n dependencies rewrites its dependant (which lists the n ids in
``depends_on``) up to n times; ends finished in one batch share one write.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import anyio
import msgspec

from omniq.errors import SerializationError
from omniq.models import TaskStatus
from omniq_nats import subjects as names
from omniq_nats.records import ACTIVE, Record, leased_record, transition
from omniq_nats.tickets import publish_tickets

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import datetime

    from omniq.models import Task
    from omniq_nats.connection import QueueClient

__all__ = ["prepare", "register", "release", "settle", "sweep"]

_replace = msgspec.structs.replace


async def prepare(client: QueueClient, tasks: Sequence[Task]) -> list[Record]:
    """The records to create for a batch of new tasks: registered on their live dependencies, waiting for them.

    A dependency earlier in the batch gets its dependants in the record it
    is created with; one outside the batch is registered on now (step 1).
    """
    first: dict[str, int] = {}
    for index, task in enumerate(tasks):
        first.setdefault(task.id, index)
    counted: list[set[str]] = [set() for _ in tasks]
    dependants: list[list[str]] = [[] for _ in tasks]
    outside: dict[str, list[int]] = {}  # dependency id -> indexes of its dependants in the batch
    for index, task in enumerate(tasks):
        for dep_id in dict.fromkeys(task.depends_on):
            at = first.get(dep_id)
            if at is None:
                outside.setdefault(dep_id, []).append(index)
            elif at < index:  # stored earlier in the batch: it counts (a later one is not stored yet)
                counted[index].add(dep_id)
                dependants[at].append(task.id)
    if outside:
        wanted = {dep_id: [tasks[i].id for i in indexes] for dep_id, indexes in outside.items()}
        for dep_id in await register(client, wanted):
            for index in outside[dep_id]:
                counted[index].add(dep_id)
    records: list[Record] = []
    for task, mine, waits in zip(tasks, dependants, counted, strict=True):
        awaited = [dep_id for dep_id in dict.fromkeys(task.depends_on) if dep_id in waits]
        if awaited:
            task = _replace(task, waiting=len(awaited))
        records.append(Record(task, "", mine, awaited))
    return records


async def register(client: QueueClient, wanted: Mapping[str, Sequence[str]]) -> set[str]:
    """Add dependants to the records of live dependencies (id -> dependant ids); the ids registered on.

    Also for a dependency of the batch whose record was not the one its
    enqueue wrote (its id was live already, or its ticket's fetcher created
    the record first): its dependants are registered on the record there is.
    """
    live: dict[str, bool] = {}  # id -> whether the last look found it live (and so listing them once written)

    def add(record: Record, now: datetime) -> Record | None:
        task = record.task
        mine = wanted.get(task.id)
        live[task.id] = mine is not None and task.status in ACTIVE
        if mine is None or not live[task.id]:
            return None  # ended: nothing to wait for
        new = [i for i in mine if i not in record.dependants]
        return _replace(record, dependants=[*record.dependants, *new]) if new else None

    done = await _settled(client, list(wanted), add)
    for task_id, (_, new, revision) in done.items():
        if task_id in client.cache:  # a lease this connection holds: keep its record current
            client.cache[task_id] = (revision, new)
    return {task_id for task_id, registered in live.items() if registered}


async def settle(client: QueueClient, records: Sequence[Record]) -> None:
    """Step 3, once the waiting records are created: release their waits on dependencies that ended meanwhile."""
    pairs = [(dep_id, record.task.id) for record in records for dep_id in record.awaited]
    ended = await _ended(client, pairs)
    if ended:
        await release(client, ended)


async def _ended(client: QueueClient, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose dependency is no longer live and listing its dependant (read now)."""
    if not pairs:
        return []
    dep_ids = list(dict.fromkeys(dep_id for dep_id, _ in pairs))
    entries = await client.tasks.get_many([names.token(i) for i in dep_ids])
    holding: dict[str, Collection[str]] = {}
    for dep_id, entry in zip(dep_ids, entries, strict=True):
        if entry is None or entry.deleted:
            continue
        try:
            record = leased_record(entry.value)
        except SerializationError:
            continue  # unreadable: its end could not release anyone, so nobody waits for it
        if record.task.status in ACTIVE:
            holding[dep_id] = set(record.dependants)
    return [(dep_id, task_id) for dep_id, task_id in pairs if task_id not in holding.get(dep_id, ())]


async def release(client: QueueClient, pairs: Sequence[tuple[str, str]], *, reticket: bool = False) -> set[str]:
    """The dependencies of ``pairs`` (dependency, dependant) ended: take them out of their dependants' waits.

    Idempotent. A dependant whose wait this empties gets its ticket (when
    PENDING and not paused). With ``reticket`` so does one found ready
    already (the sweep's repair of a ticket a dead process owed).

    Returns:
        the ids of the dependants given a ticket.
    """
    ends: dict[str, set[str]] = {}
    for dep_id, task_id in pairs:
        ends.setdefault(task_id, set()).add(dep_id)
    found: dict[str, Task] = {}  # reticket: ready dependants left as they were

    def drop(record: Record, now: datetime) -> Record | None:
        task = record.task
        gone = ends.get(task.id, ())
        awaited = [dep_id for dep_id in record.awaited if dep_id not in gone]
        if len(awaited) == len(record.awaited):
            if reticket and _ready(record):
                found[task.id] = task
            return None
        found.pop(task.id, None)
        return _replace(record, task=_replace(task, waiting=len(awaited)), awaited=awaited)

    done = await _settled(client, list(ends), drop)
    ready = [new.task for old, new, _ in done.values() if old.awaited and _ready(new)]
    ready.extend(task for task_id, task in found.items() if task_id not in done)
    if ready:
        await publish_tickets(client, ready)
    return {task.id for task in ready}


def _ready(record: Record) -> bool:
    """Claimable as far as dependencies go, and owed a ticket: PENDING, not paused, waiting for nothing."""
    task = record.task
    return not record.awaited and not task.waiting and task.status is TaskStatus.PENDING and not task.paused


async def sweep(client: QueueClient, pairs: Sequence[tuple[str, str]]) -> None:
    """Redo what a dead process may have owed for the pairs of due notes (see the module's docstring)."""
    if not pairs:
        return
    pairs = list(dict.fromkeys(pairs))
    ended = await _ended(client, pairs)
    if ended:
        await release(client, ended, reticket=True)


async def _settled(
    client: QueueClient, ids: Sequence[str], change: Callable[[Record, datetime], Record | None]
) -> dict[str, tuple[Record, Record, int]]:
    """:func:`~omniq_nats.records.transition` again until each record is written or left as it is.

    However contended: a lost compare-and-set means another write on the
    record went through, and giving up would leave a dependant waiting.
    Contenders are spread out after each round that left some behind.
    """
    done: dict[str, tuple[Record, Record, int]] = {}
    wants: dict[str, bool] = {}  # id -> whether change wanted a write at its last look

    def tracked(record: Record, now: datetime) -> Record | None:
        new = change(record, now)
        wants[record.task.id] = new is not None
        return new

    todo = list(dict.fromkeys(ids))
    rounds = 0
    while todo:
        if rounds:
            await anyio.sleep(random.uniform(0, 0.001 * min(rounds, 50)))
        wants.clear()
        got = await transition(client, todo, tracked, use_cache=False)
        done.update(got)
        todo = [i for i in todo if i not in got and wants.get(i, False)]
        rounds += 1
    return done
