"""What a fetcher does with a ticket, given the task record it points at.

A *ticket* is a work-stream message carrying a task envelope. Tickets only
say "look at this task now": the task KV record decides, and every change of
it is a revision-checked write, so a task is never handed to two leases
however many tickets for it are around. Extra tickets are harmless (they are
dropped when fetched); the invariant kept everywhere is the other way round:
a PENDING task always has at least one live ticket (un-acked, possibly
nak-delayed until its eta), so no task is ever lost. The one exception is a
task waiting for dependencies (``Task.waiting > 0``): it has no ticket, a
stray one is dropped, and the write that ends its wait publishes a fresh one
(:mod:`omniq_nats.dependencies`).

Below :func:`decide`: the ticket on the wire (publishing one, reading its
id or envelope, the ack / nak / term replies to a fetched one).
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from omniq.base import salvage_task
from omniq.errors import SerializationError
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus, decode_task, encode_task
from omniq_nats import subjects as names
from omniq_nats.jetstream import answered
from omniq_nats.records import Record, ack_sequence, claimed, expired, leased_record, with_task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.msg import Msg

    from omniq_nats.connection import QueueClient
    from omniq_nats.kv import Entry

__all__ = [
    "Action",
    "Decision",
    "answer_finish",
    "check_ticket",
    "decide",
    "decode_ticket",
    "nak",
    "publish_tickets",
    "reply",
    "reply_many",
    "ticket_id",
    "ticket_request",
]

logger = logging.getLogger("omniq.nats")

#: an eta this close is due: instances estimate the engine clock independently, a few ms apart.
_SLACK = timedelta(milliseconds=50)


class Action(enum.Enum):
    """What to do with a fetched ticket."""

    CLAIM = "claim"  # write ``record`` (RUNNING under this ticket), then hand the task out
    FAIL = "fail"  # write ``record`` (FAILED: lease expired, attempts used up), then terminate the ticket
    DROP = "drop"  # ack: the task is gone, terminal, or held under another ticket
    LATER = "later"  # nak with ``delay_ns``: not due, paused, or its lease is still live
    PARK = "park"  # write ``record`` (PENDING, held or rate-reserved until its eta), then nak until then


class Decision(msgspec.Struct):
    """The outcome of :func:`decide`."""

    action: Action
    record: Record | None = None
    revision: int = 0  # the revision the write must find (0: the record does not exist yet)
    delay_ns: int = 0
    due: datetime | None = None  # when a LATER ticket becomes claimable (for wake-ups)
    pending: Task | None = None  # a limited CLAIM's task before the claim (what parking it keeps)
    dependants: list[str] = []  # a FAIL's: the tasks waiting on it, which its write releases


def _ns(later: datetime, now: datetime) -> int:
    return max(int((later - now).total_seconds() * 1e9), 0)


def _leased(ticket: Task, data: bytes) -> Record:
    """The record a claim reads; one not even salvageable is rebuilt from its ticket's envelope (a CorruptTask)."""
    try:
        return leased_record(data)
    except SerializationError as exc:
        return Record(salvage_task(msgspec.structs.asdict(ticket), f"corrupted task record: {exc}"))


def decide(
    ticket: Task,
    reply: str,
    entry: Entry | tuple[Record, int] | None,
    *,
    now: datetime,
    lease: float,
    worker_id: str,
    pause_recheck: float,
) -> Decision:
    """Decide what a fetched ticket means for its task.

    Args:
        ticket: the envelope the ticket carries (used only when no record exists yet).
        reply: the ticket delivery's ack subject.
        entry: the task's KV entry, or a record and its revision known
            otherwise (None: the enqueue that published the ticket has not
            written the record yet, so the ticket creates it).
        now: engine time.
        lease: seconds of the lease a claim takes.
        worker_id: the claiming worker.
        pause_recheck: seconds before a paused task's ticket is looked at again.
    """
    if entry is None:
        record, revision = Record(msgspec.structs.replace(ticket, status=TaskStatus.PENDING)), 0
    elif isinstance(entry, tuple):
        record, revision = entry
    elif entry.deleted:
        return Decision(Action.DROP)
    else:
        record, revision = _leased(ticket, entry.value), entry.revision
    task = record.task
    if task.status in TERMINAL_STATUSES:
        return Decision(Action.DROP)
    if task.status is TaskStatus.RUNNING:
        deadline = task.lease_expires_at
        if deadline is not None and deadline > now:
            if ack_sequence(record.ack) == ack_sequence(reply):
                # our own ticket came back while its lease lives: look again when it ends.
                return Decision(Action.LATER, delay_ns=_ns(deadline, now) + 10_000_000, due=deadline)
            return Decision(Action.DROP)
        task = expired(task, now)
        if task.status is TaskStatus.FAILED:
            return Decision(Action.FAIL, with_task(record, task, ""), revision, dependants=record.dependants)
    if task.waiting:
        # waiting for dependencies: the write that ends its wait publishes a fresh ticket.
        return Decision(Action.DROP)
    if task.paused:
        return Decision(Action.LATER, delay_ns=int(pause_recheck * 1e9))
    if task.eta is not None and task.eta > now + _SLACK:
        return Decision(Action.LATER, delay_ns=_ns(task.eta, now), due=task.eta)
    leased = with_task(record, claimed(task, now=now, lease=lease, worker_id=worker_id), reply)
    if task.limits is not None:  # its limits are applied by omniq_nats.flow before the write
        return Decision(Action.CLAIM, leased, revision, pending=task)
    return Decision(Action.CLAIM, leased, revision)


# -- tickets on the wire -----------------------------------------------------------------------------


class _TicketId(msgspec.Struct):
    """Just the id of a ticket's envelope (what a wake-up needs)."""

    id: str


_ticket_id_decoder = msgspec.msgpack.Decoder(_TicketId)


def ticket_id(data: bytes) -> str | None:
    """The task id a ticket carries, read without decoding the whole envelope (None: not a ticket)."""
    try:
        return _ticket_id_decoder.decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_ticket(msg: Msg) -> Task | None:
    """The envelope a fetched ticket carries (None, logged, when it cannot be decoded)."""
    try:
        return decode_task(msg.data)
    except SerializationError:
        logger.error("terminating an undecodable ticket on %s", msg.subject)
        return None


def nak(delay_ns: int) -> bytes:
    """The body of a nak that redelivers after ``delay_ns``.

    A plain NAK redelivers at once; any delay (even 0) goes through the
    server's redelivery timer.
    """
    return b'-NAK {"delay": %d}' % delay_ns if delay_ns > 0 else b"-NAK"


def ticket_request(prefix: str, task: Task) -> tuple[str, bytes, None]:
    """The request that publishes ``task``'s ticket (answered by the work stream)."""
    return names.work_subject(prefix, task.queue, task.priority), encode_task(task), None


def check_ticket(task: Task, answer: Msg) -> None:
    """Raise when the work stream refused ``task``'s ticket.

    Raises:
        SerializationError: the stream answered with an error.
        nats.errors.NoRespondersError: no stream listens on the subject.
    """
    if b'"error"' in answered(answer).data:
        raise SerializationError(f"ticket for task {task.id} rejected: {answer.data.decode(errors='replace')}")


async def publish_tickets(client: QueueClient, tasks: Sequence[Task]) -> None:
    """Publish a ticket per task, pipelined, and check every answer."""
    answers = await client.mux.request_many([ticket_request(client.prefix, t) for t in tasks])
    for task, answer in zip(tasks, answers, strict=True):
        check_ticket(task, answer)


async def reply(client: QueueClient, subject: str, body: bytes) -> None:
    """Ack / nak / term a ticket and wait until the server has applied it."""
    await reply_many(client, [(subject, body)])


async def reply_many(client: QueueClient, replies: Sequence[tuple[str, bytes]]) -> None:
    """:func:`reply` for several tickets, pipelined (an empty subject, no known ticket, is skipped)."""
    requests: list[tuple[str, bytes, None]] = []
    for subject, body in replies:
        if not subject:
            continue
        if body == b"-NAK":
            client.wake.requeued_one()
        requests.append((subject, body, None))
    await client.mux.request_many(requests)


def answer_finish(
    client: QueueClient,
    new: Record,
    now: datetime,
    replies: list[tuple[str, bytes]],
    tickets: list[Task],
) -> None:
    """What a finish does with the task's ticket: ack a success, terminate another end, nak a retry until its eta.

    A retried task whose ticket is not known gets a fresh one (``tickets``).
    """
    task = new.task
    if task.status is TaskStatus.SUCCEEDED:
        replies.append((new.ack, b"+ACK"))
    elif task.status in TERMINAL_STATUSES:
        replies.append((new.ack, b"+TERM"))
    elif new.ack:
        client.remember_due(task.eta)
        replies.append((new.ack, nak(client.clock.ns_until(task.eta, now))))
    else:
        tickets.append(task)
