"""Event files over a :class:`~.store.Store` (synchronous): one file per appended batch.

Each file is named so a query can skip whole files by time and a purge can
count and drop whole files without reading them::

    events/<append ns>_<rand>_<first us>_<last us>_<count>.evt
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from omniq.backends.file import layout
from omniq.base import msgpack_decoder
from omniq.errors import SerializationError
from omniq.models import TaskEvent, new_id

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from omniq.backends.file.store import Store

__all__ = ["EventFiles"]

logger = logging.getLogger("omniq.file")

_events_encoder = msgspec.msgpack.Encoder()
_decode_events = msgpack_decoder(list[TaskEvent], "event file")


class _EventFile(msgspec.Struct, frozen=True, order=True):
    """What an event file's name says about it."""

    appended: str
    rand: str
    first: str
    last: str
    count: int

    @classmethod
    def parse(cls, name: str) -> _EventFile | None:
        if not name.endswith(layout.EVENT_SUFFIX):
            return None
        parts = name[: -len(layout.EVENT_SUFFIX)].split("_")
        if len(parts) != 5 or not all(part.isdigit() for part in (parts[0], parts[2], parts[3], parts[4])):
            return None
        return cls(parts[0], parts[1], parts[2], parts[3], int(parts[4]))

    @property
    def path(self) -> str:
        return f"{layout.EVENTS_DIR}/{self.appended}_{self.rand}_{self.first}_{self.last}_{self.count}{layout.EVENT_SUFFIX}"


class EventFiles:
    """Synchronous event-storage operations on one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _files(self) -> list[_EventFile]:
        files = [f for f in map(_EventFile.parse, self.store.listdir(layout.EVENTS_DIR)) if f is not None]
        files.sort()  # append order
        return files

    def _write(self, events: Sequence[TaskEvent], appended: str | None = None) -> None:
        stamps = [layout.micros(event.timestamp) for event in events]
        info = _EventFile(
            appended=appended or f"{time.time_ns():020d}",
            rand=new_id()[:8],
            first=min(stamps),
            last=max(stamps),
            count=len(events),
        )
        self.store.write(info.path, _events_encoder.encode(list(events)))

    def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch as one file."""
        if events:
            self._write(events)
            self.store.flush()

    def _read(self, info: _EventFile) -> list[TaskEvent]:
        data = self.store.read(info.path)
        if data is None:
            return []  # purged meanwhile
        try:
            return _decode_events(data)
        except SerializationError as exc:
            logger.error("skipped the corrupted event file %s: %s", info.path, exc)
            return []

    def query(
        self,
        task_id: str | None,
        types: Sequence[str] | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[TaskEvent]:
        """Events matching every filter (``since <= timestamp < until``), oldest first."""
        low = None if since is None else layout.micros(since)
        high = None if until is None else layout.micros(until)
        wanted = None if types is None else {getattr(t, "value", t) for t in types}
        found: list[tuple[datetime, int, int, TaskEvent]] = []
        for order, info in enumerate(self._files()):
            if (low is not None and info.last < low) or (high is not None and info.first >= high):
                continue
            for index, event in enumerate(self._read(info)):
                if task_id is not None and event.task_id != task_id:
                    continue
                if wanted is not None and event.type.value not in wanted:
                    continue
                if (since is not None and event.timestamp < since) or (until is not None and event.timestamp >= until):
                    continue
                found.append((event.timestamp, order, index, event))
        found.sort(key=lambda item: item[:3])
        return [item[3] for item in found[:limit]]

    def purge(self, before: datetime | None) -> int:
        """Delete events with ``timestamp < before`` (all when None); return how many."""
        cut = None if before is None else layout.micros(before)
        count = 0
        with self.store.lock(layout.EVENTS_LOCK):
            for info in self._files():
                if cut is None or info.last < cut:
                    count += info.count if self.store.unlink(info.path) else 0
                elif info.first < cut:
                    assert before is not None
                    events = self._read(info)
                    kept = [event for event in events if event.timestamp >= before]
                    if len(kept) < len(events):
                        if kept:
                            self._write(kept, appended=info.appended)  # keeps its place in append order
                        self.store.unlink(info.path)
                        count += len(events) - len(kept)
        self.store.flush()
        return count
