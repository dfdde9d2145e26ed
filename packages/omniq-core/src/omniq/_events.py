"""Off-the-hot-path event recording: events are buffered and appended in batches."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from omniq.constants import EVENT_BATCH_SIZE, EVENT_FLUSH_SECONDS

if TYPE_CHECKING:
    from omniq.base import BaseEventStorage
    from omniq.models import TaskEvent

logger = logging.getLogger(__name__)

#: events kept while the event storage is failing; older ones are dropped (with a warning).
MAX_BACKLOG = 100_000


class EventBuffer:
    """Collects events and writes them with one ``append`` per batch.

    ``add`` never blocks and never raises: it queues the event and makes sure
    a flush is scheduled (after ``EVENT_FLUSH_SECONDS`` or at once when the
    batch is full). A failing event storage loses events (logged), never tasks.
    """

    def __init__(self, storage: BaseEventStorage) -> None:
        self.storage = storage
        self._pending: list[TaskEvent] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        # Events added from other threads (the sync API's blocking enqueue): taken in by the loop.
        self._loop = asyncio.get_running_loop()
        self._inbox: list[TaskEvent] = []
        self._inbox_lock = threading.Lock()
        self._inbox_armed = False  # the loop has been asked to take the inbox in

    def add(self, event: TaskEvent) -> None:
        """Queue one event."""
        self._pending.append(event)
        self._schedule()

    def extend(self, events: list[TaskEvent]) -> None:
        """Queue several events."""
        if events:
            self._pending.extend(events)
            self._schedule()

    def extend_threadsafe(self, events: list[TaskEvent]) -> None:
        """Queue events from a thread other than the loop's, without waiting for the loop.

        The loop takes them in one flush period after the first of them: it is
        woken once per period at most, not once per call (a cross-thread
        wake-up costs about what the sync enqueue it follows costs).
        """
        if not events:
            return
        with self._inbox_lock:
            self._inbox.extend(events)
            if self._inbox_armed:
                return
            self._inbox_armed = True
        try:
            self._loop.call_soon_threadsafe(self._loop.call_later, EVENT_FLUSH_SECONDS, self._take_inbox)
        except RuntimeError:  # the loop is closed: the app is gone, and nothing can write them any more
            logger.warning("event buffer closed; dropped %d events", len(events))

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            events, self._inbox, self._inbox_armed = self._inbox, [], False
        if events:
            self._pending.extend(events)
            if self._timer is not None:
                self._timer.cancel()
            self._start_flush()

    def _schedule(self) -> None:
        if len(self._pending) >= EVENT_BATCH_SIZE:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._start_flush()
        elif self._timer is None and self._flushing is None:
            self._timer = asyncio.get_running_loop().call_later(EVENT_FLUSH_SECONDS, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is None and self._pending:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        # Writes what is pending (never nothing: see _start_flush), then goes on at once only while
        # a full batch waits; a smaller remainder waits for the timer, else a steady trickle (a
        # producer's enqueue loop) would be appended one event at a time.
        try:
            while True:
                batch, self._pending = self._pending, []
                try:
                    await self.storage.append(batch)
                except Exception as exc:
                    if len(self._pending) + len(batch) > MAX_BACKLOG:
                        logger.warning("event storage failing (%s); dropped %d events", exc, len(batch))
                    else:
                        logger.warning("event storage failing (%s); will retry %d events", exc, len(batch))
                        self._pending[:0] = batch
                    await asyncio.sleep(1.0)
                if len(self._pending) < EVENT_BATCH_SIZE:
                    break
        finally:
            self._flushing = None
            if self._pending and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(EVENT_FLUSH_SECONDS, self._start_flush)

    async def flush(self) -> None:
        """Write everything buffered now (used on close and by tests)."""
        with self._inbox_lock:  # (the armed take then finds it empty)
            self._pending.extend(self._inbox)
            self._inbox = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await asyncio.shield(self._flushing)
            if self._timer is not None:  # re-armed by the flush that just ended
                self._timer.cancel()
                self._timer = None
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.storage.append(batch)
            except Exception as exc:
                logger.warning("event storage failing (%s); dropped %d events on flush", exc, len(batch))
