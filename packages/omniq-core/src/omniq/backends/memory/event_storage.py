"""The memory event storage: one list, sorted by timestamp, in a :class:`~omniq.backends.memory.store.MemoryStore`.

Appends in timestamp order (the usual case) are O(1); a query bisects to the
half-open window ``since <= timestamp < until`` and scans only that.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from typing import TYPE_CHECKING, ClassVar

import anyio.lowlevel
import msgspec

from omniq.backends.memory.store import MemoryStore
from omniq.base import BaseEventStorage
from omniq.models import TaskEvent

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

__all__ = ["MemoryEventStorage"]

_replace = msgspec.structs.replace
#: a log entry's sort keys: its timestamp alone (the time filters), and (timestamp, append seq).
_stamp = operator.itemgetter(0)
_place = operator.itemgetter(0, 1)


class MemoryEventStorage(BaseEventStorage):
    """Event storage kept in process memory, sorted by timestamp.

    Args:
        url: name of the process-wide store to use (``None``: ``"default"``);
            ignored when ``store`` is given.
        store: an explicit store to share with other components.
    """

    backend_name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: str | None = None, *, store: MemoryStore | None = None) -> None:
        self.url = url
        self.store = MemoryStore.named(url) if store is None else store

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events (kept sorted; in-order appends are O(1))."""
        await anyio.lowlevel.checkpoint()
        log = self.store.events
        for event in events:
            entry = (event.timestamp.timestamp(), self.store.next_seq(), _replace(event))
            if not log or log[-1][:2] <= entry[:2]:
                log.append(entry)
            else:
                bisect.insort_right(log, entry, key=_place)

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
        await anyio.lowlevel.checkpoint()
        log = self.store.events
        start = 0 if since is None else bisect.bisect_left(log, since.timestamp(), key=_stamp)
        stop = len(log) if until is None else bisect.bisect_left(log, until.timestamp(), key=_stamp)
        wanted = None if types is None else {getattr(t, "value", t) for t in types}
        found: list[TaskEvent] = []
        for _, _, event in itertools.islice(log, start, stop):
            if len(found) >= limit:
                break
            if (task_id is None or event.task_id == task_id) and (
                wanted is None or getattr(event.type, "value", event.type) in wanted
            ):
                found.append(_replace(event))
        return found

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events with ``timestamp < before`` (all when None)."""
        await anyio.lowlevel.checkpoint()
        log = self.store.events
        cut = len(log) if before is None else bisect.bisect_left(log, before.timestamp(), key=_stamp)
        del log[:cut]
        return cut
