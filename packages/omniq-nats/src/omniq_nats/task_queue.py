"""NatsTaskQueue: JetStream work-queue tickets + revision-checked KV task records.

Layout (names in :mod:`omniq_nats.subjects`):

* ``<prefix>_work``: work-queue stream of *tickets*, one subject and one
  durable pull consumer per (queue, priority). The ticket a worker fetched
  stays un-acked while the task runs: heartbeats send ``+WPI``, completion
  is a synchronous ``+ACK``, a final failure ``+TERM``, a retry ``-NAK`` with
  the backoff as delay. Consumers have ``MaxDeliver=-1``: JetStream never drops a ticket.
* ``<prefix>_tasks``: KV bucket, task id -> :class:`~omniq_nats._records.Record`.
  It is the authority: every transition is a compare-and-set on the key's
  revision, so the token check is real and no task has two live leases.
* ``<prefix>_leases``: stream indexing lease deadlines by engine second; ``recover``
  reads only the seconds that have passed.
* ``<prefix>_unique``: KV bucket, unique key -> id of the task that took it.
* ``<prefix>.rev.<queue>``: core NATS subject (nothing stored) on which an
  enqueue announces the revisions of the records it created. A claimer that
  watches the queue then writes its claim at that revision straight away,
  deciding on the ticket's envelope (the record was created from it); a
  stale announcement only fails the compare-and-set, and the ticket is then
  decided on a fresh read like any other.

The lease passed to ``claim`` is the deadline in the record (engine clock).
AckWait (``ack_wait``) is only the redelivery backstop: a ticket whose
holder died comes back after it and the fetcher takes the task over, even if
nobody runs ``recover``.
"""

from __future__ import annotations

import builtins
import functools
import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from omniq.base import BaseResultStorage, Capability
from omniq.models import TERMINAL_STATUSES, Outcome, Task, TaskStatus
from omniq_nats import subjects as names
from omniq_nats._connection import Bucket, api, gather, mux, pull, scan
from omniq_nats._queue_core import (
    _ACTIVE,
    _CAS_ROUNDS,
    _CHUNK,
    _UNIQUE_GRACE,
    QueueCore,
    _ticket_id,
)
from omniq_nats._records import Record, apply_outcome, decode_record, encode_record, expired, leased_record
from omniq_nats.subjects import KV_OPERATION

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg


__all__ = ["NatsTaskQueue"]

#: seconds a full look at the stream vouches for the best subject while pulls from it come back full.
_BUSY_LOOK = 0.1

logger = logging.getLogger("omniq.nats")


class NatsTaskQueue(QueueCore):
    """Task queue on NATS JetStream (nats-server >= 2.9)."""

    backend_name: ClassVar[str] = "nats"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.DURABLE,
        }
    )

    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix", "ack_wait": "lease_duration"}

    # -- enqueue --------------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task (or return the id holding its unique key)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Publish a ticket per task and create its record, all pipelined: one round trip.

        Each ticket is sent just before its record, on the same connection,
        and carries the whole envelope: if the record write never happens the
        fetcher creates it from the ticket. A record whose ticket was refused
        is deleted again before the error is raised, so an accepted task is
        never a record without a ticket.
        """
        if not tasks:
            return []
        nc, bucket, _ = await self._conn()
        ids: list[str] = []
        fresh: list[Task] = []
        taken: dict[str, str] = {}
        with self._errors():
            for original in tasks:
                task = msgspec.structs.replace(original, status=TaskStatus.PENDING)
                key = task.unique_key
                if key is not None:
                    holder = taken.get(key) or await self._take_unique(task)
                    if holder is not None:
                        taken[key] = holder
                        ids.append(holder)
                        continue
                    taken[key] = task.id
                ids.append(task.id)
                fresh.append(task)
            for start in range(0, len(fresh), _CHUNK // 2):
                await self._create(nc, bucket, fresh[start : start + _CHUNK // 2])
        return ids

    async def _create(self, nc: Client, bucket: Bucket, tasks: Sequence[Task]) -> None:
        """Send each task's ticket and then its record without waiting in between; check both answers."""
        keys = [names.token(t.id) for t in tasks]
        encoded = [encode_record(Record(t)) for t in tasks]
        requests: list[tuple[str, bytes, dict[str, str] | None]] = []
        for task, key, value in zip(tasks, keys, encoded, strict=True):
            requests.append(self._ticket_request(task))
            requests.append((bucket.subject(key), value, {"Nats-Expected-Last-Subject-Sequence": "0"}))
        answers = await mux(nc).request_many(requests)
        failure: BaseException | None = None
        created: list[tuple[Task, int]] = []
        undo: list[tuple[str, bytes, dict[str, str] | None]] = []
        for index, (task, key, value) in enumerate(zip(tasks, keys, encoded, strict=True)):
            ticket: BaseException | None = None
            revision: int | BaseException | None
            try:
                self._check_ticket(task, answers[2 * index])
            except Exception as exc:
                ticket = exc
            try:
                revision = bucket.written(answers[2 * index + 1])
            except Exception as exc:
                revision = exc
            if ticket is not None:
                failure = failure or ticket
                if isinstance(revision, int):  # no record may outlive a refused ticket
                    undo.append(
                        (
                            bucket.subject(key),
                            b"",
                            {KV_OPERATION: "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)},
                        )
                    )
            elif isinstance(revision, BaseException):
                failure = failure or revision  # the ticket is out: its fetcher creates the record
            elif revision is None:
                await self._replace_existing(nc, bucket, task, key, value)
            else:
                created.append((task, revision))
        if len(created) > 1:
            # Not for one task: its claimer reads the record while it pulls the ticket (no later),
            # and one more message to wake for on that path costs an idle worker's latency.
            await self._announce(nc, created)
        if failure is not None:
            try:
                await mux(nc).request_many(undo)
            except Exception as exc:
                logger.warning("could not remove the record of a refused ticket: %s", exc)
            raise failure

    async def _replace_existing(self, nc: Client, bucket: Bucket, task: Task, key: str, value: bytes) -> None:
        """An id that exists already: a live task stays, a finished or deleted one is replaced."""
        for _ in range(_CAS_ROUNDS):
            entry = await bucket.get(key)
            if entry is None:
                if await bucket.update(key, value, 0) is not None:
                    return
                continue
            if not entry.deleted and leased_record(entry.value).task.status in _ACTIVE:
                return  # live (possibly created from our own ticket): re-enqueueing it is a no-op
            if await bucket.update(key, value, entry.revision) is not None:
                # a fetcher may have dropped our ticket while the old state was there.
                await self._publish_ticket(nc, task)
                return

    async def _take_unique(self, task: Task) -> str | None:
        """Take the task's unique key; return the id of a live holder instead when there is one."""
        assert self._unique is not None and self._tasks is not None and task.unique_key is not None
        key, me = names.token(task.unique_key), task.id.encode()
        for _ in range(_CAS_ROUNDS * 2):
            if await self._unique.update(key, me, 0) is not None:
                return None
            entry = await self._unique.get(key)
            if entry is None:
                continue
            holder = entry.value.decode()
            if not entry.deleted and holder != task.id and await self._holds(holder, entry.time):
                return holder
            if await self._unique.update(key, me, entry.revision) is not None:
                return None
        raise RuntimeError(f"unique key {task.unique_key!r} is contended beyond retry")

    async def _holds(self, holder: str, since: datetime | None) -> bool:
        assert self._tasks is not None
        entry = await self._tasks.get(names.token(holder))
        if entry is None:
            # the holder's enqueue may still be writing its record.
            return since is not None and (await self._now() - since).total_seconds() < _UNIQUE_GRACE
        return not entry.deleted and leased_record(entry.value).task.status in _ACTIVE

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Fetch tickets best priority first (one no-wait pull per non-empty subject) and claim their tasks."""
        if limit <= 0 or not queues:
            return []
        nc, _, _ = await self._conn()
        # publications from now on are hints for the next wake-up; this look may prove the rest idle.
        watched = all(q in self._subs for q in queues)
        hints = self._take_hints()
        began, requeued, self._idle = (tuple(queues), self._signals, time.monotonic()), self._requeued, None
        claimed: list[Task] = []
        stream = names.work_stream(self.prefix)
        with self._errors():
            best = self._busy_subject(queues, hints) if watched else None
            if best is not None:
                # Draining: the best subject filled the last pull, so pull it again without asking
                # the stream which subjects hold tickets (a round trip per batch).
                priority, queue = best
                msgs = await pull(nc, stream, await self._consumer(nc, queue, priority), limit)
                if msgs:
                    claimed.extend(await self._take(nc, msgs, lease, worker_id))
                if len(msgs) == limit:
                    claimed.sort(key=lambda t: (-t.priority, t.eta or t.created_at))
                    return claimed
            self._busy = None
            drained = True
            for priority, queue in await self._ready(nc, queues):
                need = limit - len(claimed)
                if need <= 0:
                    drained = False
                    break
                msgs = await pull(nc, stream, await self._consumer(nc, queue, priority), need)
                if need == limit and len(msgs) == need:
                    self._busy = (tuple(queues), priority, queue, time.monotonic())
                drained = drained and len(msgs) < need
                if msgs:
                    claimed.extend(await self._take(nc, msgs, lease, worker_id))
        if watched and drained and self._requeued == requeued:
            self._idle = began
        claimed.sort(key=lambda t: (-t.priority, t.eta or t.created_at))
        return claimed

    def _busy_subject(self, queues: Sequence[str], hints: Mapping[str, Sequence[str]] | None) -> tuple[int, str] | None:
        """(priority, queue) to pull from without a look at the stream, or None.

        Only for watched queues (publications are seen), while the best
        subject filled the last full look's pull, that look is under
        ``_BUSY_LOOK`` s old and no ticket was seen published to another
        subject since (a new, maybe better one). A better ticket that comes
        back without a publication (a redelivery, another worker's nak)
        waits at most ``_BUSY_LOOK`` s.
        """
        busy = self._busy
        if busy is None or hints is None or busy[0] != tuple(queues):
            return None
        if time.monotonic() - busy[3] >= _BUSY_LOOK:
            return None
        subject = names.work_subject(self.prefix, busy[2], busy[1])
        if any(other != subject for other in hints):
            return None
        return busy[1], busy[2]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a ticket is waiting in ``queues`` or one is published, at most ``timeout`` s."""
        nc, _, _ = await self._conn()
        with self._errors():
            await self._watch(nc, queues)
            seen = self._signals
            stream = names.work_stream(self.prefix)
            for priority, queue in await self._ready(nc, queues):
                info = await api(nc, f"CONSUMER.INFO.{stream}.{await self._consumer(nc, queue, priority)}")
                if int(info.get("num_pending", 0)) > 0:
                    return
        await self._sleep(seen, timeout)

    async def claim(
        self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str, wait: float = 0.0
    ) -> list[Task]:
        """Claim, and while nothing is ready sleep on ticket publications (or known etas) up to ``wait`` s."""
        nc, _, _ = await self._conn()
        with self._errors():
            # Watched even without a wait (a burst worker): the publications keep the drain's
            # fast path in priority order (see _busy_subject).
            await self._watch(nc, queues)
        if wait <= 0:
            return await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
        deadline = time.monotonic() + wait
        while True:
            tasks: list[Task] = []
            look = True
            if self._idle_for(queues, wait) is not None:
                # everything was empty at the last look: only where tickets were published since can hold one.
                look = self._signals != self._hints_from
                if look:
                    began = (tuple(queues), self._signals, time.monotonic())
                    hints = self._take_hints()
                    if hints is not None:
                        tasks = await self._claim_hinted(nc, queues, hints, began, limit, lease, worker_id)
            if look and not tasks and self._idle_for(queues, wait) is None:
                # no proof of idleness, or hinted tickets went elsewhere (or were not stored yet): look everywhere.
                tasks = await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
            left = deadline - time.monotonic()
            if tasks or left <= 0:
                return tasks
            idle = self._idle_for(queues, wait)
            await self._sleep(self._hints_from, left if idle is None else min(left, idle))

    async def _claim_hinted(
        self,
        nc: Client,
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
        assert self._tasks is not None
        bucket = self._tasks
        by_token = {names.token(q): q for q in queues}
        plan: list[tuple[int, str, Sequence[str]]] = []
        for subject, ids in hints.items():
            parts = subject.split(".")
            queue = by_token.get(parts[2]) if len(parts) == 4 else None
            if queue is not None:
                plan.append((names.parse_priority(parts[3]), queue, ids))
        plan.sort(key=lambda p: -p[0])
        stream = names.work_stream(self.prefix)
        requeued, self._idle = self._requeued, None
        left = limit
        batches: list[int] = []
        pulls: list[Awaitable[list[Any]]] = []
        wanted: list[str] = []
        with self._errors():
            for priority, queue, ids in plan:
                if left <= 0:
                    break
                batch = left if len(plan) == 1 else min(left, len(ids))
                left -= batch
                batches.append(batch)
                pulls.append(pull(nc, stream, await self._consumer(nc, queue, priority), batch))
                wanted.extend(ids)
            # a record whose revision was announced needs no read (see _take).
            wanted = [i for i in dict.fromkeys(wanted) if i not in self._revisions]
            answers = await gather([*pulls, bucket.get_many([names.token(i) for i in wanted])])
            fetched: list[list[Msg]] = answers[: len(pulls)]
            msgs = [msg for got in fetched for msg in got]
            claimed = await self._take(nc, msgs, lease, worker_id, dict(zip(wanted, answers[-1], strict=True)))
        # drained: every hinted subject pulled short, and every hinted ticket was among what came
        # (one missing may be taken by another worker, or not stored yet: no proof then).
        seen = {i for m in msgs if (i := _ticket_id(m.data)) is not None}
        if (
            len(pulls) == len(plan)
            and all(len(got) < batch for got, batch in zip(fetched, batches, strict=True))
            and seen.issuperset(wanted)
            and self._requeued == requeued
        ):
            self._idle = began
        claimed.sort(key=lambda t: (-t.priority, t.eta or t.created_at))
        return claimed

    # -- leases and outcomes -------------------------------------------------------------------

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push deadlines of leases still held (compare-and-set), then ``+WPI`` their tickets."""
        if not leases:
            return set()
        nc, _, _ = await self._conn()

        def push(record: Record, now: datetime) -> Record | None:
            task = record.task
            if task.status is not TaskStatus.RUNNING or task.lease_token != leases[task.id]:
                return None
            deadline = now + timedelta(seconds=lease)
            return Record(msgspec.structs.replace(task, lease_expires_at=deadline, updated_at=now), record.ack)

        with self._errors():
            done = await self._transition(list(leases), push)
            side: list[Awaitable[Any]] = self._index_leases(nc, [new.task for _, new, _ in done.values()])
            for task_id, (_, new, revision) in done.items():
                self._cache[task_id] = (revision, new)
                if new.ack:
                    side.append(nc.publish(new.ack, b"+WPI"))
            await gather(side)
        return set(done)

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a NatsResultStorage on the same server and prefix."""
        from omniq_nats.result_storage import NatsResultStorage

        return isinstance(results, NatsResultStorage) and results.url == self.url and results.prefix == self.prefix

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes by compare-and-set, then ack / nak / term their tickets synchronously.

        With a fused result storage the accepted results are written in the
        same pipelined batch, after the compare-and-set accepted them (never
        before, so a stale lease's result cannot overwrite the accepted one).
        """
        if not outcomes:
            return []
        nc, _, _ = await self._conn()
        by_id: dict[str, Outcome] = {}
        for outcome in outcomes:
            by_id.setdefault(outcome.task_id, outcome)  # a second outcome for one lease loses

        def apply(record: Record, now: datetime) -> Record | None:
            task = apply_outcome(record.task, by_id[record.task.id], now)
            return None if task is None else Record(task, record.ack)

        with self._errors():
            done = await self._transition(list(by_id), apply)
            now = await self._now()
            replies: list[tuple[str, bytes]] = []
            tickets: list[Task] = []
            for task_id, (_, new, _) in done.items():
                self._cache.pop(task_id, None)
                task = new.task
                if task.status is TaskStatus.SUCCEEDED:
                    replies.append((new.ack, b"+ACK"))
                elif task.status in TERMINAL_STATUSES:
                    replies.append((new.ack, b"+TERM"))
                elif new.ack:
                    self._remember_due(task.eta)
                    replies.append((new.ack, self._nak(self._ns_until(task.eta, now))))
                else:
                    tickets.append(task)
            side: list[Awaitable[Any]] = [self._replies(nc, replies)]
            if tickets:
                side.append(self._publish_tickets(nc, tickets))
            if results is not None and self.can_fuse_results(results):
                accepted = [r for i in done if (r := by_id[i].result) is not None]
                if accepted:
                    side.append(results.set_many(accepted))
            await gather(side)
        return [o.task_id in done and by_id[o.task_id] is o for o in outcomes]

    # -- inspection and admin -------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one pipelined round of direct gets."""
        _, bucket, _ = await self._conn()
        with self._errors():
            entries = await self._chunked([functools.partial(bucket.get, names.token(i)) for i in task_ids])
        return [None if e is None or e.deleted else decode_record(e.value).task for e in entries]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first (reads the whole bucket)."""
        tasks = [
            r.task
            for _, _, r in await self._records()
            if (status is None or r.task.status is status) and (queue is None or r.task.queue == queue)
        ]
        tasks.sort(key=lambda t: t.created_at, reverse=True)
        return tasks[offset : offset + limit]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue (reads the whole bucket)."""
        return sum(
            1
            for _, _, r in await self._records(salvage=True)
            if (status is None or r.task.status is status) and (queue is None or r.task.queue == queue)
        )

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; a held or nak-delayed ticket is acked at once."""
        nc, _, _ = await self._conn()

        def stop(record: Record, now: datetime) -> Record | None:
            if record.task.status not in _ACTIVE:
                return None
            task = msgspec.structs.replace(
                record.task,
                status=TaskStatus.CANCELLED,
                lease_token=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
            return Record(task, "")

        with self._errors():
            done = await self._transition([task_id], stop, use_cache=False)
            if task_id not in done:
                return False
            self._cache.pop(task_id, None)
            await self._reply(nc, done[task_id][0].ack, b"+ACK")
        return True

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a non-terminal task; resuming a PENDING one publishes a fresh ticket."""
        nc, _, _ = await self._conn()

        def flip(record: Record, now: datetime) -> Record | None:
            if record.task.status in TERMINAL_STATUSES:
                return None
            return Record(msgspec.structs.replace(record.task, paused=paused, updated_at=now), record.ack)

        with self._errors():
            done = await self._transition([task_id], flip, use_cache=False)
            if task_id not in done:
                return False
            old, new, revision = done[task_id]
            if new.task.status is TaskStatus.RUNNING:
                self._cache[task_id] = (revision, new)
            if old.task.paused and not paused and new.task.status is TaskStatus.PENDING:
                await self._publish_ticket(nc, new.task)
        return True

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (tombstones, so their tickets are dropped when fetched); return how many."""
        nc, bucket, _ = await self._conn()
        records = await self._records(salvage=True)
        wanted = None if statuses is None else frozenset(TaskStatus(s) for s in statuses)
        doomed = [
            (key, revision, record)
            for key, revision, record in records
            if (queue is None or record.task.queue == queue) and (wanted is None or record.task.status in wanted)
        ]
        with self._errors():
            if queue is None and wanted is None:
                for stream in (names.work_stream(self.prefix), names.leases_stream(self.prefix), bucket.stream):
                    await api(nc, f"STREAM.PURGE.{stream}", {})
                assert self._unique is not None
                await self._unique.clear()
                self._cache.clear()
                return len(doomed)
            deleted = await self._chunked([functools.partial(bucket.delete, k, r) for k, r, _ in doomed])
            count = sum(1 for revision in deleted if revision is not None)
            await self._chunked(
                [
                    functools.partial(self._reply, nc, rec.ack, b"+ACK")
                    for (_, _, rec), rev in zip(doomed, deleted, strict=True)
                    if rev
                ]
            )
            if queue is not None and wanted is None:
                stream = names.work_stream(self.prefix)
                await api(nc, f"STREAM.PURGE.{stream}", {"filter": names.work_subjects(self.prefix, queue)})
            for _, _, record in doomed:
                self._cache.pop(record.task.id, None)
        return count

    async def recover(self) -> builtins.list[Task]:  # `list` in this class is the method
        """Requeue (or fail) RUNNING tasks whose deadline passed, reading only due lease-index seconds."""
        nc, _, _ = await self._conn()
        stream = names.leases_stream(self.prefix)
        with self._errors():
            now = await self._now()
            current = int(now.timestamp())
            info = await api(nc, f"STREAM.INFO.{stream}", {"subjects_filter": names.lease_subjects(self.prefix)})
            due = sorted(
                int(s.rsplit(".", 1)[1])
                for s in (info.get("state") or {}).get("subjects") or {}
                if int(s.rsplit(".", 1)[1]) <= current
            )
            ids: dict[str, None] = {}
            for second in due:
                for msg in await scan(nc, stream, names.lease_subject(self.prefix, second)):
                    ids.update(dict.fromkeys(msg.data.decode().split("\n")))

            def requeue(record: Record, at: datetime) -> Record | None:
                task = record.task
                if task.status is not TaskStatus.RUNNING or (task.lease_expires_at and task.lease_expires_at > at):
                    return None
                return Record(expired(task, at), record.ack)

            done = await self._transition(list(ids), requeue, use_cache=False)
            replies: list[tuple[str, bytes]] = []
            recovered: list[Task] = []
            for task_id, (_, new, _) in done.items():
                self._cache.pop(task_id, None)
                recovered.append(new.task)
                body = b"+TERM" if new.task.status is TaskStatus.FAILED else self._nak(0)
                replies.append((new.ack, body))
            await self._replies(nc, replies)
            # seconds wholly in the past hold nothing live any more: every entry is handled above.
            await gather(
                api(nc, f"STREAM.PURGE.{stream}", {"filter": names.lease_subject(self.prefix, s)})
                for s in due
                if s < current
            )
        if recovered:
            logger.info("recovered %d task(s) whose lease expired", len(recovered))
        return recovered
