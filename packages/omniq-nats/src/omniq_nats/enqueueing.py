"""Enqueueing: a ticket and a record per task, pipelined, and unique keys by compare-and-set.

Each ticket is sent just before its record, on the same connection, and
carries the whole envelope: if the record write never happens the fetcher
creates it from the ticket. A record whose ticket was refused is deleted
again before the error is raised, so an accepted task is never a record
without a ticket, but for a task waiting for dependencies: it is created
with no ticket (its wait's end publishes one), after it was registered on
its dependencies and before they are read again (:mod:`omniq_nats.dependencies`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from omniq.models import Task, TaskStatus
from omniq_nats import subjects as names
from omniq_nats.dependencies import prepare, register, settle
from omniq_nats.notes import with_note
from omniq_nats.records import ACTIVE, CAS_ROUNDS, Record, encode_record, leased_record
from omniq_nats.tickets import check_ticket, publish_tickets, ticket_request
from omniq_nats.wakeups import announce

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from nats.aio.msg import Msg

    from omniq_nats.connection import QueueClient
    from omniq_nats.kv import Bucket

__all__ = ["enqueue_many", "take_unique"]

logger = logging.getLogger("omniq.nats")

_UNIQUE_GRACE = 60.0  # seconds a unique key counts as held while its task's record is being written
_BATCH = 250  # tasks (two requests each) in flight per pipelined batch


async def enqueue_many(client: QueueClient, tasks: Sequence[Task]) -> list[str]:
    """Store new PENDING tasks; return their ids (or the id holding a task's unique key)."""
    ids: list[str] = []
    fresh: list[Task] = []
    taken: dict[str, str] = {}
    for original in tasks:
        task = msgspec.structs.replace(original, status=TaskStatus.PENDING, waiting=0)
        key = task.unique_key
        if key is not None:
            holder = taken.get(key) or await take_unique(client, task)
            if holder is not None:
                taken[key] = holder
                ids.append(holder)
                continue
            taken[key] = task.id
        ids.append(task.id)
        fresh.append(task)
    # only a batch with dependencies looks at them (omniq_nats.dependencies); others create plain records.
    dependent = any(task.depends_on for task in fresh)
    records = await prepare(client, fresh) if dependent else [Record(task) for task in fresh]
    for start in range(0, len(records), _BATCH):
        await _create(client, records[start : start + _BATCH])
    if dependent:
        await settle(client, [record for record in records if record.awaited])
    return ids


async def _create(client: QueueClient, records: Sequence[Record]) -> None:
    """Send each task's ticket and then its record without waiting in between; check both answers.

    A waiting task's record goes without a ticket, after a note of its
    waits (:mod:`omniq_nats.notes`) sent ahead of the batch.
    """
    bucket = client.tasks
    keys = [names.token(r.task.id) for r in records]
    encoded = [encode_record(r) for r in records]
    requests: list[tuple[str, bytes, dict[str, str] | None]] = []
    slots: list[tuple[int | None, int]] = []  # per record: index of its ticket's answer (None: no ticket), its own
    for record, key, value in zip(records, keys, encoded, strict=True):
        ticket_slot = None
        if not record.awaited:
            ticket_slot = len(requests)
            requests.append(ticket_request(client.prefix, record.task))
        slots.append((ticket_slot, len(requests)))
        requests.append(bucket.update_request(key, value, 0))
    waits = [(dep_id, r.task.id) for r in records for dep_id in r.awaited]
    if waits:
        answers = await with_note(client, waits, await client.clock.now(), requests)
    else:
        answers = await client.mux.request_many(requests)
    failure: BaseException | None = None
    created: list[tuple[Task, int]] = []
    undo: list[tuple[str, bytes, dict[str, str] | None]] = []
    for record, key, value, (ticket_slot, record_slot) in zip(records, keys, encoded, slots, strict=True):
        ticket, revision = _answered(bucket, record.task, answers, ticket_slot, record_slot)
        if ticket is not None:
            failure = failure or ticket
            if isinstance(revision, int):  # no record may outlive a refused ticket
                undo.append(bucket.delete_request(key, revision))
        elif isinstance(revision, BaseException):
            # the ticket is out: its fetcher creates the record (a waiting task has none: the error is the caller's)
            failure = failure or revision
        elif revision is None:
            await _replace_existing(client, record, key, value)
        elif not record.dependants and not record.awaited:
            # a claimer may take the announced revision for Record(task): only plain records are announced.
            created.append((record.task, revision))
    if len(created) > 1:
        # Not for one task: its claimer reads the record while it pulls the ticket (no later),
        # and one more message to wake for on that path costs an idle worker's latency.
        await announce(client.nc, client.prefix, created)
    if failure is not None:
        try:
            await client.mux.request_many(undo)
        except Exception as exc:
            logger.warning("could not remove the record of a refused ticket: %s", exc)
        raise failure


def _answered(
    bucket: Bucket, task: Task, answers: Sequence[Msg], ticket_slot: int | None, record_slot: int
) -> tuple[BaseException | None, int | BaseException | None]:
    """(the ticket's refusal or None, the record's revision / None on a lost compare-and-set / its error)."""
    ticket: BaseException | None = None
    revision: int | BaseException | None
    try:
        if ticket_slot is not None:
            check_ticket(task, answers[ticket_slot])
    except Exception as exc:
        ticket = exc
    try:
        revision = bucket.written(answers[record_slot])
    except Exception as exc:
        revision = exc
    return ticket, revision


async def _replace_existing(client: QueueClient, record: Record, key: str, value: bytes) -> None:
    """An id that exists already: a live task stays, a finished or deleted one is replaced.

    A dependency of the batch then has its dependants registered on the
    record there is, which may not be the one written here.
    """
    bucket = client.tasks
    for _ in range(CAS_ROUNDS):
        entry = await bucket.get(key)
        if entry is None:
            if await bucket.update(key, value, 0) is not None:
                break
            continue
        if not entry.deleted and leased_record(entry.value).task.status in ACTIVE:
            break  # live (possibly created from our own ticket): re-enqueueing it is a no-op
        if await bucket.update(key, value, entry.revision) is not None:
            # a fetcher may have dropped our ticket while the old state was there (a waiting task has none).
            if not record.awaited:
                await publish_tickets(client, [record.task])
            break
    if record.dependants:
        await register(client, {record.task.id: record.dependants})


async def take_unique(client: QueueClient, task: Task) -> str | None:
    """Take the task's unique key; return the id of a live holder instead when there is one."""
    assert task.unique_key is not None
    unique = client.unique
    key, me = names.token(task.unique_key), task.id.encode()
    for _ in range(CAS_ROUNDS * 2):
        if await unique.update(key, me, 0) is not None:
            return None
        entry = await unique.get(key)
        if entry is None:
            continue
        holder = entry.value.decode()
        if not entry.deleted and holder != task.id and await _holds(client, holder, entry.time):
            return holder
        if await unique.update(key, me, entry.revision) is not None:
            return None
    raise RuntimeError(f"unique key {task.unique_key!r} is contended beyond retry")


async def _holds(client: QueueClient, holder: str, since: datetime | None) -> bool:
    entry = await client.tasks.get(names.token(holder))
    if entry is None:
        # the holder's enqueue may still be writing its record.
        return since is not None and (await client.clock.now() - since).total_seconds() < _UNIQUE_GRACE
    return not entry.deleted and leased_record(entry.value).task.status in ACTIVE
