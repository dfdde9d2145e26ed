"""The task queue's contract: storing tasks and handing them to workers under leases."""

from __future__ import annotations

import builtins
import logging
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio

from omniq.base.operations import QueueOperations
from omniq.capabilities import Capability
from omniq.models import Outcome, Task, TaskEvent, TaskStatus

if TYPE_CHECKING:
    from omniq.base.storage import BaseEventStorage, BaseResultStorage

__all__ = ["BaseTaskQueue", "claim_after_finish", "claim_after_finish_failed"]

logger = logging.getLogger("omniq.backend")


class BaseTaskQueue(QueueOperations):
    """Stores tasks and hands them to workers under leases.

    Ordering: among ready tasks of the requested queues, higher ``priority``
    first, then earlier ``eta`` (a task without one counts as its
    ``created_at``), then enqueue order. Backends may relax ordering across
    different queues, never within one.

    Clocks: lease deadlines are computed and judged on the engine's clock
    alone. ``eta`` (and a result's ``expires_at``) are instants written by a
    client and judged by the engine's clock; a task's ``expires_at`` is judged
    by the worker that takes it. The conformance suite tolerates
    :data:`omniq.testing.CLOCK_SKEW` between the two.

    Bookkeeping fields: ``updated_at`` (None or the enqueue's time at first)
    becomes the engine's now at every change of a task: claim, extend,
    finish, cancel, recover, pause, retry. ``started_at`` and ``worker_id``
    are set by a claim and name the latest attempt; only a RELEASE (an
    attempt handed back unrun) and :meth:`retry` clear them. ``finished_at``
    is set when a task becomes terminal, and only then.
    """

    @abstractmethod
    async def enqueue(self, task: Task) -> str:
        """Store a new PENDING task and wake waiting workers.

        If ``task.unique_key`` is set and a PENDING or RUNNING task with the
        same key exists, nothing is stored and that task's id is returned. A
        key's scope is the whole store (the prefix, schema, database file or
        directory the queue was built on), across queues: a live key in queue
        "mail" holds back the same key enqueued to queue "sms".
        The core passes fresh ids, except :meth:`retry`'s default, which
        enqueues a terminal task's id again: should an id already exist, a
        PENDING or RUNNING task is left as it is, a terminal one is replaced
        by the new task (its attempts, error, ``started_at``, ``finished_at``
        and ``worker_id`` are the new task's; its queue may differ).

        Dependencies (:attr:`Capability.DEPENDENCIES`): a task with
        ``depends_on`` is stored with ``waiting`` = how many of those ids name
        a stored task that is not terminal, counted in the same atomic step
        (dependencies stored earlier in the same ``enqueue_many`` count);
        unknown and terminal ids do not count. While ``waiting > 0`` the task
        is PENDING but not claimable. Every step that makes a task terminal
        (``finish``, ``cancel``, ``recover``) or deletes it (``purge``)
        decrements ``waiting`` of each task waiting on it, in that same step,
        and a task reaching 0 becomes ready (waking workers) at its place
        (priority, then ``eta`` or ``created_at``). Each dependant is thus
        claimed once, when all its dependencies ended; the worker then reads
        them to decide whether it runs or fails with ``DependencyFailed``.
        A dependant that ends first (cancelled while waiting) is counted down
        all the same, so an operator's ``retry`` of it waits only for what is
        still running; a waiting task is no ready backlog (``queue_stats``).
        Without the capability ``waiting`` stays 0 and the worker checks at
        claim, putting back a dependant that came too early.

        Returns:
            the id of the stored task (or of the existing one).
        """

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks; same rules as :meth:`enqueue`, one result per task.

        Backends should override this with a single round trip.
        """
        return [await self.enqueue(task) for task in tasks]

    def can_fuse_events(self, events: BaseEventStorage) -> bool:
        """Whether :meth:`enqueue_recorded` can write events into ``events`` alongside the tasks."""
        return False

    async def enqueue_recorded(
        self, tasks: Sequence[Task], events: Sequence[TaskEvent], storage: BaseEventStorage
    ) -> tuple[list[str], list[TaskEvent]]:
        """:meth:`enqueue_many`, also appending ``events[i]`` (one per task) for each task it stores.

        Called (for a bulk enqueue) only when :meth:`can_fuse_events` returned
        True for ``storage``. An event may become visible only once its task is
        committed, and only for a task this call stored (``ids[i] ==
        tasks[i].id``). Events of stored tasks that the backend did not write
        (another path, a failing event storage) are returned: the caller
        records them as usual. A failing event write never fails the enqueue.

        Returns:
            the ids (as :meth:`enqueue_many`) and the events left to the caller.
        """
        ids = await self.enqueue_many(tasks)
        return ids, [event for event, task, task_id in zip(events, tasks, ids, strict=True) if task.id == task_id]

    async def enqueue_in_transaction(
        self,
        tasks: Sequence[Task],
        connection: object,
        *,
        events: Sequence[TaskEvent] = (),
        storage: BaseEventStorage | None = None,
    ) -> list[str]:
        """Store tasks through ``connection``, a database connection of the caller's, inside its open transaction.

        Same rules as :meth:`enqueue_many`, and the tasks become visible to
        workers only when the caller commits: a rollback enqueues nothing.
        Workers are woken on commit where the engine can say so (NOTIFY), else
        by their next poll. ``events`` (one per task) are written in the same
        transaction, for the tasks stored, when ``storage`` lives in the same
        database, else not at all: whether the caller commits is not known
        here, and an event must never show for a task that was not stored.

        Raises:
            NotSupportedError: the default, for engines without :attr:`Capability.TRANSACTIONAL_ENQUEUE`.
            ConfigurationError: ``connection`` is not one this engine can write through
                (another driver, another database).
        """
        raise self._lacks(
            Capability.TRANSACTIONAL_ENQUEUE, "enqueue inside a caller's transaction: nothing was enqueued"
        )

    def enqueue_blocking(self, tasks: Sequence[Task]) -> list[str]:
        """:meth:`enqueue_many`, run to the end in the calling thread, which runs no event loop.

        Same rules and errors as :meth:`enqueue_many`. Only called after
        :meth:`connect` (in this process), from any thread but the event
        loop's, by several threads at once: the method is thread-safe and
        uses no asyncio object (a driver's blocking client, or the engine's
        own connection under a lock). It shares the engine's statements or
        scripts with the async path: only the transport differs. Workers are
        woken as by :meth:`enqueue_many`.

        Raises:
            NotSupportedError: the default, for engines without :attr:`Capability.BLOCKING_ENQUEUE`
                (the sync API then enqueues through its event loop's thread).
        """
        raise self._lacks(Capability.BLOCKING_ENQUEUE, "enqueue without its event loop: nothing was enqueued")

    def get_blocking(self, task_id: str) -> Task | None:
        """:meth:`get`, run to the end in the calling thread, which runs no event loop.

        The thread rules of :meth:`enqueue_blocking` (after :meth:`connect`,
        any thread but the loop's, several at once) and the engine's own read
        with only the transport changed.

        Raises:
            NotSupportedError: the default, for engines without :attr:`Capability.BLOCKING_READS`
                (the sync API then reads through its event loop's thread).
        """
        raise self._lacks(Capability.BLOCKING_READS, "read without its event loop")

    @abstractmethod
    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks at once, without waiting.

        Each returned task is already RUNNING with ``attempts`` incremented,
        a fresh ``lease_token`` and ``lease_expires_at`` = engine now + ``lease``.
        A record that fails strict decoding is leased like the others and
        returned as a :class:`CorruptTask` (:func:`claimed_task`,
        :func:`salvage_blob`), for the worker to fail: never raise for it, never drop it.
        """

    @abstractmethod
    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a task may have become ready, or after ``timeout`` seconds.

        A hint, not a promise: spurious wake-ups are fine; sleeping past a
        task's ``eta`` by more than the caller's ``timeout`` is not, and
        neither is blocking past ``timeout``. Return at once when work is ready
        already. Engines that can block on a signal (BLMOVE, LISTEN, JetStream
        pull, in-process events) must, instead of polling. An engine without
        one polls: it checks for a ready task at its own interval (an option
        of its constructor, a fraction of a second), which bounds how long a
        new task waits for an idle worker, and returns by ``timeout``. The
        worker passes ``OMNIQ_POLL_INTERVAL`` as ``timeout`` (how long one
        claim waits), never as the polling speed.
        """

    async def claim(
        self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str, wait: float = 0.0
    ) -> list[Task]:
        """Lease up to ``limit`` tasks, waiting up to ``wait`` seconds for one.

        The default combines :meth:`claim_ready` and :meth:`wait_for_work`;
        engines whose blocking primitive also claims (a JetStream pull) override it.
        """
        tasks = await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
        if tasks or wait <= 0:
            return tasks
        deadline = anyio.current_time() + wait
        while not tasks:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            # The engine's own timeout ends the wait: cancelling a blocking call
            # (BLPOP, a pull fetch) mid-flight would cost some drivers a reconnect.
            await self.wait_for_work(queues, remaining)
            tasks = await self.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
        return tasks

    @abstractmethod
    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Heartbeat: push back the deadline of every lease still held.

        ``lease_expires_at`` becomes engine now + ``lease`` and ``updated_at``
        engine now; nothing else changes (status, token, attempts,
        ``started_at``, ``worker_id``).

        Args:
            leases: task id -> lease token.
            lease: seconds from engine now for the new deadline.

        Returns:
            the ids whose lease was extended; the others were lost.
        """

    @abstractmethod
    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes to tasks held under the given leases, as one batch.

        Each outcome is applied only if its task is RUNNING under
        ``outcome.lease_token``; the lease is cleared. ``RETRY``,
        ``RELEASE`` and ``RESCHEDULE`` put the task back to PENDING at
        ``outcome.eta`` (ready at once, keeping its place, when None); ``RELEASE`` also refunds the attempt
        and ``RESCHEDULE`` resets attempts to 0. ``outcome.error`` is stored
        as ``task.error``; terminal outcomes set ``finished_at``.

        ``results`` is passed only when :meth:`can_fuse_results` returned True
        for it: the backend then also stores each accepted outcome's
        ``outcome.result`` in that storage, in the same atomic step.

        Returns:
            one flag per outcome: True when it was accepted.
        """

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
        """:meth:`finish`, then :meth:`claim_ready` of up to ``limit`` tasks; both answers.

        The worker calls it when the outcomes free concurrency slots (see
        :mod:`omniq.flow_control`), so the tasks held for those slots start
        without waiting for a wake-up and another claim. The default makes the
        two calls; an engine overrides it to make them one round trip (the
        claim sees what the finish freed). A failed claim after a recorded
        finish loses nothing: its tasks stay PENDING.
        """
        accepted = await self.finish(outcomes, results=results)
        return accepted, await claim_after_finish(self, queues, limit, lease=lease, worker_id=worker_id)

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """Whether :meth:`finish` can store results into ``results`` atomically."""
        return False

    @abstractmethod
    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None if there is none with that id.

        Raises:
            omniq.errors.SerializationError: the stored record is corrupted
                (as ``get_many`` and ``list`` do).
        """

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks, None for unknown ids (override for one round trip)."""
        return [await self.get(task_id) for task_id in task_ids]

    @abstractmethod
    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first.

        Newest first is :meth:`list_page`'s order: ``created_at`` descending,
        then ``id`` descending (not enqueue order), so pages by ``offset``
        never shuffle tasks created in the same millisecond.
        """

    @abstractmethod
    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""

    @abstractmethod
    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task.

        The task becomes CANCELLED and any lease is cleared, so a worker
        holding it loses the lease (its outcome is dropped; it learns at its
        next heartbeat). ``finished_at`` and ``updated_at`` become engine now;
        ``started_at``, ``worker_id`` and ``attempts`` stay (a running task's
        holder, None for a task never claimed). Cancelling a recurring task ends its schedule.

        Returns:
            True if the task was cancelled, False if unknown or already terminal.
        """

    @abstractmethod
    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal; claim skips paused tasks.

        Returns:
            True if the task exists and is not terminal.
        """

    @abstractmethod
    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all of them by default); return how many."""

    @abstractmethod
    async def recover(self) -> builtins.list[Task]:  # `list` is a method name in this class
        """Requeue RUNNING tasks whose lease deadline is past (engine clock).

        A task with attempts left goes back to PENDING (``eta`` engine now,
        ``finished_at`` None); one whose ``attempts >= max_retries + 1``
        becomes FAILED with :func:`lease_expired_error` and ``finished_at``
        engine now. Either way the lease is cleared and ``updated_at`` is engine
        now, while ``attempts``, ``started_at`` and ``worker_id`` stay: they
        describe the attempt that was lost. Safe to run from many workers at
        once: each expired lease is recovered, and returned, by exactly one call.

        Returns:
            the recovered tasks as they are now.
        """


async def claim_after_finish(
    queue: BaseTaskQueue, queues: Sequence[str], limit: int, *, lease: float, worker_id: str
) -> list[Task]:
    """The claim half of a ``finish_and_claim`` made as a second call: ``queue.claim_ready``, no task on failure.

    For engines whose override claims with a separate :meth:`BaseTaskQueue.claim_ready` after
    their own finish (see :func:`claim_after_finish_failed`).
    """
    if limit <= 0:
        return []
    try:
        return await queue.claim_ready(queues, limit, lease=lease, worker_id=worker_id)
    except Exception as exc:
        return claim_after_finish_failed(exc)


def claim_after_finish_failed(exc: Exception) -> list[Task]:
    """What a ``finish_and_claim`` whose claim failed after its finish was recorded answers: no task.

    The outcomes are recorded and nothing is lost: the tasks stay PENDING for
    the worker's next claim. Logged as a warning. For engines that override
    :meth:`BaseTaskQueue.finish_and_claim` too.
    """
    logger.warning("claim after a finish failed (%s); the worker's next claim takes its tasks", exc)
    return []
