"""The file result storage: one file per task in a directory, replaced atomically.

``wait`` is woken at once by a writer in the same thread (the task queue's
fused ``finish`` included, on the same root), and otherwise polls every
``poll_interval`` seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import anyio

from omniq.backends.file.connection import SETTINGS_OPTIONS, FileRoot, RootOptions
from omniq.backends.file.result_files import ResultFiles
from omniq.backends.file.wakeups import result_channel
from omniq.base import BaseResultStorage, Capability
from omniq.errors import redact_url
from omniq.models import TaskResult

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from typing_extensions import Unpack


__all__ = ["FileResultStorage"]


class FileResultStorage(BaseResultStorage):
    """Result storage in a directory: one file per task.

    Takes the options of its :attr:`root`, a
    :class:`~omniq.backends.file.connection.FileRoot`.
    """

    backend_name: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.DURABLE, Capability.MULTI_PROCESS, Capability.BLOCKING_READS}
    )

    settings_options: ClassVar[Mapping[str, str]] = SETTINGS_OPTIONS

    def __init__(self, url: str | None = None, **options: Unpack[RootOptions]) -> None:
        self.root = FileRoot(url, **options)
        self.url = self.root.url
        self._files = ResultFiles(self.root.store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact_url(self.url)!r})"

    async def connect(self) -> None:
        """Create the folders (idempotent)."""
        await self.root.connection.connect()

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""
        await self.root.connection.close()

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) a result and wake its waiters."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results in one thread hop."""
        if results:
            await self.root.run(self._files.set_many, results)
            self.root.notify(*(result_channel(result.task_id) for result in results))

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result unless missing or expired."""
        return await self.root.run(self._files.get, task_id)

    def get_blocking(self, task_id: str) -> TaskResult | None:
        """:meth:`get` in the calling thread: the same file read."""
        return self.root.run_blocking(self._files.get, task_id)

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result: woken at once by a writer in this thread, else polled."""
        with anyio.move_on_after(float("inf") if timeout is None else timeout):
            while True:
                # Watch before reading, so a result written in between still wakes us.
                with self.root.watch(result_channel(task_id)) as event:
                    result = await self.get(task_id)
                    if result is not None:
                        return result
                    with anyio.move_on_after(self.root.poll_interval):
                        await event.wait()
        return await self.get(task_id)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was a live one."""
        return await self.root.run(self._files.delete, task_id)

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""
        return await self.root.run(self._files.purge, expired_only)
