"""The worker pool: claim in batches, run, heartbeat, finish in batches, shut down gracefully.

One pool is four cooperating loops on one event loop:

* claim: leases as many tasks as there are free slots, in one call, and
  starts a runner for each; waits on the backend's wake-up when idle;
* heartbeat: every ``heartbeat_interval`` extends every held lease in one
  call, and stops runners whose lease was lost (cancelled, or expired);
* finisher: sends the runners' outcomes to the queue in batches (whatever
  accumulated while the previous batch was in flight), then writes results
  and events for the accepted ones;
* sweeper: every ``sweep_interval`` recovers tasks whose lease expired
  (their worker died), from any worker.

Shutdown (``stop()``, SIGTERM, SIGINT): stop claiming, give in-flight tasks
``shutdown_grace`` seconds, cancel the rest and RELEASE them so another
worker gets them at once, flush outcomes and events. A second signal ends the
grace period. A stopping pool never claims again: tasks that a claim already
in flight returns are handed back unstarted, and cancelled tasks are released
only once that claim is over, so it cannot take them back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import msgspec

from omniq import plugins
from omniq.config import WorkerType
from omniq.constants import HOUSEKEEPING_SECONDS
from omniq.errors import ConfigurationError
from omniq.models import EventType, Outcome, OutcomeKind, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.worker.executors import Executor, ProcessExecutor, ThreadExecutor
from omniq.worker.runner import execute, failed_outcome, outcome_event

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ

__all__ = ["AsyncWorkerPool"]

logger = logging.getLogger("omniq.worker")

#: burst mode's allowance for an engine clock a little behind the worker's.
BURST_CLOCK_MARGIN = timedelta(seconds=0.1)
#: longest pause after a backend error before the loops try again.
MAX_ERROR_BACKOFF = 5.0
#: times one task's outcome may fail to be recorded on its own (not an outage) before it is dropped.
MAX_FINISH_FAILURES = 3
#: errors that mean the engine is away (retry the same call later), not that a record is bad.
_TRANSIENT = (OSError, TimeoutError)  # BackendUnavailableError is a ConnectionError, an OSError


class _Running:
    """One claimed task being run: its asyncio task, and whether its lease was lost."""

    __slots__ = ("cancelled", "future", "task")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.future: asyncio.Task[None] | None = None
        self.cancelled = False  # lease lost: drop the outcome

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()


class AsyncWorkerPool:
    """Runs tasks of one app; ``await start()`` until ``stop()`` (or drained, in burst mode)."""

    def __init__(
        self,
        app: AsyncOmniQ,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        pool: str | None = None,
        burst: bool = False,
        worker_id: str | None = None,
    ) -> None:
        settings = app.settings
        self.app = app
        self.concurrency = concurrency if concurrency is not None else settings.max_workers
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency={self.concurrency} is not valid: expected a positive integer")
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        self.queues = tuple(queues or settings.queues)
        kind = (pool or settings.default_worker).lower()
        if kind not in {w.value for w in WorkerType}:
            raise ConfigurationError(f"pool={pool!r} is not valid: expected one of async, thread, process")
        self.pool_kind = kind
        self.burst = burst
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:x}"
        self.lease = settings.lease_duration
        self.heartbeat_interval = settings.heartbeat_interval
        self.sweep_interval = settings.sweep_interval
        self.poll_interval = settings.poll_interval
        self.shutdown_grace = settings.shutdown_grace
        self.housekeeping_interval = HOUSEKEEPING_SECONDS
        self._running: dict[str, _Running] = {}
        self._outcomes: list[tuple[Task, Outcome]] = []
        self._outcome_ready = anyio.Event()
        self._slot_freed = anyio.Event()
        self._stopping = False
        self._grace: anyio.CancelScope | None = None  # the drain's grace period, ended early by a second signal
        self._stopped = anyio.Event()
        self._started = anyio.Event()
        self._stop_requested = threading.Event()
        self._hooks: frozenset[str] = frozenset()
        self._fuse = False
        self._finishing = 0  # outcome batches being sent to the queue right now
        self._finish_failures: dict[str, int] = {}  # task id -> times its outcome alone failed to be recorded
        # burst mode keeps going until the retries and dependency re-checks it deferred are due.
        self._burst_deferred_until = utcnow()
        self.processed = 0

    # -- public ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the pool has started and not yet stopped."""
        return self._started.is_set() and not self._stopped.is_set()

    async def wait_started(self) -> None:
        """Return once the pool is claiming."""
        await self._started.wait()

    async def start(self, *, handle_signals: bool = False) -> None:
        """Run the pool until :meth:`stop` (or, with burst, until nothing is ready).

        Args:
            handle_signals: stop gracefully on SIGTERM / SIGINT (main thread only).
        """
        app = self.app
        await app.connect()
        executor = self._make_executor()
        await executor.start()
        self._hooks = plugins.lifecycle_hooks_in_use()
        self._fuse = app.task_queue.can_fuse_results(app.result_storage)
        if "omniq_worker_started" in self._hooks:
            plugins.call_lifecycle("omniq_worker_started", worker_id=self.worker_id, queues=self.queues)
        logger.info(
            "worker %s started: queues=%s concurrency=%d pool=%s",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
            self.pool_kind,
        )
        try:
            async with anyio.create_task_group() as services:
                services.start_soon(self._finisher)
                services.start_soon(self._heartbeat)
                services.start_soon(self._sweeper)
                if handle_signals:
                    services.start_soon(self._watch_signals)
                self._started.set()
                try:
                    await self._claim_loop(executor)
                finally:
                    await self._drain()
                await self._flush_outcomes()
                services.cancel_scope.cancel()
        finally:
            await executor.close()
            await app.flush_events()
            self._stopped.set()
            if "omniq_worker_stopped" in self._hooks:
                plugins.call_lifecycle("omniq_worker_stopped", worker_id=self.worker_id)
            logger.info("worker %s stopped after %d tasks", self.worker_id, self.processed)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight tasks finish (up to ``timeout`` or the grace period), then return."""
        if timeout is not None:
            self.shutdown_grace = timeout
        self.request_stop()
        if self._started.is_set():
            await self._stopped.wait()

    def request_stop(self) -> None:
        """Ask the pool to stop (safe from any thread and from signal handlers)."""
        self._stopping = True
        self._stop_requested.set()

    # -- loops -------------------------------------------------------------------------------------

    def _make_executor(self) -> Executor:
        if self.pool_kind == WorkerType.PROCESS.value:
            return ProcessExecutor(self.concurrency, lambda name: self.app.resolve(name).func)
        if self.pool_kind == WorkerType.THREAD.value:
            return ThreadExecutor(self.concurrency)
        return Executor(self.concurrency)

    async def _claim_loop(self, executor: Executor) -> None:
        queue = self.app.task_queue
        loop = asyncio.get_running_loop()
        errors = 0
        # Claim in batches: with some tasks still running, wait until at least half the
        # slots are free, so a busy pool makes one claim per several tasks, not one per task.
        threshold = max(1, self.concurrency // 2)
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free <= 0 or (self._running and free < threshold):
                self._slot_freed = anyio.Event()
                with anyio.move_on_after(self.poll_interval):
                    await self._slot_freed.wait()
                continue
            wait = 0.0 if self.burst else self.poll_interval
            claimed_from = utcnow()
            try:
                with anyio.CancelScope(shield=True):
                    tasks = await queue.claim(self.queues, free, lease=self.lease, worker_id=self.worker_id, wait=wait)
                errors = 0
            except Exception as exc:
                errors += 1
                delay = min(MAX_ERROR_BACKOFF, 0.1 * 2**errors)
                logger.warning("claim failed (%s); retrying in %.1f s", exc, delay)
                await anyio.sleep(delay)
                continue
            if self._stopping and tasks:
                await self._hand_back(tasks)
                return
            if not tasks:
                if self.burst:
                    # Done only if this empty claim began after every deferred task was due
                    # (with a margin for an engine clock slightly behind ours).
                    idle = not self._running and not self._outcomes and not self._finishing
                    if idle and claimed_from >= self._burst_deferred_until + BURST_CLOCK_MARGIN:
                        return
                    self._slot_freed = anyio.Event()
                    with anyio.move_on_after(min(self.poll_interval, 0.1)):
                        await self._slot_freed.wait()
                continue
            now = utcnow()
            events = []
            for task in tasks:
                running = _Running(task)
                self._running[task.id] = running
                events.append(
                    TaskEvent(
                        task_id=task.id,
                        type=EventType.STARTED,
                        timestamp=now,
                        queue=task.queue,
                        func=task.func,
                        attempt=task.attempts,
                        worker_id=self.worker_id,
                    )
                )
                # Plain asyncio tasks, not a task group per task: spawning is the hot path, and
                # _run never raises (it turns every failure into an outcome).
                running.future = loop.create_task(self._run(running, executor))
            self.app.record_events(events)
            # Let the new tasks start before the next claim is sent: building and writing that
            # request would otherwise sit between a wake-up and the task's start.
            await asyncio.sleep(0)

    async def _run(self, running: _Running, executor: Executor) -> None:
        task = running.task
        outcome: Outcome | None = None
        try:
            if "omniq_task_started" in self._hooks:
                plugins.call_lifecycle("omniq_task_started", task=task, worker_id=self.worker_id)
            outcome = await execute(self.app, executor, task)
        except asyncio.CancelledError:
            pass  # shutdown or lost lease: decided below
        except Exception as exc:  # execute() never raises: a bug in the core, or a lifecycle hook
            # Not RELEASE: the same task would be claimed again at once, and fail the same way, for ever.
            from omniq.app import error_from_exception

            error = msgspec.structs.replace(error_from_exception(exc, task.attempts), retryable=False)
            outcome = failed_outcome(task, error, "the worker failed around it")
        if outcome is None and not running.cancelled:
            # Cancelled by shutdown: hand the task back without burning the attempt.
            outcome = Outcome(task_id=task.id, lease_token=task.lease_token or "", kind=OutcomeKind.RELEASE)
        del self._running[task.id]
        self._slot_freed.set()
        if outcome is not None and not running.cancelled:
            self._outcomes.append((task, outcome))
            self._outcome_ready.set()

    async def _hand_back(self, tasks: list[Task]) -> None:
        """Release tasks claimed after stop was requested, unstarted (no event: they never began)."""
        outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.RELEASE) for t in tasks]
        try:
            with anyio.CancelScope(shield=True):
                await self.app.task_queue.finish(outcomes)
        except Exception as exc:
            logger.warning("handing back %d unstarted task(s) failed (%s); their leases will expire", len(tasks), exc)

    async def _drain(self) -> None:
        """Give in-flight tasks the grace period, then cancel and release the rest."""
        if not self._running:
            return
        logger.info(
            "worker %s stopping: waiting up to %.1f s for %d task(s)",
            self.worker_id,
            self.shutdown_grace,
            len(self._running),
        )
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.shutdown_grace) as self._grace:
                while self._running:
                    self._slot_freed = anyio.Event()
                    await self._slot_freed.wait()
            futures = [r.future for r in self._running.values() if r.future is not None]
            for running in list(self._running.values()):
                running.cancel()
            if futures:
                await asyncio.wait(futures)

    async def _finisher(self) -> None:
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready = anyio.Event()
            await self._flush_outcomes()

    async def _flush_outcomes(self) -> None:
        errors = 0
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            self._finishing += 1
            try:
                with anyio.CancelScope(shield=True):
                    await self._finish_batch(batch)
                errors = 0
                if self._finish_failures:
                    for task, _ in batch:
                        self._finish_failures.pop(task.id, None)
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
                    self._outcomes[:0] = left
                    delay = min(MAX_ERROR_BACKOFF, 0.1 * 2**errors)
                    logger.warning("finishing %d task(s) failed (%s); retrying in %.1f s", len(left), failure, delay)
                    await anyio.sleep(delay)
            finally:
                self._finishing -= 1

    async def _finish_one_by_one(
        self, batch: list[tuple[Task, Outcome]]
    ) -> tuple[list[tuple[Task, Outcome]], Exception | None]:
        """Finish each outcome alone; return those to try again (all the rest after an outage) and the last error."""
        left: list[tuple[Task, Outcome]] = []
        failure: Exception | None = None
        for index, item in enumerate(batch):
            try:
                with anyio.CancelScope(shield=True):
                    await self._finish_batch([item])
                self._finish_failures.pop(item[0].id, None)
            except Exception as exc:  # noqa: PERF203 - the failure path: one outcome at a time is the point
                failure = exc
                if isinstance(exc, _TRANSIENT):
                    return [*left, *batch[index:]], exc
                left.extend(self._keep(item, exc))
        return left, failure

    def _keep(self, item: tuple[Task, Outcome], failure: Exception) -> list[tuple[Task, Outcome]]:
        """``[item]`` if its outcome, which failed alone, deserves another try, else ``[]``.

        Once it has failed ``MAX_FINISH_FAILURES`` times it is dropped and logged: its lease expires
        and recovery takes over, so a record that cannot be written never keeps the worker busy for ever.
        """
        task, outcome = item
        count = self._finish_failures[task.id] = self._finish_failures.get(task.id, 0) + 1
        if count < MAX_FINISH_FAILURES:
            return [item]
        del self._finish_failures[task.id]
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

    async def _finish_batch(self, batch: list[tuple[Task, Outcome]]) -> None:
        app = self.app
        outcomes = [outcome for _, outcome in batch]
        fused = app.result_storage if self._fuse else None
        accepted = await app.task_queue.finish(outcomes, results=fused)
        results: list[TaskResult] = []
        events: list[TaskEvent] = []
        now = utcnow()
        for (task, outcome), ok in zip(batch, accepted, strict=True):
            if not ok:
                logger.warning("lease lost on task %s (attempt %d): outcome not recorded", task.id, task.attempts)
                continue
            if outcome.kind is not OutcomeKind.RELEASE:
                self.processed += 1  # a released task was handed back, not processed
            if outcome.kind in (OutcomeKind.RELEASE, OutcomeKind.RETRY) and outcome.eta is not None:
                self._burst_deferred_until = max(self._burst_deferred_until, outcome.eta)
            if outcome.result is not None:
                results.append(outcome.result)
            event_type = outcome_event(outcome)
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
            if self._hooks:
                self._call_outcome_hooks(task, outcome, event_type)
        if results and fused is None:
            await app.result_storage.set_many(results)
        app.record_events(events)

    def _call_outcome_hooks(self, task: Task, outcome: Outcome, event_type: EventType) -> None:
        if event_type is EventType.SUCCEEDED and "omniq_task_succeeded" in self._hooks and outcome.result:
            plugins.call_lifecycle("omniq_task_succeeded", task=task, result=outcome.result, worker_id=self.worker_id)
        elif event_type is EventType.FAILED and "omniq_task_failed" in self._hooks and outcome.error:
            plugins.call_lifecycle("omniq_task_failed", task=task, error=outcome.error, worker_id=self.worker_id)
        elif event_type is EventType.RETRYING and "omniq_task_retried" in self._hooks and outcome.error:
            plugins.call_lifecycle("omniq_task_retried", task=task, error=outcome.error, worker_id=self.worker_id)

    async def _heartbeat(self) -> None:
        queue = self.app.task_queue
        while True:
            await anyio.sleep(self.heartbeat_interval)
            leases = {task_id: r.task.lease_token or "" for task_id, r in self._running.items()}
            if not leases:
                continue
            try:
                held = await queue.extend(leases, self.lease)
            except Exception as exc:
                logger.warning("heartbeat failed (%s); will retry", exc)
                continue
            for task_id in set(leases) - held:
                running = self._running.get(task_id)
                if running is not None:
                    logger.warning("lease lost on task %s (cancelled or expired): stopping it", task_id)
                    running.cancelled = True
                    running.cancel()

    async def _sweeper(self) -> None:
        queue = self.app.task_queue
        # Spread out so that many workers started together do not all clean up at once.
        next_housekeeping = anyio.current_time() + self.housekeeping_interval * (0.5 + random.random())
        while True:
            try:
                recovered = await queue.recover()
            except Exception as exc:
                logger.warning("lease recovery failed (%s); will retry", exc)
                recovered = []
            if recovered:
                await self._record_recovered(recovered)
            if anyio.current_time() >= next_housekeeping:
                next_housekeeping = anyio.current_time() + self.housekeeping_interval
                await self._housekeeping()
            await anyio.sleep(self.sweep_interval)

    async def _housekeeping(self) -> None:
        """Delete expired results and events older than ``event_ttl`` (every worker, spread out in time)."""
        app = self.app
        try:
            await app.result_storage.purge(expired_only=True)
            if app.settings.events_enabled and app.settings.event_ttl is not None:
                await app.event_storage.purge(before=utcnow() - timedelta(seconds=app.settings.event_ttl))
        except Exception as exc:
            logger.warning("clean-up of expired results and events failed (%s); will retry", exc)

    async def _record_recovered(self, tasks: list[Task]) -> None:
        """Events for recovered tasks, and results for those that failed for good (so waiters wake)."""
        app = self.app
        now = utcnow()
        failed = [t for t in tasks if t.status is TaskStatus.FAILED]
        logger.warning(
            "recovered %d task(s) whose worker stopped renewing its lease (%d failed for good)", len(tasks), len(failed)
        )
        if failed:
            await app.result_storage.set_many([TaskResult.from_task(t, finished_at=now) for t in failed])
        app.record_events(
            [
                TaskEvent(
                    task_id=t.id,
                    type=EventType.FAILED if t.status is TaskStatus.FAILED else EventType.RECOVERED,
                    timestamp=now,
                    queue=t.queue,
                    func=t.func,
                    attempt=t.attempts,
                    message=t.error.message if t.error else "",
                )
                for t in tasks
            ]
        )

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            count = 0
            async for signum in signals:
                count += 1
                if count == 1:
                    logger.warning("received %s: stopping gracefully (again to stop now)", signal.Signals(signum).name)
                    self.request_stop()
                else:
                    logger.warning("received %s again: cancelling in-flight tasks", signal.Signals(signum).name)
                    # The drain cancels and releases them once no claim is in flight (see the module doc).
                    self.shutdown_grace = 0
                    if self._grace is not None:
                        self._grace.cancel()
