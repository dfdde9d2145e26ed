"""The file event storage: one file per appended batch in a directory.

A query reads only the files whose time range (in their names) meets the
half-open window ``since <= timestamp < until``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from omniq.backends.file.connection import SETTINGS_OPTIONS, FileRoot, RootOptions
from omniq.backends.file.event_files import EventFiles
from omniq.base import BaseEventStorage, Capability
from omniq.errors import redact_url
from omniq.models import TaskEvent

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from typing_extensions import Unpack


__all__ = ["FileEventStorage"]


class FileEventStorage(BaseEventStorage):
    """Event storage in a directory: one file per appended batch.

    Takes the options of its :attr:`root`, a
    :class:`~omniq.backends.file.connection.FileRoot`.
    """

    backend_name: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.DURABLE, Capability.MULTI_PROCESS})

    settings_options: ClassVar[Mapping[str, str]] = SETTINGS_OPTIONS

    def __init__(self, url: str | None = None, **options: Unpack[RootOptions]) -> None:
        self.root = FileRoot(url, **options)
        self.url = self.root.url
        self._files = EventFiles(self.root.store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact_url(self.url)!r})"

    async def connect(self) -> None:
        """Create the folders (idempotent)."""
        await self.root.connection.connect()

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""
        await self.root.connection.close()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events as one file."""
        if events:
            await self.root.run(self._files.append, events)

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return events matching all filters (``since <= timestamp < until``), oldest first."""
        return await self.root.run(self._files.query, task_id, types, since, until, limit)

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events with ``timestamp < before`` (all when None); return how many."""
        return await self.root.run(self._files.purge, before)
