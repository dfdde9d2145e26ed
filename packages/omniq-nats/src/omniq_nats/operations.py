"""What an operator does to the queue: pages of tasks, per-queue statistics, retrying and purging tasks.

The task records live in one KV bucket keyed by task id, and JetStream
keeps no secondary index over their fields, so :func:`list_page` and
:func:`queue_stats` read the bucket once (one ephemeral ordered consumer
over ``$KV.<prefix>_tasks.>``, pulled in batches of 1,000: about one round
trip per 1,000 tasks, every record decoded) and select in Python. Neither
adds anything to enqueue, claim or finish: the completions per minute are
counted from the records' ``finished_at``, not from counters kept on the
hot path.

:func:`retry` is a compare-and-set on the task's record like every other
transition, then a fresh ticket (which wakes waiting workers as an enqueue
does). :func:`purge` deletes records (tombstones, so their tickets are
dropped when fetched), or whole streams when everything goes; a deleted
task others wait on releases them (:mod:`omniq_nats.dependencies`).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import msgspec

from omniq.models import TaskStatus
from omniq.monitoring import RETRYABLE_STATUSES, reset_for_retry, select_page, stats_of
from omniq_nats import subjects as names
from omniq_nats.dependencies import release as release_dependants
from omniq_nats.enqueueing import take_unique
from omniq_nats.flow import exit_of, release
from omniq_nats.jetstream import api, chunked
from omniq_nats.notes import with_note
from omniq_nats.records import Record, read_all, transition, with_task
from omniq_nats.tickets import publish_tickets, reply

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from omniq.models import Task
    from omniq.monitoring import QueueStats, TaskQuery
    from omniq_nats.connection import QueueClient

__all__ = ["list_page", "purge", "queue_stats", "retry"]

logger = logging.getLogger("omniq.nats")


async def list_page(client: QueueClient, query: TaskQuery) -> list[Task]:
    """``query``'s page: one scan of the tasks bucket, filtered, ordered and cut by its cursor."""
    return select_page([record.task for _, _, record in await read_all(client, salvage=True)], query)


async def queue_stats(client: QueueClient) -> list[QueueStats]:
    """Per-queue counts, oldest ready age and completions per minute: one scan, judged at engine time."""
    records = await read_all(client, salvage=True)
    return stats_of([record.task for _, _, record in records], await client.clock.now())


async def retry(client: QueueClient, task_id: str) -> Task | None:
    """Make a FAILED, CANCELLED or EXPIRED task PENDING again with a fresh attempt budget.

    The record is made PENDING first (compare-and-set), before any ticket is
    published. A task with a unique key is made PENDING *paused* at first: an
    enqueue racing for the key already sees it live, and a ticket left over
    from before (a task cancelled before its first fetch keeps one) cannot
    claim it while the key is being taken. If another live task holds the
    key, the record is put back as it was and None returned; otherwise it is
    unpaused. Only then is the ticket published, which hands the task to workers
    (not while it still waits for dependencies: the end of its wait publishes it).

    Round trips: a read and a compare-and-set of the record, the engine clock
    (cached), then the ticket's publish; with a unique key also its take (a
    compare-and-set, more under contention) and the unpausing compare-and-set.
    """

    def reset(record: Record, now: datetime) -> Record | None:
        if record.task.status not in RETRYABLE_STATUSES:
            return None
        task = reset_for_retry(record.task, now)
        if task.unique_key is not None:
            task = msgspec.structs.replace(task, paused=True)  # reserved until the key is ours
        return with_task(record, task, "")

    done = await transition(client, [task_id], reset, use_cache=False)
    if task_id not in done:
        return None
    old, new, _ = done[task_id]
    client.cache.pop(task_id, None)
    task = new.task
    if task.unique_key is not None:
        if await take_unique(client, task) is not None:
            await _restore(client, task_id, old)
            return None
        released = await transition(client, [task_id], _unpause, use_cache=False)
        if task_id in released:
            task = released[task_id][1].task
    if task.waiting:
        return task  # cancelled while it waited: the end of its wait publishes its ticket
    try:
        await publish_tickets(client, [task])
    except BaseException:
        await _restore(client, task_id, old)  # no PENDING record may stay without a ticket
        raise
    return task


def _unpause(record: Record, now: datetime) -> Record | None:
    """The reserved retry made ready, unless something else changed it meanwhile."""
    task = record.task
    if task.status is not TaskStatus.PENDING or not task.paused or task.lease_token is not None:
        return None
    return with_task(record, msgspec.structs.replace(task, paused=False, updated_at=now))


async def _restore(client: QueueClient, task_id: str, old: Record) -> None:
    """Put a retried record back as it was, if it is still the untouched PENDING copy (nothing claimed it)."""

    def undo(record: Record, now: datetime) -> Record | None:
        task = record.task
        return old if task.status is TaskStatus.PENDING and task.lease_token is None else None

    try:
        await transition(client, [task_id], undo, use_cache=False)
    except Exception as exc:  # the caller's own outcome (None or the error) matters more
        logger.warning("could not restore task %s after a refused retry: %s", task_id, exc)


async def purge(client: QueueClient, queue: str | None, statuses: Sequence[TaskStatus] | None) -> int:
    """Delete the tasks of ``queue`` in ``statuses`` (None: any); return how many.

    Everything: the work, lease and tasks streams and the unique bucket are
    purged whole. Otherwise each record is deleted by compare-and-set and the
    ticket it holds is acked; a whole queue also purges its work subjects.
    A deleted task others wait on releases them, after a note of them
    (:mod:`omniq_nats.notes`) filed before the deletes.
    """
    nc, bucket, prefix = client.nc, client.tasks, client.prefix
    wanted = None if statuses is None else frozenset(TaskStatus(s) for s in statuses)
    doomed = [
        (key, revision, record)
        for key, revision, record in await read_all(client, salvage=True)
        if (queue is None or record.task.queue == queue) and (wanted is None or record.task.status in wanted)
    ]
    if queue is None and wanted is None:
        for stream in (names.work_stream(prefix), names.leases_stream(prefix), bucket.stream):
            await api(nc, f"STREAM.PURGE.{stream}", {})
        await client.unique.clear()
        await api(nc, f"STREAM.PURGE.{client.flow.stream}", {"filter": client.flow.subject(names.LIMIT_KEYS)})
        client.cache.clear()
        return len(doomed)
    ends = [(rec.task.id, dependant) for _, _, rec in doomed for dependant in rec.dependants]
    if ends:
        await with_note(client, ends, await client.clock.now(), [])
    deleted = await chunked([functools.partial(bucket.delete, k, r) for k, r, _ in doomed])
    count = sum(1 for revision in deleted if revision is not None)
    acks = [(rec.ack, b"+ACK") for (_, _, rec), rev in zip(doomed, deleted, strict=True) if rev]
    await chunked([functools.partial(reply, client, subject, body) for subject, body in acks])
    exits = [slot for (_, _, rec), rev in zip(doomed, deleted, strict=True) if rev and (slot := exit_of(rec.task))]
    if exits:
        await release(client, exits)
    freed = [(rec.task.id, d) for (_, _, rec), rev in zip(doomed, deleted, strict=True) if rev for d in rec.dependants]
    if freed:
        await release_dependants(client, freed)
    if queue is not None and wanted is None:
        await api(nc, f"STREAM.PURGE.{names.work_stream(prefix)}", {"filter": names.work_subjects(prefix, queue)})
    for _, _, record in doomed:
        client.cache.pop(record.task.id, None)
    return count
