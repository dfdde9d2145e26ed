"""NatsTaskQueue: JetStream work-queue tickets + revision-checked KV task records.

Layout (names in :mod:`omniq_nats.subjects`):

* ``<prefix>_work``: work-queue stream of *tickets*, one subject and one
  durable pull consumer per (queue, priority). The ticket a worker fetched
  stays un-acked while the task runs: heartbeats send ``+WPI``, completion
  is a synchronous ``+ACK``, a final failure ``+TERM``, a retry ``-NAK`` with
  the backoff as delay. Consumers have ``MaxDeliver=-1``: JetStream never drops a ticket.
* ``<prefix>_tasks``: KV bucket, task id -> :class:`~omniq_nats.records.Record`.
  It is the authority: every transition is a compare-and-set on the key's
  revision, so the token check is real and no task has two live leases.
* ``<prefix>_leases``: stream indexing lease deadlines by engine second; ``recover``
  reads only the seconds that have passed (:mod:`omniq_nats.leases`).
* ``<prefix>_unique``: KV bucket, unique key -> id of the task that took it.
* ``<prefix>_flow``: KV bucket, limit key -> its holders, held tasks and rate state
  (:mod:`~omniq_nats.flow`), and the paused queues (:mod:`~omniq_nats.pauses`).
* ``<prefix>.rev.<queue>``: core NATS subject (nothing stored) on which an
  enqueue announces the revisions of the records it created
  (:mod:`omniq_nats.wakeups`).

Dependencies (:mod:`~omniq_nats.dependencies`): a dependant's record lists
the dependencies it still waits for and has no ticket until the last one
ends; a dependency's record lists its dependants, and the write that ends it
(finish, cancel, recover, a claim failing it, purge's delete) releases them.
Crash backstop: notes in the lease index (:mod:`~omniq_nats.notes`).

The lease passed to ``claim`` is the deadline in the record (engine clock).
AckWait (``ack_wait``) is only the redelivery backstop: a ticket whose
holder died comes back after it and the fetcher takes the task over, even if
nobody runs ``recover``.

The class states the contract and delegates: enqueueing (:mod:`~omniq_nats.enqueueing`),
claiming (:mod:`~omniq_nats.claiming`), finishing (:mod:`~omniq_nats.finishing`), what a fetched ticket means
(:mod:`~omniq_nats.tickets`), compare-and-set changes of records
(:mod:`~omniq_nats.records`), the lease index (:mod:`~omniq_nats.leases`),
the operator's pages, statistics and retry (:mod:`~omniq_nats.operations`),
the worker registry in ``<prefix>_workers`` (:mod:`~omniq_nats.workers`).
"""

from __future__ import annotations

import builtins
import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from omniq.base import BaseResultStorage, BaseTaskQueue, Capability, claim_after_finish
from omniq.constants import DEFAULT_PREFIX
from omniq.models import Outcome, Task, TaskStatus
from omniq.thread_clients import ThreadClients
from omniq_nats import claiming, control, enqueueing, finishing, operations, subjects as names, workers
from omniq_nats.connection import close_queue, normalize_url, open_queue, queue_connection
from omniq_nats.handover import HandOver
from omniq_nats.jetstream import chunked, gather
from omniq_nats.leases import index_leases, recover as recover_leases
from omniq_nats.records import Record, decode_record, read_all, transition, with_task

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping, Sequence

    from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo


__all__ = ["NatsTaskQueue"]


class NatsTaskQueue(BaseTaskQueue):
    """Task queue on NATS JetStream (nats-server >= 2.9)."""

    backend_name: ClassVar[str] = "nats"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.DURABLE,
            Capability.FORK_SAFE,  # omniq.connection.Connection: a forked child opens its own client
            Capability.WORKER_REGISTRY,  # omniq_nats.workers
            Capability.FLOW_CONTROL,  # omniq_nats.flow
            Capability.QUEUE_PAUSE,  # omniq_nats.pauses
            Capability.DEPENDENCIES,  # omniq_nats.dependencies
            Capability.BLOCKING_ENQUEUE,  # omniq.thread_clients: a client per calling thread
            Capability.BLOCKING_READS,  # the same clients
        }
    )
    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix", "ack_wait": "lease_duration"}

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
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
        self.url = normalize_url(url)
        self.prefix = names.check_prefix(prefix)
        self.ack_wait = ack_wait
        self.pause_recheck = pause_recheck
        self._connection = queue_connection(self.url, self.prefix, ack_wait, pause_recheck, options)
        # the sync API's enqueue: a client per calling thread, replaced after a minute unused (its loop
        # runs only during calls, so it cannot answer the server's PINGs in between)
        self._blocking = ThreadClients(
            functools.partial(open_queue, self.url, self.prefix, ack_wait, pause_recheck, options),
            close_queue,
            max_idle=60.0,
        )

    async def connect(self) -> None:
        """Connect and create the streams and buckets (idempotent)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        await self._blocking.aclose()
        await self._connection.close()

    # -- enqueue and claim ------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task (or return the id holding its unique key)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Publish a ticket per task and create its record, all pipelined: one round trip."""
        if not tasks:
            return []
        client = await self._connection.client()
        with self._connection.errors():
            return await enqueueing.enqueue_many(client, tasks)

    def enqueue_blocking(self, tasks: Sequence[Task]) -> list[str]:
        """:meth:`enqueue_many` in the calling thread: the same publishes, on that thread's own client and loop."""
        if not tasks:
            return []
        self._connection.current  # noqa: B018 - connected in this process: the streams exist
        with self._connection.errors():
            return self._blocking.run(lambda client: enqueueing.enqueue_many(client, tasks))

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Fetch tickets best priority first (one no-wait pull per non-empty subject) and claim their tasks."""
        if limit <= 0 or not queues:
            return []
        client = await self._connection.client()
        with self._connection.errors():
            live = await client.paused.live(queues)
            return await claiming.claim_ready(client, live, limit, lease, worker_id) if live else []

    async def claim(
        self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str, wait: float = 0.0
    ) -> list[Task]:
        """Claim, and while nothing is ready sleep on ticket publications (or known etas) up to ``wait`` s."""
        if limit <= 0 or not queues:
            return []
        client = await self._connection.client()
        with self._connection.errors():
            return await claiming.claim(client, queues, limit, lease, worker_id, wait)

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a ticket is waiting in ``queues`` or one is published, at most ``timeout`` s."""
        client = await self._connection.client()
        with self._connection.errors():
            await claiming.wait_for_work(client, queues, timeout)

    # -- leases and outcomes ----------------------------------------------------------------------

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push deadlines of leases still held (compare-and-set), then ``+WPI`` their tickets."""
        if not leases:
            return set()
        client = await self._connection.client()

        def push(record: Record, now: datetime) -> Record | None:
            task = record.task
            if task.status is not TaskStatus.RUNNING or task.lease_token != leases[task.id]:
                return None
            deadline = now + timedelta(seconds=lease)
            return with_task(record, msgspec.structs.replace(task, lease_expires_at=deadline, updated_at=now))

        with self._connection.errors():
            done = await transition(client, list(leases), push)
            side: list[Awaitable[Any]] = index_leases(client, [new.task for _, new, _ in done.values()])
            for task_id, (_, new, revision) in done.items():
                client.cache[task_id] = (revision, new)
                if new.ack:
                    side.append(client.nc.publish(new.ack, b"+WPI"))
            await gather(side)
        return set(done)

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a NatsResultStorage on the same server and prefix."""
        from omniq_nats.result_storage import NatsResultStorage

        return isinstance(results, NatsResultStorage) and results.url == self.url and results.prefix == self.prefix

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes by compare-and-set, then ack / nak / term their tickets (:func:`omniq_nats.finishing.finish`)."""
        return (await self._finish(outcomes, results, None))[0]

    async def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        results: BaseResultStorage | None = None,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[list[bool], list[Task]]:
        """:meth:`finish`, whose freed slots go to their held tasks (:mod:`omniq_nats.handover`), else a claim.

        When some slot was handed over, nothing else is claimed: the other slots woke held tasks
        for any claimer, as a plain finish does.
        """
        client = await self._connection.client()
        with self._connection.errors():
            live = await client.paused.live(queues) if limit > 0 else []
        handover = HandOver(frozenset(live), limit, lease, worker_id) if live else None
        accepted, handed = await self._finish(outcomes, results, handover)
        if handed:
            return accepted, handed
        return accepted, await claim_after_finish(self, queues, limit, lease=lease, worker_id=worker_id)

    async def _finish(
        self, outcomes: Sequence[Outcome], results: BaseResultStorage | None, handover: HandOver | None
    ) -> tuple[list[bool], list[Task]]:
        if not outcomes:
            return [], []
        client = await self._connection.client()
        fused = results if results is not None and self.can_fuse_results(results) else None
        with self._connection.errors():
            return await finishing.finish(client, outcomes, fused, handover)

    # -- inspection and admin ---------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        return (await self.get_many([task_id]))[0]

    def get_blocking(self, task_id: str) -> Task | None:
        """:meth:`get` in the calling thread: the same direct get, on that thread's own client and loop."""
        self._connection.current  # noqa: B018 - connected in this process: the buckets exist
        with self._connection.errors():
            entry = self._blocking.run(lambda client: client.tasks.get(names.token(task_id)))
        return None if entry is None or entry.deleted else decode_record(entry.value).task

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one pipelined round of direct gets."""
        client = await self._connection.client()
        with self._connection.errors():
            entries = await chunked([functools.partial(client.tasks.get, names.token(i)) for i in task_ids])
        return [None if e is None or e.deleted else decode_record(e.value).task for e in entries]

    async def _records(self, *, salvage: bool = False) -> builtins.list[tuple[str, int, Record]]:
        client = await self._connection.client()
        with self._connection.errors():
            return await read_all(client, salvage=salvage)

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> builtins.list[Task]:
        """Return tasks filtered by status and queue, newest first (reads the whole bucket)."""
        tasks = [
            r.task
            for _, _, r in await self._records()
            if (status is None or r.task.status is status) and (queue is None or r.task.queue == queue)
        ]
        tasks.sort(key=lambda t: (t.created_at, t.id), reverse=True)
        return tasks[offset : offset + limit]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue (reads the whole bucket)."""
        return sum(
            1
            for _, _, r in await self._records(salvage=True)
            if (status is None or r.task.status is status) and (queue is None or r.task.queue == queue)
        )

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; a held or nak-delayed ticket is acked at once; its dependants are released."""
        client = await self._connection.client()
        with self._connection.errors():
            return await control.cancel(client, task_id)

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a non-terminal task; resuming a PENDING one not waiting for dependencies publishes a ticket."""
        client = await self._connection.client()
        with self._connection.errors():
            return await control.set_paused(client, task_id, paused)

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (tombstones, so their tickets are dropped when fetched); return how many."""
        client = await self._connection.client()
        with self._connection.errors():
            return await operations.purge(client, queue, statuses)

    async def recover(self) -> builtins.list[Task]:  # `list` in this class is the method
        """Requeue (or fail) RUNNING tasks whose deadline passed, reading only due lease-index seconds."""
        client = await self._connection.client()
        with self._connection.errors():
            return await recover_leases(client)

    # -- operations (omniq_nats.operations, omniq_nats.workers) -----------------------------------

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks, newest first, after ``query.after`` (one scan of the tasks bucket)."""
        client = await self._connection.client()
        with self._connection.errors():
            return await operations.list_page(client, query)

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Per-queue counts, oldest ready age and completions per minute (one scan of the tasks bucket)."""
        client = await self._connection.client()
        with self._connection.errors():
            return await operations.queue_stats(client)

    async def retry(self, task_id: str) -> Task | None:
        """Make a FAILED, CANCELLED or EXPIRED task PENDING with a fresh attempt budget, and ticket it."""
        client = await self._connection.client()
        with self._connection.errors():
            return await operations.retry(client, task_id)

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh the worker's record, live ``ttl`` s from the engine's time stamp of it."""
        client = await self._connection.client()
        with self._connection.errors():
            await workers.register_worker(client, worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker's record."""
        client = await self._connection.client()
        with self._connection.errors():
            await workers.unregister_worker(client, worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers, oldest first (expired records are purged as they are found)."""
        client = await self._connection.client()
        with self._connection.errors():
            return await workers.list_workers(client)

    # -- flow control (omniq_nats.flow: limits at claim; omniq_nats.pauses: paused queues) ---------

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` for every claimer on the server (a resume wakes waiting claimers)."""
        client = await self._connection.client()
        with self._connection.errors():
            await client.paused.set(queue, paused)

    async def paused_queues(self) -> builtins.list[str]:
        """The paused queues, read from the server, sorted."""
        client = await self._connection.client()
        with self._connection.errors():
            return await client.paused.read()
