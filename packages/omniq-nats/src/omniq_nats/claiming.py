"""Claiming: fetch tickets best priority first and turn them into leases by compare-and-set.

A claim asks the stream which subjects hold tickets
(:mod:`omniq_nats.consumers`) (or, right after a wake-up, pulls only
where tickets were published; while draining, pulls the best subject again),
pulls, reads each ticket's record and decides it (:func:`~omniq_nats.tickets.decide`):
claim (a compare-and-set write, so no task has two live leases), drop, or nak
for later. A claimer with ``wait`` sleeps on ticket publications between
looks (:mod:`omniq_nats.wakeups`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from omniq_nats import subjects as names
from omniq_nats.consumers import consumer, pull_tickets, subjects_holding
from omniq_nats.dependencies import release as release_dependants
from omniq_nats.flow import admit_claims, exit_of, release
from omniq_nats.jetstream import api, gather
from omniq_nats.leases import index_leases
from omniq_nats.notes import update_noting
from omniq_nats.records import CAS_ROUNDS, Record, encode_record
from omniq_nats.tickets import Action, Decision, decide, decode_ticket, nak, reply, reply_many, ticket_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping, Sequence

    from nats.aio.msg import Msg

    from omniq.models import Task
    from omniq_nats.connection import QueueClient
    from omniq_nats.kv import Entry

__all__ = ["claim", "claim_ready", "take", "wait_for_work"]

#: the decisions that write the task's record.
_WRITES = frozenset({Action.CLAIM, Action.FAIL, Action.PARK})


def _best_first(tasks: list[Task]) -> list[Task]:
    tasks.sort(key=lambda t: (-t.priority, t.eta or t.created_at))
    return tasks


async def take(
    client: QueueClient, msgs: list[Msg], lease: float, worker_id: str, read: Mapping[str, Entry | None] | None = None
) -> list[Task]:
    """Turn fetched tickets into claims (or drops / naks), with compare-and-set retries.

    ``read`` holds records already read (by task id), each read after its
    ticket was published. They save the first round its reads, but only
    a claim is decided on them (its compare-and-set proves the record
    unchanged); a ticket they would drop or nak is looked at again.
    """
    prefetched: dict[str, Entry | tuple[Record, int] | None] = dict(read or {})
    todo = await _tickets(client, msgs, prefetched)
    won: list[Task] = []
    freed: list[tuple[str, str]] = []  # (dependency, dependant) pairs released by FAILs written
    for _ in range(CAS_ROUNDS):
        if not todo:
            break
        decided, retry = await _decide(client, todo, prefetched, lease, worker_id)
        prefetched.clear()
        written = iter(await _write(client, decided))
        replies: list[tuple[str, bytes]] = []
        fresh: list[Task] = []
        moved: list[Decision] = []  # limited claims whose record moved: their slots are given back
        for msg, ticket, decision in decided:
            if decision.action is Action.DROP:
                client.passed += 1
                replies.append((msg.reply, b"+ACK"))
            elif decision.action is Action.LATER:
                client.passed += decision.delay_ns > 0  # a plain nak comes straight back: not passed
                client.remember_due(decision.due)
                replies.append((msg.reply, nak(decision.delay_ns)))
            else:
                revision = next(written)
                assert decision.record is not None
                task = decision.record.task
                if revision is None:
                    moved.append(decision)
                    retry.append((msg, ticket))
                    continue
                if decision.action is not Action.CLAIM:  # FAIL: terminated; PARK: back at its eta
                    client.passed += 1
                    freed.extend((ticket.id, dependant) for dependant in decision.dependants)
                    client.remember_due(decision.due)
                    replies.append((msg.reply, b"+TERM" if decision.action is Action.FAIL else nak(decision.delay_ns)))
                    continue
                client.cache[task.id] = (revision, decision.record)
                fresh.append(task)
                won.append(msgspec.structs.replace(task))
        await gather([reply_many(client, replies), *index_leases(client, fresh)])
        if moved:
            await _give_back(client, moved)
        todo = retry
    # still contended: let the tickets come back
    await reply_many(client, [(msg.reply, nak(0)) for msg, _ in todo])
    if freed:
        await release_dependants(client, freed)
    return won


async def _write(client: QueueClient, decided: Sequence[tuple[Msg, Task, Decision]]) -> list[int | None]:
    """Write the records of the decisions that write one, pipelined; the new revisions (None: moved).

    A FAIL of a task others wait on files a note of them ahead (:mod:`omniq_nats.notes`).
    """
    writes: list[tuple[str, bytes, int]] = []
    ends: list[tuple[str, str]] = []
    for _, ticket, decision in decided:
        if decision.action in _WRITES:
            assert decision.record is not None
            writes.append((names.token(ticket.id), encode_record(decision.record), decision.revision))
            if decision.dependants:
                ends.extend((ticket.id, dependant) for dependant in decision.dependants)
    if ends:
        return await update_noting(client, writes, ends, await client.clock.now())
    return await client.tasks.update_many(writes) if writes else []


async def _tickets(
    client: QueueClient, msgs: Sequence[Msg], prefetched: dict[str, Entry | tuple[Record, int] | None]
) -> list[tuple[Msg, Task]]:
    """The fetched tickets with their envelopes (undecodable ones terminated); announced revisions to ``prefetched``."""
    todo: list[tuple[Msg, Task]] = []
    announced = client.wake.revisions
    for msg in msgs:
        ticket = decode_ticket(msg)
        if ticket is None:
            await reply(client, msg.reply, b"+TERM")
            continue
        todo.append((msg, ticket))
        revision = announced.pop(ticket.id, None) if announced else None
        if revision is not None and ticket.id not in prefetched:
            # the enqueue created the record at ``revision`` from this very envelope (a stale
            # announcement only costs a failed compare-and-set and a read).
            prefetched[ticket.id] = (Record(ticket), revision)
    return todo


async def _decide(
    client: QueueClient,
    todo: Sequence[tuple[Msg, Task]],
    read: Mapping[str, Entry | tuple[Record, int] | None],
    lease: float,
    worker_id: str,
) -> tuple[list[tuple[Msg, Task, Decision]], list[tuple[Msg, Task]]]:
    """Read the records (those not in ``read``) and decide each ticket; early reads decide only claims."""
    unread = list(dict.fromkeys(t.id for _, t in todo if t.id not in read))
    entries = await client.tasks.get_many([names.token(i) for i in unread]) if unread else []
    fresh = dict(zip(unread, entries, strict=True))
    now = await client.clock.now()
    decided: list[tuple[Msg, Task, Decision]] = []
    retry: list[tuple[Msg, Task]] = []
    for msg, ticket in todo:
        early = ticket.id not in fresh
        entry = read[ticket.id] if early else fresh[ticket.id]
        decision = decide(
            ticket, msg.reply, entry, now=now, lease=lease, worker_id=worker_id, pause_recheck=client.pause_recheck
        )
        if early and decision.action not in (Action.CLAIM, Action.FAIL):
            # only a write's compare-and-set proves an early read current: read again.
            retry.append((msg, ticket))
        else:
            decided.append((msg, ticket, decision))
    limited = [index for index, (_, _, d) in enumerate(decided) if d.pending is not None]
    if limited:  # only limited tasks' claims carry their pending task: omniq_nats.flow applies the limits
        admitted = await admit_claims(client, [decided[index][2] for index in limited])
        for index, decision in zip(limited, admitted, strict=True):
            decided[index] = (decided[index][0], decided[index][1], decision)
    return decided, retry


async def _give_back(client: QueueClient, moved: Sequence[Decision]) -> None:
    """Release the slots limited claims took before their record's compare-and-set failed."""
    slots = [s for d in moved if d.pending is not None and d.record and (s := exit_of(d.record.task))]
    if slots:
        await release(client, slots)


async def _pull_take(
    client: QueueClient, queue: str, priority: int, need: int, lease: float, worker_id: str, held: int = 0
) -> tuple[bool, list[Task]]:
    """Pull up to ``need`` tickets of one subject and take them: (whether the last pull came full, the claims).

    Pulls again, for what is still needed, while the last pull came full and
    some of its tickets were let go without a claim (dropped, failed, parked
    or put off until later): they left room in the batch, and a ready task's
    ticket may wait behind them. With a short lease the parked tickets of a
    limit's held tasks come back at their eta, most of them for tasks woken
    (by a fresh ticket) and finished since: answering empty then would end
    a burst worker with the woken tasks unclaimed. Each round lets its
    tickets go (acked, terminated or nak-delayed), so the rounds end; a
    plain nak, which comes straight back, does not count.
    """
    claimed: list[Task] = []
    left = need
    while True:
        passed = client.passed
        msgs = await pull_tickets(client, queue, priority, left, held=held)
        held = 0  # what the stream held was looked for: later rounds pull what is left
        if msgs:
            claimed.extend(await take(client, msgs, lease, worker_id))
        if len(msgs) < left or client.passed == passed or len(claimed) >= need:
            return len(msgs) == left, claimed
        left = need - len(claimed)


async def claim_ready(
    client: QueueClient, queues: Sequence[str], limit: int, lease: float, worker_id: str
) -> list[Task]:
    """Fetch tickets best priority first (one no-wait pull per non-empty subject) and claim their tasks."""
    wake = client.wake
    # publications from now on are hints for the next wake-up; this look may prove the rest idle.
    watched = wake.watched(queues)
    hints = wake.take_hints()
    began, requeued, wake.idle = (tuple(queues), wake.signals, time.monotonic()), wake.requeued, None
    claimed: list[Task] = []
    best = wake.busy_subject(queues, hints) if watched else None
    if best is not None:
        # Draining: the best subject filled the last pull, so pull it again without asking
        # the stream which subjects hold tickets (a round trip per batch).
        full, claimed = await _pull_take(client, best[1], best[0], limit, lease, worker_id)
        if full:
            return _best_first(claimed)
    wake.busy = None
    drained = True
    for priority, queue, held in await subjects_holding(client, queues):
        need = limit - len(claimed)
        if need <= 0:
            drained = False
            break
        full, got = await _pull_take(client, queue, priority, need, lease, worker_id, held)
        if need == limit and full:
            wake.busy = (tuple(queues), priority, queue, time.monotonic())
        drained = drained and not full
        claimed.extend(got)
    if watched and drained and wake.requeued == requeued:
        wake.idle = began
    return _best_first(claimed)


async def _claim_hinted(
    client: QueueClient,
    queues: Sequence[str],
    hints: Mapping[str, Sequence[str]],
    began: tuple[tuple[str, ...], int, float],
    limit: int,
    lease: float,
    worker_id: str,
) -> list[Task]:
    """Claim right after a wake-up: pull only where tickets were published, reading their records meanwhile.

    The publications name the subjects (so no stream info is needed) and
    the task ids (so each record is read in the same round trip as the
    pull). Only called while the last look proved every other subject
    empty; when each hinted subject is drained too, that proof is renewed.
    """
    wake = client.wake
    by_token = {names.token(q): q for q in queues}
    plan: list[tuple[int, str, Sequence[str]]] = []
    for subject, ids in hints.items():
        parts = subject.split(".")
        queue = by_token.get(parts[2]) if len(parts) == 4 else None
        if queue is not None:
            plan.append((names.parse_priority(parts[3]), queue, ids))
    plan.sort(key=lambda p: -p[0])
    requeued, wake.idle = wake.requeued, None
    left = limit
    batches: list[int] = []
    targets: list[tuple[str, int, int]] = []  # (queue, priority, batch) of each pull
    wanted: list[str] = []
    for priority, queue, ids in plan:
        if left <= 0:
            break
        batch = left if len(plan) == 1 else min(left, len(ids))
        left -= batch
        batches.append(batch)
        targets.append((queue, priority, batch))
        wanted.extend(ids)
    pulls: list[Awaitable[list[Any]]] = [pull_tickets(client, *target) for target in targets]
    # a record whose revision was announced needs no read (see take).
    wanted = [i for i in dict.fromkeys(wanted) if i not in wake.revisions]
    answers = await gather([*pulls, client.tasks.get_many([names.token(i) for i in wanted])])
    fetched: list[list[Msg]] = answers[: len(pulls)]
    if not any(fetched):
        # The publication that woke us often outruns its consumer's count of the ticket (see
        # consumers.lagging; a sixth of wake-ups on an idle queue): look again once, at once,
        # rather than at the whole stream (two round trips more).
        fetched = await gather(pull_tickets(client, *target) for target in targets)
    msgs = [msg for got in fetched for msg in got]
    claimed = await take(client, msgs, lease, worker_id, dict(zip(wanted, answers[-1], strict=True)))
    # drained: every hinted subject pulled short, and every hinted ticket was among what came
    # (one missing may be taken by another worker, or not stored yet: no proof then).
    seen = {i for m in msgs if (i := ticket_id(m.data)) is not None}
    if (
        len(pulls) == len(plan)
        and all(len(got) < batch for got, batch in zip(fetched, batches, strict=True))
        and seen.issuperset(wanted)
        and wake.requeued == requeued
    ):
        wake.idle = began
    return _best_first(claimed)


async def claim(
    client: QueueClient, queues: Sequence[str], limit: int, lease: float, worker_id: str, wait: float
) -> list[Task]:
    """Claim, and while nothing is ready sleep on ticket publications (or known etas) up to ``wait`` s."""
    wake = client.wake
    # Watched even without a wait (a burst worker): the publications keep the drain's
    # fast path in priority order (see Wakeups.busy_subject).
    await wake.watch(queues)
    if wait <= 0:
        live = await client.paused.live(queues)
        return await claim_ready(client, live, limit, lease, worker_id) if live else []
    every = queues
    deadline = time.monotonic() + wait
    while True:
        tasks: list[Task] = []
        look = True
        queues = await client.paused.live(every)  # a resume pokes the wake-ups: looked at again each round
        if not queues:
            look = False
            wake.take_hints()  # publications in paused queues wake nobody
        elif wake.idle_for(queues, wait) is not None:
            # everything was empty at the last look: only where tickets were published since can hold one.
            look = wake.signals != wake.hints_from
            if look:
                began = (tuple(queues), wake.signals, time.monotonic())
                hints = wake.take_hints()
                if hints is not None:
                    tasks = await _claim_hinted(client, queues, hints, began, limit, lease, worker_id)
        if look and not tasks and wake.idle_for(queues, wait) is None:
            # no proof of idleness, or hinted tickets went elsewhere (or were not stored yet): look everywhere.
            tasks = await claim_ready(client, queues, limit, lease, worker_id)
        left = deadline - time.monotonic()
        if tasks or left <= 0:
            return tasks
        idle = wake.idle_for(queues, wait) if queues else None
        await wake.sleep(wake.hints_from, left if idle is None else min(left, idle))


async def wait_for_work(client: QueueClient, queues: Sequence[str], timeout: float) -> None:
    """Return when a ticket is waiting in ``queues`` or one is published, at most ``timeout`` s."""
    wake = client.wake
    await wake.watch(queues)
    seen = wake.signals
    stream = names.work_stream(client.prefix)
    live = await client.paused.live(queues)  # a paused queue's tickets end no wait; its resume does
    for priority, queue, held in await subjects_holding(client, live) if live else []:
        info = await api(client.nc, f"CONSUMER.INFO.{stream}.{await consumer(client, queue, priority)}")
        pending = int(info.get("num_pending", 0))
        if pending > 0 or held > pending + int(info.get("num_ack_pending", 0)):  # the latter: see consumers.lagging
            return
    await wake.sleep(seen, timeout)
