"""The pool's side of ``omniq.report_progress``: the latest report of each running task, written now and then.

A task reports from wherever it runs: the event loop (async pool), a thread
(thread pool, and sync functions of the async pool) or a child process (the
process pool's parent hears it over the pipe and reports it here). A report
only replaces the run's latest one; a write to the result storage
(:mod:`omniq.progress`) is scheduled on the loop at most every
:data:`~omniq.progress.MIN_INTERVAL` seconds per task, so a task that reports
in a tight loop costs one assignment per call. A run that ended writes
nothing more (a finished task shows no progress).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from omniq.progress import MIN_INTERVAL, progress_record

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ
    from omniq.models import Task, TaskProgress

__all__ = ["ProgressWriter", "Reporting", "Reports"]

logger = logging.getLogger("omniq.worker")


class Reports:
    """A run's progress bookkeeping, made at its first report (a run that reports nothing pays nothing)."""

    __slots__ = ("at", "due", "latest", "written")

    def __init__(self) -> None:
        self.latest: TaskProgress | None = None  # the latest report
        self.written: TaskProgress | None = None  # the latest one written (or being written)
        self.due = False  # a write is scheduled
        self.at = 0.0  # loop time of the last write


class Reporting(Protocol):
    """What the writer needs of a run (the pool's run record)."""

    task: Task
    ended: bool  # the run is over: write nothing more
    reports: Reports | None


class ProgressWriter:
    """Writes the runs' latest reports to the app's result storage, throttled per run."""

    def __init__(self, app: AsyncOmniQ, loop: asyncio.AbstractEventLoop, interval: float = MIN_INTERVAL) -> None:
        self.app = app
        self.loop = loop
        self.interval = interval
        self._writes: set[asyncio.Task[None]] = set()  # strong references until each write is done

    def report(self, run: Reporting, progress: TaskProgress) -> None:
        """Keep ``progress`` as ``run``'s latest and make sure a write is scheduled; from any thread."""
        reports = run.reports
        if reports is None:
            reports = run.reports = Reports()
        reports.latest = progress
        if not reports.due:
            reports.due = True
            self.loop.call_soon_threadsafe(self._schedule, run, reports)

    def _schedule(self, run: Reporting, reports: Reports) -> None:
        delay = reports.at + self.interval - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._write, run, reports)
        else:
            self._write(run, reports)

    def _write(self, run: Reporting, reports: Reports) -> None:
        reports.due = False
        progress = reports.latest
        if run.ended or progress is None or progress is reports.written:
            return
        reports.written, reports.at = progress, self.loop.time()
        write = self.loop.create_task(self._store(run.task, progress))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def _store(self, task: Task, progress: TaskProgress) -> None:
        try:
            await self.app.result_storage.set(progress_record(task, progress))
        except Exception as exc:  # progress is a hint: a failed write loses a report, never the task
            logger.warning("storing the progress of task %s failed (%s)", task.id, exc)

    async def close(self) -> None:
        """Wait for the writes under way (at the pool's stop)."""
        if self._writes:
            await asyncio.wait(set(self._writes))
