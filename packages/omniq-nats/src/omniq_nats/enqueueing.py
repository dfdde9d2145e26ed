"""Enqueueing: a ticket and a record per task, pipelined, and unique keys by compare-and-set.

Each ticket is sent just before its record, on the same connection, and
carries the whole envelope: if the record write never happens the fetcher
creates it from the ticket. A record whose ticket was refused is deleted
again before the error is raised, so an accepted task is never a record
without a ticket.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from omniq.models import Task, TaskStatus
from omniq_nats import subjects as names
from omniq_nats.records import ACTIVE, CAS_ROUNDS, Record, encode_record, leased_record
from omniq_nats.tickets import check_ticket, publish_tickets, ticket_request
from omniq_nats.wakeups import announce

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from omniq_nats.connection import QueueClient

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
        task = msgspec.structs.replace(original, status=TaskStatus.PENDING)
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
    for start in range(0, len(fresh), _BATCH):
        await _create(client, fresh[start : start + _BATCH])
    return ids


async def _create(client: QueueClient, tasks: Sequence[Task]) -> None:
    """Send each task's ticket and then its record without waiting in between; check both answers."""
    bucket = client.tasks
    keys = [names.token(t.id) for t in tasks]
    encoded = [encode_record(Record(t)) for t in tasks]
    requests: list[tuple[str, bytes, dict[str, str] | None]] = []
    for task, key, value in zip(tasks, keys, encoded, strict=True):
        requests.append(ticket_request(client.prefix, task))
        requests.append(bucket.update_request(key, value, 0))
    answers = await client.mux.request_many(requests)
    failure: BaseException | None = None
    created: list[tuple[Task, int]] = []
    undo: list[tuple[str, bytes, dict[str, str] | None]] = []
    for index, (task, key, value) in enumerate(zip(tasks, keys, encoded, strict=True)):
        ticket: BaseException | None = None
        revision: int | BaseException | None
        try:
            check_ticket(task, answers[2 * index])
        except Exception as exc:
            ticket = exc
        try:
            revision = bucket.written(answers[2 * index + 1])
        except Exception as exc:
            revision = exc
        if ticket is not None:
            failure = failure or ticket
            if isinstance(revision, int):  # no record may outlive a refused ticket
                undo.append(bucket.delete_request(key, revision))
        elif isinstance(revision, BaseException):
            failure = failure or revision  # the ticket is out: its fetcher creates the record
        elif revision is None:
            await _replace_existing(client, task, key, value)
        else:
            created.append((task, revision))
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


async def _replace_existing(client: QueueClient, task: Task, key: str, value: bytes) -> None:
    """An id that exists already: a live task stays, a finished or deleted one is replaced."""
    bucket = client.tasks
    for _ in range(CAS_ROUNDS):
        entry = await bucket.get(key)
        if entry is None:
            if await bucket.update(key, value, 0) is not None:
                return
            continue
        if not entry.deleted and leased_record(entry.value).task.status in ACTIVE:
            return  # live (possibly created from our own ticket): re-enqueueing it is a no-op
        if await bucket.update(key, value, entry.revision) is not None:
            # a fetcher may have dropped our ticket while the old state was there.
            await publish_tickets(client, [task])
            return


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
