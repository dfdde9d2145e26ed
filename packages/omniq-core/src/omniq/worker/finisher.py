"""Recording outcomes: the runners' outcomes go to the queue in batches, then results, events and hooks follow.

The finisher sends whatever accumulated while the previous batch was in
flight, in one token-checked ``finish`` call (the commit point, see
``runner.py``), then writes results and events for the outcomes the queue
accepted. A failure is sorted by cause:

* the engine is away (an ``OSError`` / ``TimeoutError``): keep the batch and
  send it again after a back-off; the leases may survive the outage, and if
  they do not, the tasks run again;
* anything else (a record the engine refuses): the same batch would fail
  again, so its outcomes are sent one at a time, and one that keeps failing
  alone is dropped after ``MAX_FINISH_FAILURES`` tries (logged): its lease
  expires and recovery takes over, so it never holds back the others or
  keeps the worker busy for ever.

Results written after the queue's finish (a result storage on another engine,
not fused) whose write fails for an outage are kept, not sent through
``finish`` again (the queue, having accepted those outcomes, would refuse
them): they go with the next batch's results, or on their own every
``RESULT_RETRY_SECONDS`` while no batch comes, at most
``MAX_UNWRITTEN_RESULTS`` of them (the oldest are dropped, logged).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import anyio

from omniq.models import EventType, Outcome, OutcomeKind, Task, TaskEvent, TaskResult, utcnow
from omniq.worker.runner import outcome_event

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from omniq.app import AsyncOmniQ
    from omniq.lifecycle import Lifecycle

__all__ = ["MAX_ERROR_BACKOFF", "MAX_FINISH_FAILURES", "Finisher", "Refill"]

logger = logging.getLogger("omniq.worker")

#: longest pause after a backend error before the loops try again.
MAX_ERROR_BACKOFF = 5.0
#: times one task's outcome may fail to be recorded on its own (not an outage) before it is dropped.
MAX_FINISH_FAILURES = 3
#: how often results whose write failed are tried again while no batch of outcomes comes.
RESULT_RETRY_SECONDS = 1.0
#: results kept for another try while the result storage is away (beyond: the oldest are dropped).
MAX_UNWRITTEN_RESULTS = 10_000
#: errors that mean the engine is away (retry the same call later), not that a record is bad.
_TRANSIENT = (OSError, TimeoutError)  # BackendUnavailableError is a ConnectionError, an OSError

_Item = tuple[Task, Outcome]

#: the events the finisher reports through the lifecycle seam.
_OUTCOME_EVENTS = frozenset(
    {"task_succeeded", "task_failed", "task_retried", "task_released", "task_expired", "task_lease_lost"}
)


class Refill(NamedTuple):
    """How the finisher claims for its pool the tasks a batch's freed concurrency slots let start.

    A batch claims as many tasks as it frees slots (fewer when the pool has less room): a slot passes
    from the task that ends to the next one held for it. The pool's claim loop claims for the rest of
    its room; asking the engine for more here made it pop, skip and park tasks that other workers'
    finishes were about to take (Redis's limited drain: 14,100 -> 17,700 tasks/s).
    """

    queues: Sequence[str]
    lease: float
    room: Callable[[], int]  # free slots of the pool now (0 once it is stopping)
    start: Callable[[list[Task]], Awaitable[None]]  # run them (or hand them back if the pool is stopping)


class Finisher:
    """Collects a pool's outcomes and records them in batches."""

    def __init__(self, app: AsyncOmniQ, worker_id: str, *, fuse: bool, lifecycle: Lifecycle) -> None:
        self.app = app
        self.worker_id = worker_id
        self.fuse = fuse  # the queue writes the results in its finish (Capability.FUSED_RESULTS)
        self.lifecycle = lifecycle
        self.observed = bool(lifecycle.names & _OUTCOME_EVENTS)  # else the per-task notify is skipped
        self.outcomes: list[_Item] = []
        self._ready = anyio.Event()
        self.finishing = 0  # outcome batches being sent to the queue right now
        self.processed = 0
        self.failed = 0  # tasks that failed for good (a retried attempt is not counted)
        # burst mode keeps going until the retries and dependency re-checks it deferred are due.
        self.deferred_until = utcnow()
        # when the last batch was recorded: a finish can make tasks ready (a held task woken when a
        # holder of its concurrency limit leaves), so burst mode's empty claim must begin after it.
        self.recorded_at = utcnow()
        self._failures: dict[str, int] = {}  # task id -> times its outcome alone failed to be recorded
        self.unwritten: list[TaskResult] = []  # accepted outcomes' results the result storage could not take yet
        # outcomes of concurrency-limited tasks not recorded yet: the engine counts them as running.
        self.slots = 0
        self._slots_recorded = anyio.Event()
        self.refill: Refill | None = None  # set by the pool: a batch that frees slots claims with its finish

    @property
    def idle(self) -> bool:
        """Nothing waits to be recorded and nothing is being recorded."""
        return not self.outcomes and not self.finishing

    def add(self, task: Task, outcome: Outcome) -> None:
        """Queue a runner's outcome; the next batch takes it."""
        self.outcomes.append((task, outcome))
        if _holds_slot(task):
            self.slots += 1
        self._ready.set()

    async def slots_recorded(self) -> None:
        """Return once every finished concurrency-limited task's outcome is recorded (its slot freed)."""
        while self.slots:
            self._slots_recorded = anyio.Event()
            await self._slots_recorded.wait()

    async def run(self) -> None:
        """Record outcomes as they come, for ever (the pool cancels it once it has flushed the last ones)."""
        while True:
            if self.unwritten:
                with anyio.move_on_after(RESULT_RETRY_SECONDS):
                    await self._ready.wait()
            else:
                await self._ready.wait()
            self._ready = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Record every queued outcome, retrying after outages; returns once none is left."""
        errors = 0
        while self.outcomes:
            batch, self.outcomes = self.outcomes, []
            slots = _slots_in(batch) if self.slots else 0
            self.finishing += 1
            try:
                with anyio.CancelScope(shield=True):
                    await self._finish_batch(batch, refill=slots)
                self.recorded_at = utcnow()
                errors = 0
                if self._failures:
                    for task, _ in batch:
                        self._failures.pop(task.id, None)
            except Exception as exc:
                failure: Exception | None
                if isinstance(exc, _TRANSIENT):
                    left, failure = batch, exc
                elif len(batch) > 1:
                    # Not the engine being away: the same batch would fail again. Send these
                    # outcomes one at a time, so one that cannot be recorded holds back no other.
                    left, failure = await self._finish_one_by_one(batch)
                else:
                    left, failure = self._keep(batch[0], exc), exc
                if left:
                    errors += 1
                    # Keep the outcomes: the leases may survive the outage; if not, the tasks run again.
                    self.outcomes[:0] = left
                    if slots:
                        slots -= _slots_in(left)  # still to record: their slots stay taken
                    delay = min(MAX_ERROR_BACKOFF, 0.1 * 2**errors)
                    logger.warning("finishing %d task(s) failed (%s); retrying in %.1f s", len(left), failure, delay)
                    await anyio.sleep(delay)
            finally:
                self.finishing -= 1
                if slots:
                    self.slots -= slots
                    if not self.slots:
                        self._slots_recorded.set()
        if self.unwritten:
            with anyio.CancelScope(shield=True):
                await self._write_results([])

    async def _finish_one_by_one(self, batch: list[_Item]) -> tuple[list[_Item], Exception | None]:
        """Finish each outcome alone; return those to try again (all the rest after an outage) and the last error."""
        left: list[_Item] = []
        failure: Exception | None = None
        for index, item in enumerate(batch):
            try:
                with anyio.CancelScope(shield=True):
                    await self._finish_batch([item])
                self._failures.pop(item[0].id, None)
            except Exception as exc:  # noqa: PERF203 - the failure path: one outcome at a time is the point
                failure = exc
                if isinstance(exc, _TRANSIENT):
                    return [*left, *batch[index:]], exc
                left.extend(self._keep(item, exc))
        return left, failure

    def _keep(self, item: _Item, failure: Exception) -> list[_Item]:
        """``[item]`` if its outcome, which failed alone, deserves another try, else ``[]``.

        Once it has failed ``MAX_FINISH_FAILURES`` times it is dropped and logged: its lease expires
        and recovery takes over, so a record that cannot be written never keeps the worker busy for ever.
        """
        task, outcome = item
        count = self._failures[task.id] = self._failures.get(task.id, 0) + 1
        if count < MAX_FINISH_FAILURES:
            return [item]
        del self._failures[task.id]
        logger.error(
            "task %s (%s, queue %s, attempt %s): its %s outcome could not be recorded %d times (%s); "
            "dropped: its lease will expire and recovery takes over",
            task.id,
            task.func,
            task.queue,
            task.attempts,
            outcome.kind.value,
            count,
            failure,
        )
        return []

    async def _finish_batch(self, batch: list[_Item], *, refill: int = 0) -> None:
        app = self.app
        outcomes = [outcome for _, outcome in batch]
        fused = app.result_storage if self.fuse else None
        claimer = self.refill if refill else None
        if claimer is None:
            accepted = await app.task_queue.finish(outcomes, results=fused)
        else:
            # the slots these outcomes free go to the tasks held for them, started here at once
            accepted, claimed = await app.task_queue.finish_and_claim(
                outcomes,
                results=fused,
                queues=claimer.queues,
                limit=min(claimer.room(), refill),
                lease=claimer.lease,
                worker_id=self.worker_id,
            )
            if claimed:
                await claimer.start(claimed)
        results: list[TaskResult] = []
        events: list[TaskEvent] = []
        now = utcnow()
        observed = self.observed
        for (task, outcome), ok in zip(batch, accepted, strict=True):
            if not ok:
                if self.lifecycle.task_lease_lost is not None:
                    self.lifecycle.task_lease_lost(task, self.worker_id)
                continue
            if outcome.kind is not OutcomeKind.RELEASE:
                self.processed += 1  # a released task was handed back, not processed
            if outcome.kind in (OutcomeKind.RELEASE, OutcomeKind.RETRY) and outcome.eta is not None:
                self.deferred_until = max(self.deferred_until, outcome.eta)
            if outcome.result is not None:
                results.append(outcome.result)
            event_type = outcome_event(outcome)
            if event_type is EventType.FAILED:
                self.failed += 1
            events.append(
                TaskEvent(
                    task_id=task.id,
                    type=event_type,
                    timestamp=now,
                    queue=task.queue,
                    func=task.func,
                    attempt=task.attempts,
                    worker_id=self.worker_id,
                    message=outcome.error.message if outcome.error else "",
                )
            )
            if observed:
                self._notify(task, outcome, event_type)
        if (results or self.unwritten) and fused is None:
            await self._write_results(results)
        app.record_events(events)

    async def _write_results(self, results: list[TaskResult]) -> None:
        """Write ``results`` (of outcomes the queue accepted) and those an earlier write failed to; keep them on an outage."""
        pending = [*self.unwritten, *results] if self.unwritten else results
        try:
            await self.app.result_storage.set_many(pending)
        except _TRANSIENT as exc:
            dropped = len(pending) - MAX_UNWRITTEN_RESULTS
            if dropped > 0:
                logger.error("the result storage is away: %d result(s) dropped, the oldest (%s)", dropped, exc)
            self.unwritten = pending[-MAX_UNWRITTEN_RESULTS:]
            logger.warning(
                "writing %d result(s) failed (%s); kept, tried again in %.1f s or with the next batch",
                len(self.unwritten),
                exc,
                RESULT_RETRY_SECONDS,
            )
        except Exception as exc:  # a result the storage refuses: the same write would fail again
            self.unwritten = []
            logger.error(
                "%d result(s) could not be written (%s); dropped: their tasks read as finished without a value (%s)",
                len(pending),
                exc,
                ", ".join(result.task_id for result in pending[:10]),
            )
        else:
            self.unwritten = []

    def _notify(self, task: Task, outcome: Outcome, event_type: EventType) -> None:
        """Report an accepted outcome to the observers (through the lifecycle seam)."""
        lifecycle, worker_id = self.lifecycle, self.worker_id
        if event_type is EventType.SUCCEEDED:
            if lifecycle.task_succeeded is not None and outcome.result is not None:
                lifecycle.task_succeeded(task, outcome.result, worker_id)
        elif event_type is EventType.FAILED:
            if lifecycle.task_failed is not None and outcome.error is not None:
                lifecycle.task_failed(task, outcome.error, worker_id)
        elif event_type is EventType.RETRYING:
            if lifecycle.task_retried is not None and outcome.error is not None:
                delay = max(0.0, (outcome.eta - utcnow()).total_seconds()) if outcome.eta is not None else 0.0
                lifecycle.task_retried(task, outcome.error, worker_id, delay)
        elif event_type is EventType.RELEASED:
            if lifecycle.task_released is not None:
                lifecycle.task_released(task, worker_id)
        elif event_type is EventType.EXPIRED and lifecycle.task_expired is not None:
            lifecycle.task_expired(task)


def _holds_slot(task: Task) -> bool:
    """True for a task under a concurrency limit: until its outcome is recorded it holds a slot."""
    return task.limits is not None and task.limits.concurrency is not None


def _slots_in(items: list[_Item]) -> int:
    return sum(1 for task, _ in items if _holds_slot(task))
