"""The worker pool: claim in batches, run, heartbeat, finish in batches, shut down gracefully.

One pool is four cooperating loops on one event loop:

* claim (here): leases as many tasks as there are free slots, in one call,
  and starts a runner (``runner.py``) for each; waits on the backend's
  wake-up when idle;
* finisher (``finisher.py``): sends the runners' outcomes to the queue in
  batches, then writes results and events for the accepted ones; a batch
  that frees concurrency slots claims with its finish (``finish_and_claim``)
  and starts what that returns, and the claim loop waits for it;
* heartbeat and sweeper (``upkeep.py``): extend held leases and stop runners
  whose lease was lost; recover tasks whose worker died, and clean up;
* registry (``registry.py``): the pool's entry in the worker registry,
  refreshed at the heartbeat interval.

Every lifecycle event goes through one dispatcher (``omniq.lifecycle``),
built when the pool starts.

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
import signal
import socket
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import msgspec

from omniq.config import WorkerType
from omniq.constants import HOUSEKEEPING_SECONDS
from omniq.errors import ConfigurationError
from omniq.lifecycle import Lifecycle
from omniq.models import EventType, Outcome, OutcomeKind, Task, TaskEvent, utcnow
from omniq.worker.executors import Executor, ProcessExecutor, ThreadExecutor
from omniq.worker.finisher import MAX_ERROR_BACKOFF, Finisher, Refill
from omniq.worker.progress import ProgressWriter
from omniq.worker.registry import Registration
from omniq.worker.runner import Running, error_from_exception, execute, failed_outcome
from omniq.worker.upkeep import Upkeep

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ

__all__ = ["AsyncWorkerPool"]

logger = logging.getLogger("omniq.worker")

#: burst mode's allowance for an engine clock a little behind the worker's (and for asynchronous delivery).
BURST_CLOCK_MARGIN = timedelta(seconds=0.1)


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
        self._running: dict[str, Running] = {}
        self._finisher: Finisher | None = None  # made at start, with the hooks and the fuse it finds then
        self._slot_freed = anyio.Event()
        self._stopping = False
        self._grace: anyio.CancelScope | None = None  # the drain's grace period, ended early by a second signal
        self._stopped = anyio.Event()
        self._started = anyio.Event()
        self._stop_requested = threading.Event()
        self._lifecycle = Lifecycle.empty()  # built at start, with the plugins registered then
        self._progress: ProgressWriter | None = None  # made at start, on the pool's loop

    # -- public ------------------------------------------------------------------------------------

    @property
    def processed(self) -> int:
        """Tasks whose outcome was recorded (released ones not counted)."""
        return self._finisher.processed if self._finisher is not None else 0

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
        lifecycle = self._lifecycle = Lifecycle()
        fuse = app.task_queue.can_fuse_results(app.result_storage)
        finisher = self._finisher = Finisher(app, self.worker_id, fuse=fuse, lifecycle=lifecycle)
        progress = self._progress = ProgressWriter(app, asyncio.get_running_loop())

        async def take(tasks: list[Task]) -> None:
            if self._stopping:
                await self._hand_back(tasks)
            else:
                self._start(tasks, executor, finisher)

        finisher.refill = Refill(self.queues, self.lease, lambda: 0 if self._stopping else self._free(), take)
        upkeep = Upkeep(
            app,
            self._running,
            lifecycle=lifecycle,
            worker_id=self.worker_id,
            lease=self.lease,
            heartbeat_interval=self.heartbeat_interval,
            sweep_interval=self.sweep_interval,
            housekeeping_interval=self.housekeeping_interval,
        )
        registration = Registration(
            app.task_queue,
            lifecycle,
            lambda: (len(self._running), finisher.processed, finisher.failed),
            worker_id=self.worker_id,
            queues=self.queues,
            pool=self.pool_kind,
            concurrency=self.concurrency,
            heartbeat_interval=self.heartbeat_interval,
        )
        await registration.register()
        if lifecycle.worker_started is not None:
            lifecycle.worker_started(self.worker_id, self.queues)
        logger.info(
            "worker %s started: queues=%s concurrency=%d pool=%s",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
            self.pool_kind,
        )
        try:
            async with anyio.create_task_group() as services:
                services.start_soon(finisher.run)
                services.start_soon(upkeep.heartbeat)
                services.start_soon(upkeep.sweep)
                services.start_soon(registration.run)
                if handle_signals:
                    services.start_soon(self._watch_signals)
                self._started.set()
                try:
                    await self._claim_loop(executor, finisher)
                finally:
                    await self._drain()
                await finisher.flush()
                services.cancel_scope.cancel()
        finally:
            await executor.close()
            await progress.close()
            await registration.unregister()
            await app.flush_events()
            self._stopped.set()
            if lifecycle.worker_stopped is not None:
                lifecycle.worker_stopped(self.worker_id)
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

    async def _claim_loop(self, executor: Executor, finisher: Finisher) -> None:
        queue = self.app.task_queue
        errors = 0
        # Claim in batches: with some tasks still running, wait until at least half the
        # slots are free, so a busy pool makes one claim per several tasks, not one per task.
        threshold = max(1, self.concurrency // 2)
        while not self._stopping:
            free = self._free()
            if free <= 0 or (self._running and free < threshold):
                self._slot_freed = anyio.Event()
                with anyio.move_on_after(self.poll_interval):
                    await self._slot_freed.wait()
                continue
            if finisher.slots:
                # The engine still counts this pool's finished limited tasks as running: a claim
                # now would find their slots taken and wait for them. Record them first (their
                # finish claims the tasks they let start: finisher.Refill), then claim for what is free.
                with anyio.move_on_after(self.poll_interval):
                    await finisher.slots_recorded()
                free = self._free()
                if free <= 0:
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
                    # Done only if this empty claim began after every deferred task was due and
                    # after the last outcomes were recorded (recording one can make a held task
                    # ready), with a margin for an engine clock slightly behind ours and for an
                    # engine that delivers a ready task asynchronously (a NATS ticket).
                    idle = not self._running and finisher.idle
                    settled = max(finisher.deferred_until, finisher.recorded_at) + BURST_CLOCK_MARGIN
                    if idle and claimed_from >= settled:
                        return
                    self._slot_freed = anyio.Event()
                    with anyio.move_on_after(min(self.poll_interval, 0.1)):
                        await self._slot_freed.wait()
                continue
            self._start(tasks, executor, finisher)
            # Let the new tasks start before the next claim is sent: building and writing that
            # request would otherwise sit between a wake-up and the task's start.
            await asyncio.sleep(0)

    def _free(self) -> int:
        return self.concurrency - len(self._running)

    def _start(self, tasks: list[Task], executor: Executor, finisher: Finisher) -> None:
        """Start a runner for each claimed task and record their STARTED events."""
        writer = self._progress
        assert writer is not None  # made by start()
        loop = asyncio.get_running_loop()
        now = utcnow()
        events = []
        for task in tasks:
            if task.started_at is None:  # engines set it at claim; observers rely on it
                task.started_at = now
            running = Running(task, writer)
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
            running.future = loop.create_task(self._run(running, executor, finisher))
        self.app.record_events(events)

    async def _run(self, running: Running, executor: Executor, finisher: Finisher) -> None:
        task = running.task
        outcome: Outcome | None = None
        lifecycle = self._lifecycle
        try:
            if lifecycle.task_started is not None:
                lifecycle.task_started(task, self.worker_id)
            outcome = await execute(self.app, executor, task, lifecycle.task_run, self.worker_id, running)
        except asyncio.CancelledError:
            pass  # shutdown or lost lease: decided below
        except Exception as exc:  # execute() never raises: a bug in the core, or a lifecycle hook
            # Not RELEASE: the same task would be claimed again at once, and fail the same way, for ever.
            error = msgspec.structs.replace(error_from_exception(exc, task.attempts), retryable=False)
            outcome = failed_outcome(task, error, "the worker failed around it")
        running.ended = True  # no progress is written after the run
        if outcome is None and not running.cancelled:
            # Cancelled by shutdown: hand the task back without burning the attempt.
            outcome = Outcome(task_id=task.id, lease_token=task.lease_token or "", kind=OutcomeKind.RELEASE)
        del self._running[task.id]
        self._slot_freed.set()
        if outcome is not None and not running.cancelled:
            finisher.add(task, outcome)

    async def _hand_back(self, tasks: list[Task]) -> None:
        """Release tasks claimed after stop was requested, unstarted (no event: they never began)."""
        outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.RELEASE) for t in tasks]
        try:
            with anyio.CancelScope(shield=True):
                accepted = await self.app.task_queue.finish(outcomes)
        except Exception as exc:
            logger.warning("handing back %d unstarted task(s) failed (%s); their leases will expire", len(tasks), exc)
            return
        notify = self._lifecycle.task_released
        if notify is not None:
            for task, ok in zip(tasks, accepted, strict=True):
                if ok:
                    notify(task, self.worker_id)

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
