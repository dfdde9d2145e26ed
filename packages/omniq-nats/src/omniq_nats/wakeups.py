"""What a claimer knows about where work is, from plain NATS publications (nothing stored).

A claimer subscribes to the ticket subjects of its queues: every ticket
publication wakes it, and names the subject and the task (*hints*), so a
claim right after a wake-up pulls only there. A look that found every subject
empty is an *idle proof*, valid until a publication, a ticket made
deliverable without one (a plain nak of ours, a nak-delayed ticket coming
due) or ``wait`` seconds. While draining, the best subject that filled the
last pull is pulled again without asking the stream (*busy*). Enqueues also
announce the revisions of the records they created on ``<prefix>.rev.<queue>``,
so a claimer can write its claim at once instead of reading the record first.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import TYPE_CHECKING

import anyio
import msgspec

from omniq_nats import subjects as names
from omniq_nats.tickets import ticket_id

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from omniq.models import Task

__all__ = ["Wakeups", "announce"]

_HINTS = 1000  # ticket publications remembered between two claims (wake-up hints)
_REVISIONS = 100_000  # announced record revisions remembered (the oldest are forgotten first)
#: seconds a full look at the stream vouches for the best subject while pulls from it come back full.
_BUSY_LOOK = 0.1

_revisions_encoder = msgspec.msgpack.Encoder()
_revisions_decoder = msgspec.msgpack.Decoder(dict[str, int])


async def announce(nc: Client, prefix: str, created: Sequence[tuple[Task, int]]) -> None:
    """Tell watching claimers the revisions of records just created (fire and forget)."""
    by_queue: dict[str, dict[str, int]] = {}
    for task, revision in created:
        by_queue.setdefault(task.queue, {})[task.id] = revision
    for queue, revisions in by_queue.items():
        await nc.publish(names.revisions_subject(prefix, queue), _revisions_encoder.encode(revisions))


class Wakeups:
    """The wake-up state of one connection's claimer."""

    def __init__(self, nc: Client, prefix: str) -> None:
        self.nc = nc
        self.prefix = prefix
        self.subs: dict[str, Subscription] = {}
        self._revision_subs: dict[str, Subscription] = {}
        #: task id -> revision of the PENDING record its enqueue created from its ticket's envelope.
        self.revisions: dict[str, int] = {}
        self._signal = anyio.Event()
        self.signals = 0
        # Hints: ticket publications seen since signal ``hints_from`` (work subject -> task ids;
        # None once there were too many to keep).
        self._hints: dict[str, list[str]] | None = {}
        self._hinted = 0
        self.hints_from = 0
        #: the last look that found nothing deliverable: (queues, signal count and monotonic time when it began).
        self.idle: tuple[tuple[str, ...], int, float] | None = None
        #: tickets this connection made deliverable again at once (a plain -NAK).
        self.requeued = 0
        #: while draining: (queues, priority, queue, monotonic time of the look) of the best subject.
        self.busy: tuple[tuple[str, ...], int, str, float] | None = None
        self._due: list[float] = []  # epoch seconds (ours) when nak-delayed tickets we know of come back

    def watched(self, queues: Sequence[str]) -> bool:
        """Whether every queue's publications reach us."""
        return all(q in self.subs for q in queues)

    async def watch(self, queues: Sequence[str]) -> None:
        """Subscribe (plain NATS, no JetStream) to ticket subjects: every publish wakes us."""
        added = False
        for queue in queues:
            if queue not in self.subs:
                self._revision_subs[queue] = await self.nc.subscribe(
                    names.revisions_subject(self.prefix, queue), cb=self._on_revisions
                )
                self.subs[queue] = await self.nc.subscribe(names.work_subjects(self.prefix, queue), cb=self._on_ticket)
                added = True
        if added:
            await self.nc.flush()  # the server knows the interest before we look for work

    async def _on_ticket(self, msg: Msg) -> None:
        self.signals += 1
        if self._hints is not None:
            task_id = ticket_id(msg.data)
            if self._hinted >= _HINTS or task_id is None:
                self._hints = None
            else:
                self._hints.setdefault(msg.subject, []).append(task_id)
                self._hinted += 1
        signal, self._signal = self._signal, anyio.Event()
        signal.set()

    async def _on_revisions(self, msg: Msg) -> None:
        try:
            announced = _revisions_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        revisions = self.revisions
        revisions.update(announced)
        if len(revisions) > _REVISIONS:
            for task_id in list(itertools.islice(revisions, len(revisions) - _REVISIONS)):
                del revisions[task_id]

    def take_hints(self) -> dict[str, list[str]] | None:
        """The publications seen since the last call (None: too many were seen to keep them all)."""
        hints, self._hints, self._hinted, self.hints_from = self._hints, {}, 0, self.signals
        return hints

    def requeued_one(self) -> None:
        """A ticket became deliverable with no publication to wake anyone: no earlier look proves idleness."""
        self.requeued += 1
        self.idle = None

    def poke(self) -> None:
        """Work became claimable with no ticket published (a queue resumed): wake every sleeper, prove nothing idle."""
        self.idle = None
        self.busy = None
        self._hints = None  # take_hints says "unknown": the next claim looks everywhere
        self.signals += 1
        signal, self._signal = self._signal, anyio.Event()
        signal.set()

    def remember_due(self, at: float) -> None:
        """A nak-delayed ticket comes back at ``at`` (epoch seconds, our clock)."""
        heapq.heappush(self._due, at)

    def _forget_past_due(self, now: float) -> None:
        while self._due and self._due[0] <= now - 1.0:
            heapq.heappop(self._due)

    def idle_for(self, queues: Sequence[str], wait: float) -> float | None:
        """Seconds for which the last empty look still vouches that ``queues`` hold nothing deliverable.

        None when there is no such look since the hints were last taken, it is
        ``wait`` s old, or a nak-delayed ticket we know of has come due since.
        Tickets that become deliverable with no publication (delays, AckWait
        redeliveries, other instances' plain naks) are thus found within ``wait``,
        as they are by the sleep that follows a look.
        """
        idle = self.idle
        if idle is None or idle[0] != tuple(queues) or idle[1] != self.hints_from:
            return None
        left = wait - (time.monotonic() - idle[2])
        now = time.time()
        self._forget_past_due(now)
        if left <= 0 or (self._due and self._due[0] <= now):
            return None
        return left

    def busy_subject(self, queues: Sequence[str], hints: Mapping[str, Sequence[str]] | None) -> tuple[int, str] | None:
        """(priority, queue) to pull from without a look at the stream, or None.

        Only for watched queues (publications are seen), while the best
        subject filled the last full look's pull, that look is under
        ``_BUSY_LOOK`` s old and no ticket was seen published to another
        subject since (a new, maybe better one). A better ticket that comes
        back without a publication (a redelivery, another worker's nak)
        waits at most ``_BUSY_LOOK`` s.
        """
        busy = self.busy
        if busy is None or hints is None or busy[0] != tuple(queues):
            return None
        if time.monotonic() - busy[3] >= _BUSY_LOOK:
            return None
        subject = names.work_subject(self.prefix, busy[2], busy[1])
        if any(other != subject for other in hints):
            return None
        return busy[1], busy[2]

    async def sleep(self, seen: int, longest: float) -> None:
        """Sleep until a ticket is published (after signal ``seen``), one we nak'd is due, or ``longest`` s."""
        if self.signals != seen:
            return
        now = time.time()
        self._forget_past_due(now)
        if self._due:
            longest = min(longest, max(self._due[0] - now + 0.01, 0.0))
        with anyio.move_on_after(longest):
            await self._signal.wait()
