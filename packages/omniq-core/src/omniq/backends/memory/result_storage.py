"""The memory result storage: results in a :class:`~omniq.backends.memory.store.MemoryStore`.

``wait`` sleeps on an :class:`anyio.Event` that :meth:`MemoryStore.store_result`
sets (also when the task queue writes a result fused into ``finish``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import anyio
import anyio.lowlevel

from omniq.backends.memory.store import MemoryStore, copy_result
from omniq.base import BaseResultStorage, Capability
from omniq.models import TaskResult, utcnow

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MemoryResultStorage"]


class MemoryResultStorage(BaseResultStorage):
    """Result storage kept in process memory; ``wait`` wakes on :meth:`set`.

    Args:
        url: name of the process-wide store to use (``None``: ``"default"``);
            ignored when ``store`` is given.
        store: an explicit store to share with other components.
    """

    backend_name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.BLOCKING_WAIT})

    def __init__(self, url: str | None = None, *, store: MemoryStore | None = None) -> None:
        self.url = url
        self.store = MemoryStore.named(url) if store is None else store

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) a result and wake its waiters."""
        await anyio.lowlevel.checkpoint()
        self.store.store_result(result)

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results at once."""
        await anyio.lowlevel.checkpoint()
        for result in results:
            self.store.store_result(result)

    def _live(self, task_id: str) -> TaskResult | None:
        result = self.store.results.get(task_id)
        if result is None:
            return None
        if result.expires_at is not None and result.expires_at <= utcnow():
            del self.store.results[task_id]
            return None
        return copy_result(result)

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result unless missing or expired."""
        await anyio.lowlevel.checkpoint()
        return self._live(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskResult | None]:
        """Return several results, None for each missing or expired."""
        await anyio.lowlevel.checkpoint()
        return [self._live(task_id) for task_id in task_ids]

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result without polling; None after ``timeout`` seconds."""
        await anyio.lowlevel.checkpoint()
        with anyio.move_on_after(float("inf") if timeout is None else timeout):
            while True:
                result = self._live(task_id)
                if result is not None:
                    return result
                event = anyio.Event()
                self.store.result_waiters.setdefault(task_id, set()).add(event)
                try:
                    await event.wait()
                finally:
                    waiters = self.store.result_waiters.get(task_id)
                    if waiters is not None:
                        waiters.discard(event)
                        if not waiters:
                            del self.store.result_waiters[task_id]
        return self._live(task_id)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was a live one."""
        await anyio.lowlevel.checkpoint()
        live = self._live(task_id) is not None
        self.store.results.pop(task_id, None)
        return live

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""
        await anyio.lowlevel.checkpoint()
        results = self.store.results
        if not expired_only:
            count = len(results)
            results.clear()
            return count
        now = utcnow()
        doomed = [key for key, r in results.items() if r.expires_at is not None and r.expires_at <= now]
        for key in doomed:
            del results[key]
        return len(doomed)
