"""Where tickets wait: the work stream's subjects, their durable pull consumers, no-wait pulls.

One durable pull consumer per (queue, priority) work subject, created on
first use. A look asks the stream which subjects hold tickets, then pulls
from their consumers without waiting; :func:`lagging` covers the moment
between a publish and its consumer counting it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from omniq_nats import subjects as names
from omniq_nats.jetstream import api, gather, pull

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.msg import Msg

    from omniq_nats.connection import QueueClient

__all__ = ["consumer", "lagging", "pull_tickets", "subjects_holding"]


async def subjects_holding(client: QueueClient, queues: Sequence[str]) -> list[tuple[int, str, int]]:
    """(priority, queue, tickets held) of the subjects that hold tickets, best first."""
    stream = names.work_stream(client.prefix)
    infos = await gather(
        api(client.nc, f"STREAM.INFO.{stream}", {"subjects_filter": names.work_subjects(client.prefix, q)})
        for q in queues
    )
    found: list[tuple[int, int, str, int]] = []
    for index, (queue, info) in enumerate(zip(queues, infos, strict=True)):
        subjects = (info.get("state") or {}).get("subjects") or {}
        found.extend((-names.parse_priority(s.rsplit(".", 1)[1]), index, queue, n) for s, n in subjects.items())
    found.sort()
    return [(-neg, queue, held) for neg, _, queue, held in found]


async def lagging(client: QueueClient, queue: str, priority: int, held: int) -> bool:
    """Whether the subject's consumer has not yet counted tickets its stream holds.

    The server acknowledges a publish before it tells the stream's
    consumers (another goroutine does that), so a no-wait pull right after
    a publish can answer "no messages" for a ticket already stored: once in
    5,000 publish-then-pull pairs here on a loaded machine, enough to fail a
    claim of a just-retried task in CI. The stream's count of the subject's
    tickets above what the consumer knows of (delivered and not yet
    acknowledged, nak-delayed ones included, or still to deliver) is that
    lag. One round trip, paid only by a look that found the subject's
    tickets all out.
    """
    stream = names.work_stream(client.prefix)
    info = await api(client.nc, f"CONSUMER.INFO.{stream}.{await consumer(client, queue, priority)}")
    return held > int(info.get("num_ack_pending", 0)) + int(info.get("num_pending", 0))


async def consumer(client: QueueClient, queue: str, priority: int) -> str:
    """The durable pull consumer of (queue, priority), created on first use."""
    name = names.consumer_name(queue, priority)
    if name not in client.consumers:
        stream = names.work_stream(client.prefix)
        config = {
            "durable_name": name,
            "filter_subject": names.work_subject(client.prefix, queue, priority),
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": int(client.ack_wait * 1e9),
            "max_deliver": -1,
            "max_ack_pending": -1,
            "replay_policy": "instant",
        }
        await api(client.nc, f"CONSUMER.DURABLE.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
        client.consumers.add(name)
    return name


#: the pauses (s) before the no-wait pulls that look again for tickets their consumer had not counted
#: yet (see lagging): they come in microseconds, so the first look again usually finds them.
_LAG_RETRIES = (0.001, 0.004, 0.015, 0.03)


async def pull_tickets(client: QueueClient, queue: str, priority: int, batch: int, *, held: int = 0) -> list[Msg]:
    """A no-wait pull; ``held``: the tickets the stream held on the subject a moment ago (0: not known)."""
    stream, name = names.work_stream(client.prefix), await consumer(client, queue, priority)
    msgs = await pull(client.nc, stream, name, batch)
    if not msgs and held and await lagging(client, queue, priority, held):
        # No-wait pulls again, a few ms apart: a pull that waits (``expires``) on a consumer holding
        # nak-delayed tickets went unanswered for seconds on nats-server 2.9 under load.
        for delay in _LAG_RETRIES:
            await asyncio.sleep(delay)
            msgs = await pull(client.nc, stream, name, batch)
            if msgs:
                break
    return msgs
