"""The lease index: RUNNING tasks filed under their deadline second, so ``recover`` reads only the due ones.

``<prefix>_leases`` holds one message per (claim or heartbeat batch, engine
second): the ids, one per line, of tasks whose lease deadline falls in that
second. An entry may be stale (the task finished or was extended); the
record decides, by compare-and-set, as everywhere else.

The same seconds hold the dependency notes (:mod:`omniq_nats.notes`, told
apart by a header): ``recover`` reads them with the lease entries, in the
same scans, and sweeps them (:func:`omniq_nats.dependencies.sweep`) before
the seconds are purged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from omniq.models import TaskStatus
from omniq_nats import subjects as names
from omniq_nats.dependencies import release as release_dependants, sweep
from omniq_nats.flow import exit_of, release
from omniq_nats.jetstream import api, gather, scan
from omniq_nats.notes import read_note
from omniq_nats.records import Record, expired, released, transition, with_task
from omniq_nats.tickets import nak, reply_many

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence
    from datetime import datetime

    from omniq.models import Task
    from omniq_nats.connection import QueueClient

__all__ = ["index_leases", "recover"]

logger = logging.getLogger("omniq.nats")


def index_leases(client: QueueClient, tasks: Sequence[Task]) -> list[Awaitable[None]]:
    """Add the tasks to the lease index under their deadline seconds (fire and forget publishes)."""
    by_second: dict[int, list[str]] = {}
    for task in tasks:
        assert task.lease_expires_at is not None
        by_second.setdefault(int(task.lease_expires_at.timestamp()), []).append(task.id)
    return [
        client.nc.publish(names.lease_subject(client.prefix, second), "\n".join(ids).encode())
        for second, ids in by_second.items()
    ]


def _requeue(record: Record, at: datetime) -> Record | None:
    task = record.task
    if task.status is not TaskStatus.RUNNING or (task.lease_expires_at and task.lease_expires_at > at):
        return None
    return with_task(record, expired(task, at))


async def recover(client: QueueClient) -> list[Task]:
    """Requeue (or fail) RUNNING tasks whose deadline passed, reading only due lease-index seconds.

    A task failed here releases its dependants; the due seconds' dependency
    notes are swept.
    """
    nc, prefix = client.nc, client.prefix
    stream = names.leases_stream(prefix)
    now = await client.clock.now()
    current = int(now.timestamp())
    info = await api(nc, f"STREAM.INFO.{stream}", {"subjects_filter": names.lease_subjects(prefix)})
    due = sorted(
        int(s.rsplit(".", 1)[1])
        for s in (info.get("state") or {}).get("subjects") or {}
        if int(s.rsplit(".", 1)[1]) <= current
    )
    ids: dict[str, None] = {}
    noted: list[tuple[str, str]] = []  # (dependency, dependant) pairs of due notes
    for second in due:
        for msg in await scan(nc, stream, names.lease_subject(prefix, second)):
            pairs = read_note(msg)
            if pairs is None:
                ids.update(dict.fromkeys(msg.data.decode().split("\n")))
            else:
                noted.extend(pairs)
    done = await transition(client, list(ids), _requeue, use_cache=False)
    replies: list[tuple[str, bytes]] = []
    recovered: list[Task] = []
    exits: list[tuple[str, str]] = []  # slots of limited holders (omniq_nats.flow)
    freed: list[tuple[str, str]] = []  # (dependency, dependant) pairs released by the tasks failed here
    for task_id, (old, new, _) in done.items():
        client.cache.pop(task_id, None)
        if old.task.limits is not None and (slot := exit_of(old.task)) is not None:
            exits.append(slot)
        if old.dependants:
            freed.extend(released(task_id, old, new))
        recovered.append(new.task)
        replies.append((new.ack, b"+TERM" if new.task.status is TaskStatus.FAILED else nak(0)))
    await reply_many(client, replies)
    if exits:
        await release(client, exits)
    if freed:
        await release_dependants(client, freed)
    await sweep(client, noted)
    # seconds wholly in the past hold nothing live any more: every entry is handled above.
    await gather(
        api(nc, f"STREAM.PURGE.{stream}", {"filter": names.lease_subject(prefix, s)}) for s in due if s < current
    )
    if recovered:
        logger.info("recovered %d task(s) whose lease expired", len(recovered))
    return recovered
