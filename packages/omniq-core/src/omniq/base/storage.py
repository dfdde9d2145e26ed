"""The two stores beside the queue: results (one per task, until expiry) and events (history)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime

from omniq.base.component import Component
from omniq.capabilities import Capability
from omniq.models import TaskEvent, TaskResult

__all__ = ["BaseEventStorage", "BaseResultStorage"]


class BaseResultStorage(Component):
    """Keeps the final result of each task until its expiry."""

    kind = "result storage"

    @abstractmethod
    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id`` and wake waiters.

        ``result.expires_at`` (when set) is when the result may disappear.
        """

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results (override for one round trip)."""
        for result in results:
            await self.set(result)

    @abstractmethod
    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result, or None when there is none (or it expired)."""

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskResult | None]:
        """Return several results, in order, None for each missing or expired (override for one round trip).

        A workflow's fan-in reads every member's result at once (a chord's callback: thousands).
        """
        return [await self.get(task_id) for task_id in task_ids]

    def get_blocking(self, task_id: str) -> TaskResult | None:
        """:meth:`get`, run to the end in the calling thread, which runs no event loop.

        The rules of ``BaseTaskQueue.get_blocking``: after :meth:`connect`, from
        any thread but the loop's, several at once, the engine's own read.

        Raises:
            NotSupportedError: the default, for engines without :attr:`Capability.BLOCKING_READS`.
        """
        raise self._lacks(Capability.BLOCKING_READS, "read without its event loop")

    @abstractmethod
    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait until the result exists; None when ``timeout`` seconds pass first.

        ``timeout=None`` waits indefinitely. Engines with a signal (pub/sub,
        NOTIFY, KV watch, in-process events) must use it instead of polling.
        """

    @abstractmethod
    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was one."""

    @abstractmethod
    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""


class BaseEventStorage(Component):
    """Keeps the history of tasks for inspection.

    Writers call :meth:`append` with batches; the core buffers events off the
    hot path, so a slow event store never slows tasks down.
    """

    kind = "event storage"

    @abstractmethod
    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events."""

    @abstractmethod
    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return events matching all filters, oldest first (ties in append order).

        The time filter is half-open: ``since <= event.at < until``. An event
        at exactly ``until`` belongs to the next window, so consecutive windows
        never count an event twice. The core passes ``types`` as a tuple of
        strings (or None) and aware datetimes.
        """

    @abstractmethod
    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events older than ``before`` (all when None); return how many."""
