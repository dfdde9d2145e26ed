"""The machinery under NatsTaskQueue: connection, tickets, consumers, compare-and-set rounds.

See :mod:`omniq_nats.task_queue` for the design; this module holds the
private helpers so the public class reads as the contract.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from omniq.base import BaseTaskQueue, map_exceptions
from omniq.errors import SerializationError
from omniq.models import Task, TaskStatus, decode_task, encode_task
from omniq_nats import subjects as names
from omniq_nats._connection import (
    DEFAULT_URL,
    NATS_ERRORS,
    Bucket,
    EngineClock,
    Entry,
    answered,
    api,
    ensure_kv,
    ensure_stream,
    gather,
    mux,
    open_connection,
)
from omniq_nats._records import Record, decode_record, encode_record, leased_record
from omniq_nats._tickets import Action, Decision, decide

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
    from datetime import datetime

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription


__all__ = ["QueueCore"]

logger = logging.getLogger("omniq.nats")

_ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
_CAS_ROUNDS = 5  # compare-and-set retries before a contended ticket is handed back
_UNIQUE_GRACE = 60.0  # seconds a unique key counts as held while its task's record is being written
_CHUNK = 500  # requests in flight per pipelined batch
_HINTS = 1000  # ticket publications remembered between two claims (wake-up hints)
_REVISIONS = 100_000  # announced record revisions remembered (the oldest are forgotten first)


class _TicketId(msgspec.Struct):
    """Just the id of a ticket's envelope (what a wake-up needs)."""

    id: str


_ticket_id_decoder = msgspec.msgpack.Decoder(_TicketId)
_revisions_encoder = msgspec.msgpack.Encoder()
_revisions_decoder = msgspec.msgpack.Decoder(dict[str, int])


def _ticket_id(data: bytes) -> str | None:
    try:
        return _ticket_id_decoder.decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _decode_ticket(msg: Msg) -> Task | None:
    try:
        return decode_task(msg.data)
    except SerializationError:
        logger.error("terminating an undecodable ticket on %s", msg.subject)
        return None


class QueueCore(BaseTaskQueue):
    """Connection, helpers and compare-and-set rounds shared by the task queue's methods."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "omniq",
        ack_wait: float = 30.0,
        pause_recheck: float = 60.0,
        **options: Any,
    ) -> None:
        """Create an unconnected queue.

        Args:
            url: ``nats://[user:password@]host:port`` (default ``nats://127.0.0.1:4222``).
            prefix: prefix of every stream, bucket and subject.
            ack_wait: consumer AckWait in seconds: how long a ticket stays with a
                silent holder before JetStream redelivers it (the recovery backstop).
            pause_recheck: seconds between looks at a paused task's ticket.
            **options: passed to :func:`nats.connect`.
        """
        self.url = url or DEFAULT_URL
        self.prefix = names.check_prefix(prefix)
        self.ack_wait = ack_wait
        self.pause_recheck = pause_recheck
        self._options = options
        self._nc: Client | None = None
        self._tasks: Bucket | None = None
        self._unique: Bucket | None = None
        self._clock: EngineClock | None = None
        self._consumers: set[str] = set()
        # task id -> (revision, record) as this instance last wrote it: finish and extend
        # try that revision first and re-read only when the compare-and-set says it moved.
        self._cache: dict[str, tuple[int, Record]] = {}
        self._subs: dict[str, Subscription] = {}
        self._revision_subs: dict[str, Subscription] = {}
        # task id -> revision of the PENDING record its enqueue created from the envelope its ticket
        # carries (announced by the enqueuer): a claim then writes at once instead of reading first.
        self._revisions: dict[str, int] = {}
        self._signal = anyio.Event()
        self._signals = 0
        # Wake-up hints: ticket publications seen since signal ``_hints_from`` (work subject ->
        # task ids; None once there were too many to keep).
        self._hints: dict[str, list[str]] | None = {}
        self._hinted = 0
        self._hints_from = 0
        # The last look that found no deliverable ticket in any subject of some queues:
        # (queues, signal count when it began, monotonic time when it began).
        self._idle: tuple[tuple[str, ...], int, float] | None = None
        self._requeued = 0  # tickets this instance made deliverable again at once (a plain -NAK)
        # While draining: (queues, priority, queue, monotonic time of the look) of the best subject,
        # whose last pull came back full (see NatsTaskQueue._busy_subject).
        self._busy: tuple[tuple[str, ...], int, str, float] | None = None
        self._due: list[float] = []  # epoch seconds when nak-delayed tickets we know of come back

    # -- life cycle ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with map_exceptions(NATS_ERRORS, url=self.url):
            yield

    async def connect(self) -> None:
        """Connect and create the streams and buckets (idempotent)."""
        if self._nc is not None:
            return
        nc = await open_connection(self.url, "omniq-task-queue", **self._options)
        try:
            with self._errors():
                p = self.prefix
                work = StreamConfig(
                    name=names.work_stream(p),
                    subjects=[f"{p}.work.>"],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    num_replicas=1,
                )
                leases = StreamConfig(
                    name=names.leases_stream(p),
                    subjects=[names.lease_subjects(p)],
                    storage=StorageType.FILE,
                    max_age=7 * 86400.0,
                    num_replicas=1,
                )
                await ensure_stream(nc, work)
                await ensure_stream(nc, leases)
                tasks = await ensure_kv(nc, names.tasks_bucket(p))
                self._unique = await ensure_kv(nc, names.unique_bucket(p))
                clock = EngineClock(nc, tasks.stream, tasks.subject(names.CLOCK_KEY))
                await clock.sync()
        except BaseException:
            await nc.close()
            raise
        self._nc, self._tasks, self._clock = nc, tasks, clock

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        nc, self._nc = self._nc, None
        self._subs.clear()
        self._revision_subs.clear()
        self._revisions.clear()
        self._consumers.clear()
        self._cache.clear()
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                logger.debug("error while closing the NATS connection", exc_info=True)

    async def _conn(self) -> tuple[Client, Bucket, EngineClock]:
        if self._nc is None:
            await self.connect()
        assert self._nc is not None and self._tasks is not None and self._clock is not None
        return self._nc, self._tasks, self._clock

    # -- small helpers ------------------------------------------------------------------------

    async def _now(self) -> datetime:
        assert self._clock is not None
        return await self._clock.now()

    async def _reply(self, nc: Client, subject: str, body: bytes) -> None:
        """Ack / nak / term a ticket and wait until the server has applied it."""
        await self._replies(nc, [(subject, body)])

    async def _replies(self, nc: Client, replies: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`_reply` for several tickets, pipelined."""
        requests: list[tuple[str, bytes, None]] = []
        for subject, body in replies:
            if not subject:
                continue
            if body == b"-NAK":
                # deliverable again with no publication to wake anyone: no look before this proves idleness.
                self._requeued += 1
                self._idle = None
            requests.append((subject, body, None))
        await mux(nc).request_many(requests)

    @staticmethod
    def _nak(delay_ns: int) -> bytes:
        # a plain NAK redelivers at once; any delay (even 0) goes through the server's redelivery timer.
        return b'-NAK {"delay": %d}' % delay_ns if delay_ns > 0 else b"-NAK"

    def _ticket_request(self, task: Task) -> tuple[str, bytes, None]:
        return names.work_subject(self.prefix, task.queue, task.priority), encode_task(task), None

    @staticmethod
    def _check_ticket(task: Task, reply: Msg) -> None:
        if b'"error"' in answered(reply).data:
            raise SerializationError(f"ticket for task {task.id} rejected: {reply.data.decode(errors='replace')}")

    async def _publish_ticket(self, nc: Client, task: Task) -> None:
        await self._publish_tickets(nc, [task])

    async def _publish_tickets(self, nc: Client, tasks: Sequence[Task]) -> None:
        answers = await mux(nc).request_many([self._ticket_request(t) for t in tasks])
        for task, reply in zip(tasks, answers, strict=True):
            self._check_ticket(task, reply)

    def _index_leases(self, nc: Client, tasks: Sequence[Task]) -> list[Awaitable[None]]:
        """Add the tasks to the lease index under their deadline seconds (fire and forget).

        One message per second, holding the ids one per line.
        """
        by_second: dict[int, list[str]] = {}
        for task in tasks:
            assert task.lease_expires_at is not None
            by_second.setdefault(int(task.lease_expires_at.timestamp()), []).append(task.id)
        return [
            nc.publish(names.lease_subject(self.prefix, second), "\n".join(ids).encode())
            for second, ids in by_second.items()
        ]

    def _remember_due(self, moment: datetime | None) -> None:
        if moment is not None:
            heapq.heappush(self._due, moment.timestamp() - (self._clock.offset if self._clock else 0.0))

    async def _chunked(self, calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(calls), _CHUNK):
            out.extend(await gather(call() for call in calls[start : start + _CHUNK]))
        return out

    # -- claim ----------------------------------------------------------------------------------

    async def _ready(self, nc: Client, queues: Sequence[str]) -> list[tuple[int, str]]:
        """(priority, queue) pairs that have tickets, best first."""
        stream = names.work_stream(self.prefix)
        infos = await gather(
            api(nc, f"STREAM.INFO.{stream}", {"subjects_filter": names.work_subjects(self.prefix, q)}) for q in queues
        )
        found: list[tuple[int, int, str]] = []
        for index, (queue, info) in enumerate(zip(queues, infos, strict=True)):
            subjects = (info.get("state") or {}).get("subjects") or {}
            found.extend((-names.parse_priority(s.rsplit(".", 1)[1]), index, queue) for s in subjects)
        found.sort()
        return [(-neg, queue) for neg, _, queue in found]

    async def _consumer(self, nc: Client, queue: str, priority: int) -> str:
        name = names.consumer_name(queue, priority)
        if name not in self._consumers:
            stream = names.work_stream(self.prefix)
            config = {
                "durable_name": name,
                "filter_subject": names.work_subject(self.prefix, queue, priority),
                "deliver_policy": "all",
                "ack_policy": "explicit",
                "ack_wait": int(self.ack_wait * 1e9),
                "max_deliver": -1,
                "max_ack_pending": -1,
                "replay_policy": "instant",
            }
            await api(nc, f"CONSUMER.DURABLE.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
            self._consumers.add(name)
        return name

    def _take_hints(self) -> dict[str, list[str]] | None:
        """The publications seen since the last call (None: too many were seen to keep them all)."""
        hints, self._hints, self._hinted, self._hints_from = self._hints, {}, 0, self._signals
        return hints

    def _idle_for(self, queues: Sequence[str], wait: float) -> float | None:
        """Seconds for which the last empty look still vouches that ``queues`` hold nothing deliverable.

        None when there is no such look since the hints were last taken, it is
        ``wait`` s old, or a nak-delayed ticket we know of has come due since.
        Tickets that become deliverable with no publication (delays, AckWait
        redeliveries, other instances' plain naks) are thus found within ``wait``,
        as they are by the sleep that follows a look.
        """
        idle = self._idle
        if idle is None or idle[0] != tuple(queues) or idle[1] != self._hints_from:
            return None
        left = wait - (time.monotonic() - idle[2])
        now = time.time()
        while self._due and self._due[0] <= now - 1.0:
            heapq.heappop(self._due)
        if left <= 0 or (self._due and self._due[0] <= now):
            return None
        return left

    async def _take(
        self,
        nc: Client,
        msgs: list[Msg],
        lease: float,
        worker_id: str,
        read: Mapping[str, Entry | None] | None = None,
    ) -> list[Task]:
        """Turn fetched tickets into claims (or drops / naks), with compare-and-set retries.

        ``read`` holds records already read (by task id), each read after its
        ticket was published. They save the first round its reads, but only
        a claim is decided on them (its compare-and-set proves the record
        unchanged); a ticket they would drop or nak is looked at again.
        """
        assert self._tasks is not None
        bucket = self._tasks
        prefetched: dict[str, Entry | tuple[Record, int] | None] = dict(read or {})
        todo: list[tuple[Msg, Task]] = []
        announced = self._revisions
        for msg in msgs:
            ticket = _decode_ticket(msg)
            if ticket is None:
                await self._reply(nc, msg.reply, b"+TERM")
                continue
            todo.append((msg, ticket))
            revision = announced.pop(ticket.id, None) if announced else None
            if revision is not None and ticket.id not in prefetched:
                # the enqueue created the record at ``revision`` from this very envelope (a stale
                # announcement only costs a failed compare-and-set and a read).
                prefetched[ticket.id] = (Record(ticket), revision)
        won: list[Task] = []
        for _ in range(_CAS_ROUNDS):
            if not todo:
                break
            decided, retry = await self._decide(todo, prefetched, lease, worker_id)
            prefetched.clear()
            writes: list[tuple[str, bytes, int]] = []
            for _, ticket, decision in decided:
                if decision.action in (Action.CLAIM, Action.FAIL):
                    assert decision.record is not None
                    writes.append((names.token(ticket.id), encode_record(decision.record), decision.revision))
            written = iter(await bucket.update_many(writes) if writes else [])
            replies: list[tuple[str, bytes]] = []
            fresh: list[Task] = []
            for msg, ticket, decision in decided:
                if decision.action is Action.DROP:
                    replies.append((msg.reply, b"+ACK"))
                elif decision.action is Action.LATER:
                    self._remember_due(decision.due)
                    replies.append((msg.reply, self._nak(decision.delay_ns)))
                else:
                    revision = next(written)
                    if revision is None:
                        retry.append((msg, ticket))
                        continue
                    assert decision.record is not None
                    task = decision.record.task
                    if decision.action is Action.FAIL:
                        replies.append((msg.reply, b"+TERM"))
                        continue
                    self._cache[task.id] = (revision, decision.record)
                    fresh.append(task)
                    won.append(msgspec.structs.replace(task))
            await gather([self._replies(nc, replies), *self._index_leases(nc, fresh)])
            todo = retry
        # still contended: let the tickets come back
        await self._replies(nc, [(msg.reply, self._nak(0)) for msg, _ in todo])
        return won

    async def _decide(
        self,
        todo: Sequence[tuple[Msg, Task]],
        read: Mapping[str, Entry | tuple[Record, int] | None],
        lease: float,
        worker_id: str,
    ) -> tuple[list[tuple[Msg, Task, Decision]], list[tuple[Msg, Task]]]:
        """Read the records (those not in ``read``) and decide each ticket; early reads decide only claims."""
        assert self._tasks is not None
        bucket = self._tasks
        unread = list(dict.fromkeys(t.id for _, t in todo if t.id not in read))
        entries = await bucket.get_many([names.token(i) for i in unread]) if unread else []
        fresh = dict(zip(unread, entries, strict=True))
        now = await self._now()
        decided: list[tuple[Msg, Task, Decision]] = []
        retry: list[tuple[Msg, Task]] = []
        for msg, ticket in todo:
            early = ticket.id not in fresh
            entry = read[ticket.id] if early else fresh[ticket.id]
            decision = decide(
                ticket, msg.reply, entry, now=now, lease=lease, worker_id=worker_id, pause_recheck=self.pause_recheck
            )
            if early and decision.action not in (Action.CLAIM, Action.FAIL):
                # only a write's compare-and-set proves an early read current: read again.
                retry.append((msg, ticket))
            else:
                decided.append((msg, ticket, decision))
        return decided, retry

    # -- waiting ----------------------------------------------------------------------------------

    async def _on_ticket(self, msg: Msg) -> None:
        self._signals += 1
        if self._hints is not None:
            task_id = _ticket_id(msg.data)
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
        revisions = self._revisions
        revisions.update(announced)
        if len(revisions) > _REVISIONS:
            for task_id in list(itertools.islice(revisions, len(revisions) - _REVISIONS)):
                del revisions[task_id]

    async def _announce(self, nc: Client, created: Sequence[tuple[Task, int]]) -> None:
        """Tell watching claimers the revisions of records just created (fire and forget)."""
        by_queue: dict[str, dict[str, int]] = {}
        for task, revision in created:
            by_queue.setdefault(task.queue, {})[task.id] = revision
        for queue, revisions in by_queue.items():
            await nc.publish(names.revisions_subject(self.prefix, queue), _revisions_encoder.encode(revisions))

    async def _watch(self, nc: Client, queues: Sequence[str]) -> None:
        """Subscribe (plain NATS, no JetStream) to ticket subjects: every publish wakes us."""
        added = False
        for queue in queues:
            if queue not in self._subs:
                self._revision_subs[queue] = await nc.subscribe(
                    names.revisions_subject(self.prefix, queue), cb=self._on_revisions
                )
                self._subs[queue] = await nc.subscribe(names.work_subjects(self.prefix, queue), cb=self._on_ticket)
                added = True
        if added:
            await nc.flush()  # the server knows the interest before we look for work

    async def _sleep(self, seen: int, longest: float) -> None:
        """Sleep until a ticket is published (after signal ``seen``), one we nak'd is due, or ``longest`` s."""
        if self._signals != seen:
            return
        now = time.time()
        while self._due and self._due[0] <= now - 1.0:
            heapq.heappop(self._due)
        if self._due:
            longest = min(longest, max(self._due[0] - now + 0.01, 0.0))
        with anyio.move_on_after(longest):
            await self._signal.wait()

    async def _transition(
        self, ids: Sequence[str], change: Callable[[Record, datetime], Record | None], *, use_cache: bool = True
    ) -> dict[str, tuple[Record, Record, int]]:
        """Apply ``change`` to each task's record by compare-and-set, retrying lost races.

        Returns:
            id -> (old record, new record, new revision) for every change written.
        """
        _, bucket, _ = await self._conn()
        done: dict[str, tuple[Record, Record, int]] = {}
        known: dict[str, tuple[int, Record] | None] = {}
        if use_cache:
            known = {i: self._cache[i] for i in ids if i in self._cache}
        todo = list(dict.fromkeys(ids))
        for _ in range(_CAS_ROUNDS):
            if not todo:
                break
            missing = [i for i in todo if known.get(i) is None]
            entries = await bucket.get_many([names.token(i) for i in missing]) if missing else []
            for task_id, entry in zip(missing, entries, strict=True):
                known[task_id] = (
                    None if entry is None or entry.deleted else (entry.revision, leased_record(entry.value))
                )
            now = await self._now()
            plans: list[tuple[str, Record, Record, int]] = []
            for task_id in todo:
                current = known.get(task_id)
                if current is None:
                    continue
                new = change(current[1], now)
                if new is not None:
                    plans.append((task_id, current[1], new, current[0]))
            revisions = await bucket.update_many(
                [(names.token(i), encode_record(new), rev) for i, _, new, rev in plans]
            )
            todo = []
            for (task_id, old, new, _), revision in zip(plans, revisions, strict=True):
                if revision is None:
                    known[task_id] = None  # moved under us: re-read and decide again
                    self._cache.pop(task_id, None)
                    todo.append(task_id)
                else:
                    done[task_id] = (old, new, revision)
        return done

    @staticmethod
    def _ns_until(moment: datetime | None, now: datetime) -> int:
        if moment is None:
            return 0
        return max(int((moment - now).total_seconds() * 1e9), 0)

    async def _records(self, salvage: bool = False) -> list[tuple[str, int, Record]]:
        """Every record; a corrupted one raises SerializationError, or comes back salvaged with ``salvage``."""
        _, bucket, _ = await self._conn()
        with self._errors():
            entries = await bucket.entries()
        decode = leased_record if salvage else decode_record
        return [(key, entry.revision, decode(entry.value)) for key, entry in entries if "." not in key]
