"""Flow control: per limit key state in the flow bucket, applied when a claim meets a limited task.

Only tasks with ``Task.limits`` come here (:func:`~omniq_nats.tickets.decide`
gives a limited claim its pending task, and the exits below are only called
for limited holders); every other task takes the claim and finish paths it
always took. The rules are :mod:`omniq.flow_control`'s, applied with its
:func:`~omniq.flow_control.admit` on the engine clock.

``<prefix>_flow`` holds one :class:`LimitState` per limit key (``k.<key>``):
the key's holders (lease token -> task id and lease deadline), the first of
its held tasks in claim order (at most :data:`HEAD` of them, the head) and
its rate state ``tat``. Every change is a compare-and-set on the key's
revision, retried on conflict, so the limits hold across every process and
host. Held tasks past the head spill into pages (``w.<key>.<page>``, one
per spill, listed oldest first in the state), written before the state that
names them and read back into the head when it runs short: a state whose
every held task was listed in it grew with the backlog, was rewritten whole
on every claim and exit, and at about 25,000 held tasks of one key outgrew
the server's largest message (a claim then failed with
``PayloadTooLargeError``). Within the head the order is claim order; pages
come back in the order they were spilled, and a task held later that sorts
after the head's last goes to a new page, so equal priorities stay first in,
first out.

* A claim (:func:`admit_claims`) reads its limited candidates' keys, admits
  each candidate in order and writes the states back *before* the task
  records are written. A candidate not admitted is parked: its record
  PENDING with ``eta`` and ``held`` / ``rate_reserved``, its ticket
  nak-delayed until that eta, as for any delayed task. A holder whose
  recorded deadline has passed is checked against its task's record
  (``extend`` pushes deadlines in the records only, so heartbeats cost the
  flow nothing): still RUNNING under that lease, its deadline is brought up
  to date; otherwise it is dropped, so a killed worker's slot comes back
  after its lease, recovered or not.
* A holder's exit (:func:`release`: finish, cancel, recover, purge, or a
  claim that took a slot and then lost its record's compare-and-set) removes
  its lease from the holders and pops the first held task of its key in the
  same write, then makes that task ready: its record unheld with no eta and
  a fresh ticket, which wakes waiting claimers as an enqueue does. It is
  retried until written, however contended (a popped task found no longer
  held is owed and another one popped), so no wake is dropped. The held
  task's old ticket comes back at its eta and is dropped (or nak'd) as any
  extra ticket is. Whatever fails in between, a held task is due at its eta
  (the earliest holder deadline when it was held): a slot is never lost for
  longer than a lease.
* A finish that claims (``finish_and_claim``) passes a :class:`~omniq_nats.handover.HandOver`:
  the slots it frees go to the popped held tasks themselves where its claim
  could take them, leased in that same write (:mod:`omniq_nats.handover`);
  the other popped tasks are woken as above.
"""

from __future__ import annotations

import bisect
import heapq
import random
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio
import msgspec

from omniq.errors import SerializationError
from omniq.flow_control import admit
from omniq.models import TaskStatus
from omniq_nats import subjects as names
from omniq_nats.handover import HandOver, Offer, lease_offered, offer
from omniq_nats.records import CAS_ROUNDS, Record, decode_record, transition, with_task
from omniq_nats.tickets import Action, Decision, publish_tickets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.models import Task
    from omniq_nats.connection import QueueClient

__all__ = ["HEAD", "LimitState", "admit_claims", "exit_of", "release"]

_replace = msgspec.structs.replace


class LimitState(msgspec.Struct, array_like=True):
    """The flow bucket's value for one limit key."""

    #: lease token -> (task id, lease deadline in engine epoch seconds) of the key's holders.
    holders: dict[str, tuple[str, float]] = {}
    #: (-priority, created_at, task id) of the key's held tasks, in claim order.
    held: list[tuple[int, float, str]] = []
    #: the theoretical arrival time of the key's rate (GCRA), engine epoch seconds.
    tat: float | None = None
    #: the pages of held tasks spilled past ``held`` (flow bucket keys :func:`~omniq_nats.subjects.held_page`), oldest first.
    pages: list[str] = []


#: held tasks a key's state lists itself; the others wait in pages (see the module).
HEAD = 1000


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(LimitState).decode
_decode_page = msgspec.msgpack.Decoder(list[tuple[int, float, str]]).decode


def exit_of(task: Task) -> tuple[str, str] | None:
    """(limit key, lease token) of a limited task leaving the RUNNING state ``task`` shows, if it holds a slot."""
    limits = task.limits
    if limits is None or limits.concurrency is None or task.status is not TaskStatus.RUNNING:
        return None
    return None if task.lease_token is None else (limits.key, task.lease_token)


async def _read(client: QueueClient, keys: Sequence[str]) -> dict[str, tuple[LimitState, int, bytes]]:
    """Key -> (state, revision to write at, stored bytes); a missing or unreadable state starts empty."""
    entries = await client.flow.get_many([names.limit_key(k) for k in keys])
    states: dict[str, tuple[LimitState, int, bytes]] = {}
    for key, entry in zip(keys, entries, strict=True):
        state = LimitState()
        if entry is not None and not entry.deleted:
            try:
                state = _decode(entry.value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass  # a broken state is replaced: its holders' leases bound what is lost
        states[key] = (state, 0 if entry is None else entry.revision, b"" if entry is None else entry.value)
    return states


async def _check_holders(client: QueueClient, states: Sequence[LimitState], now: float) -> None:
    """Bring holders whose recorded deadline passed up to date from their records, or drop them."""
    stale = [task_id for state in states for task_id, deadline in state.holders.values() if deadline <= now]
    if not stale:
        return
    ids = list(dict.fromkeys(stale))
    leases: dict[str, tuple[str, float]] = {}
    for task_id, entry in zip(ids, await client.tasks.get_many([names.token(i) for i in ids]), strict=True):
        if entry is None or entry.deleted:
            continue
        try:
            task = decode_record(entry.value).task
        except SerializationError:
            continue
        if task.status is TaskStatus.RUNNING and task.lease_token and task.lease_expires_at is not None:
            leases[task_id] = (task.lease_token, task.lease_expires_at.timestamp())
    for state in states:
        for lease_token, (task_id, deadline) in list(state.holders.items()):
            if deadline > now:
                continue
            lease = leases.get(task_id)
            if lease is not None and lease[0] == lease_token and lease[1] > now:
                state.holders[lease_token] = (task_id, lease[1])
            else:
                del state.holders[lease_token]


def _ns(later: datetime, now: datetime) -> int:
    return max(int((later - now).total_seconds() * 1e9), 0)


def _place(state: LimitState, held: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """List newly held tasks in the head, at their place; return those for a new page (sorted).

    With pages already spilled, a task sorting after the head's last goes to the new page (it comes
    after the spilled ones); past :data:`HEAD`, the head's last ones go too.
    """
    spill = []
    for entry in held:
        if state.pages and (not state.held or entry > state.held[-1]):
            spill.append(entry)
        else:
            bisect.insort(state.held, entry)
    if len(state.held) > HEAD:
        spill += state.held[HEAD:]
        del state.held[HEAD:]
    spill.sort()
    return spill


def _admit_one(state: LimitState, decision: Decision, now: datetime, held: list[tuple[int, float, str]]) -> Decision:
    """Apply the rules to one candidate on its key's ``state`` (changed in place); the final decision.

    A candidate held for a slot is added to ``held``, for :func:`_place` to list.
    """
    pending, record = decision.pending, decision.record
    assert pending is not None and pending.limits is not None and record is not None
    limits = pending.limits
    if pending.rate_reserved and pending.eta is not None and pending.eta > now:
        # a reserved slot starts at its eta, never early (a ticket may come a few ms ahead).
        return Decision(Action.LATER, delay_ns=_ns(pending.eta, now), due=pending.eta)
    if pending.held and state.held:  # only a held task is listed (a fresh one never was; a woken one was popped)
        state.held = [h for h in state.held if h[2] != pending.id]
    stamp = now.timestamp()
    live = [deadline for _, deadline in state.holders.values() if deadline > stamp]
    verdict = admit(pending, stamp, len(live), min(live, default=None), state.tat)
    if verdict.tat is not None:
        state.tat = verdict.tat
    if verdict.claim:
        task = record.task
        if limits.concurrency is not None:
            assert task.lease_token is not None and task.lease_expires_at is not None
            state.holders[task.lease_token] = (task.id, task.lease_expires_at.timestamp())
        if task.held or task.rate_reserved:
            task = _replace(task, held=False, rate_reserved=False)
        return Decision(Action.CLAIM, with_task(record, task), decision.revision, pending=pending)
    assert verdict.eta is not None
    eta = datetime.fromtimestamp(max(verdict.eta, stamp + 1e-3), timezone.utc)  # after now: not ready again
    if verdict.held:
        held.append((-pending.priority, pending.created_at.timestamp(), pending.id))
    parked = _replace(pending, eta=eta, held=verdict.held, rate_reserved=not verdict.held, updated_at=now)
    return Decision(Action.PARK, with_task(record, parked), decision.revision, delay_ns=_ns(eta, now), due=eta)


async def admit_claims(client: QueueClient, decisions: Sequence[Decision]) -> list[Decision]:
    """The final decisions of limited CLAIMs, in order: CLAIM (its slot taken), PARK, or LATER.

    The keys' states are written (compare-and-set, retried on conflict)
    before this returns; a key still contended after the retries answers
    LATER with no delay for its candidates (their tickets come back at once).
    """
    out: list[Decision] = [Decision(Action.LATER)] * len(decisions)
    by_key: dict[str, list[int]] = {}
    for index, decision in enumerate(decisions):
        assert decision.pending is not None and decision.pending.limits is not None
        by_key.setdefault(decision.pending.limits.key, []).append(index)
    todo = list(by_key)
    for _ in range(CAS_ROUNDS):
        if not todo:
            break
        states = await _read(client, todo)
        now = await client.clock.now()
        await _check_holders(client, [state for state, _, _ in states.values()], now.timestamp())
        plans: dict[str, list[tuple[int, Decision]]] = {}
        writes: list[tuple[str, bytes, int]] = []
        pages: dict[str, tuple[str, bytes]] = {}  # key -> the page it spills into, written first
        changed: set[str] = set()
        for key in todo:
            state, revision, stored = states[key]
            held: list[tuple[int, float, str]] = []
            plans[key] = [(i, _admit_one(state, decisions[i], now, held)) for i in by_key[key]]
            spill = _place(state, held)
            if spill:
                page = secrets.token_hex(6)
                state.pages.append(page)
                pages[key] = (names.held_page(key, page), _encode(spill))
            value = _encode(state)
            if value != stored:
                changed.add(key)
                writes.append((names.limit_key(key), value, revision))
        if pages:
            await client.flow.put_many(list(pages.values()))
        written = iter(await client.flow.update_many(writes) if writes else [])
        retry: list[str] = []
        for key in todo:
            if key in changed and next(written) is None:
                retry.append(key)
                if key in pages:  # named by no state: gone, and spilled again on the retry
                    await client.flow.remove(pages[key][0])
                continue
            for index, decision in plans[key]:
                out[index] = decision
        todo = retry
    return out


async def release(
    client: QueueClient, exits: Sequence[tuple[str, str]], handover: HandOver | None = None
) -> list[Task]:
    """Give up the slots of leases that left RUNNING ((limit key, lease token) each); wake one held task per slot.

    With ``handover`` (a finish that claims) a freed slot may go to its key's first held task
    itself (:mod:`omniq_nats.handover`): the write that pops the task adds its new lease to the
    holders. Returns the tasks leased so.
    """
    gone: dict[str, set[str]] = {}
    for key, lease_token in exits:
        gone.setdefault(key, set()).add(lease_token)
    owed: dict[str, int] = {}  # key -> wakes still owed (a popped task that was no longer held)
    leased: list[Task] = []
    lost = 0  # compare-and-sets lost in a row
    # Retried until written, however contended: a lost compare-and-set means another write
    # on the key went through (progress), and giving up would drop the wakes this exit owes.
    while gone or owed:
        if lost >= CAS_ROUNDS:
            await anyio.sleep(random.uniform(0, 0.001 * min(lost, 50)))  # spread the contenders out
        states = await _read(client, list(dict.fromkeys([*gone, *owed])))
        popped, freed, emptied = await _pop(client, states, gone, owed)
        offers: list[Offer] = []
        now = await client.clock.now()
        if handover is not None and len(leased) < handover.limit:
            offers = await offer(client, states, popped, freed, handover, handover.limit - len(leased), now)
        writes = [(names.limit_key(key), _encode(states[key][0]), states[key][1]) for key in popped]
        written = await client.flow.update_many(writes) if writes else []
        lost = lost + 1 if None in written else 0
        woken: dict[str, str] = {}
        taken: list[Offer] = []
        for (key, ids), new_revision in zip(popped.items(), written, strict=True):
            if new_revision is None:
                continue  # moved under us: read and decide again
            gone.pop(key, None)
            owed.pop(key, None)
            mine = [o for o in offers if o.key == key]
            taken.extend(mine)
            woken.update((task_id, key) for task_id in ids[len(mine) :])  # the offers are each key's first
            await _remove_pages(client, key, emptied[key])
        if taken:
            assert handover is not None
            done, moved = await lease_offered(client, taken, handover, now)
            leased.extend(done)
            for o in moved:  # taken by another claim since it was read: its slot goes back
                gone.setdefault(o.key, set()).add(o.lease_token)
        if woken:
            ready = await _make_ready(client, list(woken))
            for task_id, key in woken.items():
                if task_id not in ready:
                    owed[key] = owed.get(key, 0) + 1
    return leased


async def _pop(
    client: QueueClient,
    states: dict[str, tuple[LimitState, int, bytes]],
    gone: dict[str, set[str]],
    owed: dict[str, int],
) -> tuple[dict[str, list[str]], dict[str, int], dict[str, list[str]]]:
    """Drop the ``gone`` holders from ``states`` and pop one held task per slot freed or wake owed.

    Returns key -> the ids popped, key -> the slots freed and key -> the pages read back into the head
    (removed once the state is written), for the keys with something to write; the others leave
    ``gone`` and ``owed``.
    """
    popped: dict[str, list[str]] = {}
    freed: dict[str, int] = {}
    emptied: dict[str, list[str]] = {}
    for key, (state, _, _) in states.items():
        freed[key] = sum(1 for t in gone.get(key, ()) if state.holders.pop(t, None) is not None)
        wanted = freed[key] + owed.get(key, 0)
        emptied[key] = await _refill(client, key, state, wanted)
        wake = state.held[:wanted]
        if not freed[key] and not wake:
            gone.pop(key, None)
            owed.pop(key, None)
            continue
        del state.held[: len(wake)]
        popped[key] = [h[2] for h in wake]
    return popped, freed, emptied


async def _refill(client: QueueClient, key: str, state: LimitState, wanted: int) -> list[str]:
    """Read the oldest pages into the head until it lists ``wanted`` tasks or no page is left; the pages read.

    A page gone or unreadable adds nothing: its tasks are due at their eta, as any held task whose
    wake-up was lost.
    """
    read: list[str] = []
    while len(state.held) < wanted and state.pages:
        page = state.pages.pop(0)
        read.append(page)
        entry = await client.flow.get(names.held_page(key, page))
        if entry is None or entry.deleted:
            continue
        try:
            state.held = list(heapq.merge(state.held, _decode_page(entry.value)))
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return read


async def _remove_pages(client: QueueClient, key: str, pages: Sequence[str]) -> None:
    """Remove pages of ``key`` its state no longer names."""
    for page in pages:
        await client.flow.remove(names.held_page(key, page))


def _unhold(record: Record, now: datetime) -> Record | None:
    task = record.task
    if task.status is not TaskStatus.PENDING or not task.held:
        return None
    return with_task(record, _replace(task, held=False, eta=None, updated_at=now))


async def _make_ready(client: QueueClient, ids: Sequence[str]) -> set[str]:
    """Make held tasks ready at their old place with a fresh ticket; the ids that were still held."""
    done = await transition(client, ids, _unhold, use_cache=False)
    if done:
        await publish_tickets(client, [new.task for _, new, _ in done.values()])
    return set(done)
