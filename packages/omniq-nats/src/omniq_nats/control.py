"""Single-task control: cancel a task, pause or resume it (a compare-and-set on its record each).

A cancel acks the task's ticket at once (held or nak-delayed ones included),
gives back a limit's slot it held and releases the tasks waiting on it; a
resume of a PENDING task publishes a fresh ticket, unless it still waits
for dependencies (the end of that wait publishes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from omniq.models import TERMINAL_STATUSES, TaskStatus
from omniq_nats.dependencies import release as release_dependants
from omniq_nats.flow import exit_of, release
from omniq_nats.records import ACTIVE, Record, released, transition, with_task
from omniq_nats.tickets import publish_tickets, reply

if TYPE_CHECKING:
    from datetime import datetime

    from omniq_nats.connection import QueueClient

__all__ = ["cancel", "set_paused"]


async def cancel(client: QueueClient, task_id: str) -> bool:
    """Cancel a PENDING or RUNNING task; whether it was."""

    def stop(record: Record, now: datetime) -> Record | None:
        if record.task.status not in ACTIVE:
            return None
        task = msgspec.structs.replace(
            record.task,
            status=TaskStatus.CANCELLED,
            lease_token=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        return with_task(record, task, "")

    done = await transition(client, [task_id], stop, use_cache=False)
    if task_id not in done:
        return False
    client.cache.pop(task_id, None)
    old, new, _ = done[task_id]
    await reply(client, old.ack, b"+ACK")
    if (slot := exit_of(old.task)) is not None:
        await release(client, [slot])
    if old.dependants:
        await release_dependants(client, released(task_id, old, new))
    return True


async def set_paused(client: QueueClient, task_id: str, paused: bool) -> bool:
    """Pause or resume a non-terminal task; whether it changed."""

    def flip(record: Record, now: datetime) -> Record | None:
        if record.task.status in TERMINAL_STATUSES:
            return None
        return with_task(record, msgspec.structs.replace(record.task, paused=paused, updated_at=now))

    done = await transition(client, [task_id], flip, use_cache=False)
    if task_id not in done:
        return False
    old, new, revision = done[task_id]
    if new.task.status is TaskStatus.RUNNING:
        client.cache[task_id] = (revision, new)
    # a waiting task gets its ticket from the end of its wait (omniq_nats.dependencies)
    if old.task.paused and not paused and new.task.status is TaskStatus.PENDING and not new.task.waiting:
        await publish_tickets(client, [new.task])
    return True
