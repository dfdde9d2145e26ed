"""What a fetcher does with a ticket, given the task record it points at.

A *ticket* is a work-stream message carrying a task envelope. Tickets only
say "look at this task now": the task KV record decides, and every change of
it is a revision-checked write, so a task is never handed to two leases
however many tickets for it are around. Extra tickets are harmless (they are
dropped when fetched); the invariant kept everywhere is the other way round:
a PENDING task always has at least one live ticket (un-acked, possibly
nak-delayed until its eta), so no task is ever lost.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from omniq.base import salvage_task
from omniq.errors import SerializationError
from omniq.models import TERMINAL_STATUSES, Task, TaskStatus
from omniq_nats._records import Record, ack_sequence, claimed, expired, leased_record

if TYPE_CHECKING:
    from omniq_nats._connection import Entry

__all__ = ["Action", "Decision", "decide"]

#: an eta this close is due: instances estimate the engine clock independently, a few ms apart.
_SLACK = timedelta(milliseconds=50)


class Action(enum.Enum):
    """What to do with a fetched ticket."""

    CLAIM = "claim"  # write ``record`` (RUNNING under this ticket), then hand the task out
    FAIL = "fail"  # write ``record`` (FAILED: lease expired, attempts used up), then terminate the ticket
    DROP = "drop"  # ack: the task is gone, terminal, or held under another ticket
    LATER = "later"  # nak with ``delay_ns``: not due, paused, or its lease is still live


class Decision(msgspec.Struct):
    """The outcome of :func:`decide`."""

    action: Action
    record: Record | None = None
    revision: int = 0  # the revision the write must find (0: the record does not exist yet)
    delay_ns: int = 0
    due: datetime | None = None  # when a LATER ticket becomes claimable (for wake-ups)


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
            return Decision(Action.FAIL, Record(task, ""), revision)
    if task.paused:
        return Decision(Action.LATER, delay_ns=int(pause_recheck * 1e9))
    if task.eta is not None and task.eta > now + _SLACK:
        return Decision(Action.LATER, delay_ns=_ns(task.eta, now), due=task.eta)
    return Decision(Action.CLAIM, Record(claimed(task, now=now, lease=lease, worker_id=worker_id), reply), revision)
