"""Hand-over: a finish that claims leases the held tasks of the slots it frees itself.

A worker's finish that frees concurrency slots claims with it
(``finish_and_claim``, :class:`HandOver` says for which queues and how
many). :func:`omniq_nats.flow.release` pops one held task per freed slot;
each of the first ones a claim of those queues could take (:func:`_takes`:
held, not paused, no rate to pass, at most a claim's share of the key,
:func:`~omniq.flow_control.claim_share`) is *offered* the slot
(:func:`offer`): its new lease goes into the key's holders in the same
compare-and-set that pops it, and :func:`lease_offered` then writes its
record RUNNING under that lease, keeping the reply subject of the ticket the
task was parked with. The other popped tasks are woken as before (unheld,
with a fresh ticket).

The parked ticket, nak-delayed until the task's eta, is nak-delayed again
to the lease's end, and comes back as the lease's own:
:func:`omniq_nats.tickets.decide` puts it off until the lease ends (so a
killed holder's task is taken over as a claimed task is, and its slot comes
back after the lease), and the finish acks it (JetStream applies an ack, a
``+WPI`` or a new nak to a nak-delayed delivery through its reply subject).
A record that moved between its read and its write (another claim took the
task through that ticket) gives the slot back: the caller releases the lease.

One record write per task instead of three (woken with a fresh ticket,
claimed, and its slot admitted again), and no ticket published or pulled.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from omniq.errors import SerializationError
from omniq.flow_control import claim_share
from omniq.models import TaskStatus, new_id
from omniq_nats import subjects as names
from omniq_nats.records import Record, claimed, decode_record, encode_record, with_task
from omniq_nats.tickets import nak, reply_many

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.models import Task
    from omniq_nats.connection import QueueClient
    from omniq_nats.flow import LimitState
    from omniq_nats.kv import Entry

__all__ = ["HandOver", "Offer", "lease_offered", "offer"]

_replace = msgspec.structs.replace


class HandOver(NamedTuple):
    """Where a finish that claims (``finish_and_claim``) may lease the held tasks of the slots it frees."""

    queues: frozenset[str]  #: the claimed queues, paused ones left out
    limit: int  #: the most tasks to lease
    lease: float
    worker_id: str


class Offer(NamedTuple):
    """A held task a freed slot goes to: its key, the lease token added to the holders, its record as read."""

    key: str
    task_id: str
    lease_token: str
    record: Record
    revision: int


def _takes(task: Task, key: str, handover: HandOver) -> bool:
    """Whether a finish that claims may lease held ``task`` of ``key`` as it is (its rate, if any, is left to a claim)."""
    limits = task.limits
    return (
        task.status is TaskStatus.PENDING
        and task.held
        and not task.paused
        and not task.waiting
        and task.queue in handover.queues
        and limits is not None
        and limits.key == key
        and limits.rate is None
    )


async def offer(
    client: QueueClient,
    states: dict[str, tuple[LimitState, int, bytes]],
    popped: dict[str, list[str]],
    freed: dict[str, int],
    handover: HandOver,
    room: int,
    now: datetime,
) -> list[Offer]:
    """Add a lease for each popped task a freed slot goes to (see the module) to its key's holders.

    Per key, its first popped tasks, one per slot it freed, while the claim may take them; the rest are woken.
    """
    candidates = [task_id for key, ids in popped.items() for task_id in ids[: freed[key]]]
    if not candidates:
        return []
    entries = await client.tasks.get_many([names.token(i) for i in candidates])
    read = dict(zip(candidates, entries, strict=True))
    deadline = (now + timedelta(seconds=handover.lease)).timestamp()
    offers: list[Offer] = []
    for key, ids in popped.items():
        state, share = states[key][0], 0
        for task_id in ids[: freed[key]]:
            entry = read[task_id]
            record = _decoded(entry)
            if room <= 0 or entry is None or record is None or not _takes(record.task, key, handover):
                break
            limits = record.task.limits
            assert limits is not None and limits.concurrency is not None
            if share >= claim_share(limits.concurrency):
                break
            lease_token = new_id()
            state.holders[lease_token] = (task_id, deadline)
            offers.append(Offer(key, task_id, lease_token, record, entry.revision))
            share, room = share + 1, room - 1
    return offers


def _decoded(entry: Entry | None) -> Record | None:
    if entry is None or entry.deleted:
        return None
    try:
        return decode_record(entry.value)
    except SerializationError:
        return None  # woken instead: a claim salvages it


async def lease_offered(
    client: QueueClient, offers: Sequence[Offer], handover: HandOver, now: datetime
) -> tuple[list[Task], list[Offer]]:
    """Write the offered tasks' records RUNNING under their leases; (the tasks leased, the offers whose record moved)."""
    records: list[Record] = []
    for o in offers:
        task = claimed(
            o.record.task, now=now, lease=handover.lease, worker_id=handover.worker_id, lease_token=o.lease_token
        )
        records.append(with_task(o.record, _replace(task, held=False, eta=None)))
    writes = [(names.token(o.task_id), encode_record(r), o.revision) for o, r in zip(offers, records, strict=True)]
    # Their parked tickets come back when the new leases end, not at the etas they were parked
    # until (a killed holder's task is then taken over, and its slot comes back, after its lease).
    # Sent with the writes: a ticket whose record moved meanwhile was acked with its task, or
    # belongs to the claim that moved it, which puts it off again when it comes back early.
    later = nak(int(handover.lease * 1e9) + 10_000_000)
    revisions, _ = await asyncio.gather(
        client.tasks.update_many(writes), reply_many(client, [(r.ack, later) for r in records])
    )
    leased: list[Record] = []
    moved: list[Offer] = []
    for o, record, revision in zip(offers, records, revisions, strict=True):
        if revision is None:
            moved.append(o)
            continue
        client.cache[o.task_id] = (revision, record)
        leased.append(record)
    return [_replace(record.task) for record in leased], moved
