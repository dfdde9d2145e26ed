"""Finishing: outcomes applied to the records by compare-and-set, then the tickets answered and the slots freed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omniq_nats.dependencies import release as release_dependants
from omniq_nats.flow import exit_of, release
from omniq_nats.jetstream import gather
from omniq_nats.leases import index_leases
from omniq_nats.records import Record, apply_outcome, released, transition, with_task
from omniq_nats.tickets import answer_finish, publish_tickets, reply_many

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence
    from datetime import datetime

    from omniq.base import BaseResultStorage
    from omniq.models import Outcome, Task
    from omniq_nats.connection import QueueClient
    from omniq_nats.handover import HandOver

__all__ = ["finish"]


async def finish(
    client: QueueClient, outcomes: Sequence[Outcome], fused: BaseResultStorage | None, handover: HandOver | None
) -> tuple[list[bool], list[Task]]:
    """Apply ``outcomes``; (one flag per outcome: accepted, the tasks the freed slots were handed over to).

    Each accepted outcome's ticket is acked, terminated or nak-delayed (a retry without a known
    ticket gets a fresh one), synchronously. ``fused`` (a result storage on this server) gets the
    accepted results in the same pipelined batch, after the compare-and-set accepted them (never
    before, so a stale lease's result cannot overwrite the accepted one). Then the slots of the
    limited holders are released (handed over with ``handover``, see :mod:`omniq_nats.handover`),
    and the tasks waiting on the ended ones are counted down (so a dependant made ready finds its
    dependency's result); a task nobody waits on adds nothing.
    """
    by_id: dict[str, Outcome] = {}
    for outcome in outcomes:
        by_id.setdefault(outcome.task_id, outcome)  # a second outcome for one lease loses

    def apply(record: Record, now: datetime) -> Record | None:
        task = apply_outcome(record.task, by_id[record.task.id], now)
        return None if task is None else with_task(record, task)

    done = await transition(client, list(by_id), apply)
    now = await client.clock.now()
    replies: list[tuple[str, bytes]] = []
    tickets: list[Task] = []
    exits: list[tuple[str, str]] = []  # slots of limited holders (omniq_nats.flow)
    freed: list[tuple[str, str]] = []  # (dependency, dependant) pairs its end releases
    for task_id, (old, new, _) in done.items():
        client.cache.pop(task_id, None)
        if old.task.limits is not None and (slot := exit_of(old.task)) is not None:
            exits.append(slot)
        if old.dependants:
            freed.extend(released(task_id, old, new))
        answer_finish(client, new, now, replies, tickets)
    side: list[Awaitable[Any]] = [reply_many(client, replies)]
    if tickets:
        side.append(publish_tickets(client, tickets))
    if fused is not None:
        accepted = [r for i in done if (r := by_id[i].result) is not None]
        if accepted:
            side.append(fused.set_many(accepted))
    await gather(side)
    handed: list[Task] = []
    if exits:
        handed = await release(client, exits, handover)
        await gather(index_leases(client, handed))
    if freed:
        await release_dependants(client, freed)
    return [o.task_id in done and by_id[o.task_id] is o for o in outcomes], handed
