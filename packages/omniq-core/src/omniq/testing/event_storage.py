"""Conformance tests for :class:`~omniq.base.BaseEventStorage`.

Subclass :class:`EventStorageSuite` in a class named ``Test...`` and provide an
``event_storage_factory`` fixture: a zero-argument callable returning a new,
unconnected storage bound to one store that is private to the test.

Time filters are half-open: ``since <= timestamp < until``. The edge tests
put events exactly on ``since`` and ``until`` (millisecond timestamps, which
every engine keeps exactly); the others keep events well away from them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from itertools import pairwise

import pytest

from omniq.base import BaseEventStorage
from omniq.models import EventType, TaskEvent
from omniq.testing.fixtures import connected, make_event, now_ms

__all__ = ["EventStorageSuite"]

StorageFactory = Callable[[], BaseEventStorage]

#: ``(t1, t2, [1 ms before t1, at t1, between, at t2, 1 ms after t2])``, for the time-filter edges.
Edges = tuple[datetime, datetime, list[TaskEvent]]


def _ids(events: list[TaskEvent]) -> list[tuple[str, EventType]]:
    return [(e.task_id, e.type) for e in events]


class EventStorageSuite:
    """Every behaviour of the event storage contract, against a real engine."""

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    async def event_storage(self, event_storage_factory: StorageFactory) -> AsyncIterator[BaseEventStorage]:
        """A connected event storage from the backend's factory."""
        async with connected(event_storage_factory) as (storage,):
            yield storage

    @pytest.fixture
    def history(self) -> list[TaskEvent]:
        """Two tasks' lives, one event per second, 60 s ago onwards, oldest first."""
        base = now_ms(-60)
        steps = [
            ("t1", EventType.ENQUEUED),
            ("t2", EventType.ENQUEUED),
            ("t1", EventType.STARTED),
            ("t2", EventType.STARTED),
            ("t1", EventType.FAILED),
            ("t2", EventType.SUCCEEDED),
        ]
        return [
            make_event(task_id * 16, kind, timestamp=base + timedelta(seconds=i), attempt=1)
            for i, (task_id, kind) in enumerate(steps)
        ]

    @pytest.fixture
    def edges(self) -> Edges:
        """Events on and beside two instants one second apart, each of its own task, oldest first."""
        t1 = now_ms(-30)
        t2 = t1 + timedelta(seconds=1)
        moments = [
            t1 - timedelta(milliseconds=1),
            t1,
            t1 + timedelta(milliseconds=500),
            t2,
            t2 + timedelta(milliseconds=1),
        ]
        events = [make_event(f"{i:032x}", EventType.STARTED, timestamp=at) for i, at in enumerate(moments)]
        return t1, t2, events

    async def test_round_trip_keeps_every_field(self, event_storage: BaseEventStorage) -> None:
        event = make_event(
            type=EventType.RETRYING, queue="mail", func="app:send", attempt=2, worker_id="w-1", message="retry in 4s"
        )
        await event_storage.append([event])
        [stored] = await event_storage.query(task_id=event.task_id)
        for field in event.__struct_fields__:
            assert getattr(stored, field) == getattr(event, field), field
        assert stored.timestamp.utcoffset() == timedelta(0)

    async def test_query_by_task_oldest_first(self, event_storage: BaseEventStorage, history: list[TaskEvent]) -> None:
        await event_storage.append(history)
        await event_storage.append([])
        assert _ids(await event_storage.query()) == _ids(history)
        t1 = await event_storage.query(task_id="t1" * 16)
        assert [e.type for e in t1] == [EventType.ENQUEUED, EventType.STARTED, EventType.FAILED]
        assert await event_storage.query(task_id="nope") == []

    async def test_query_by_types(self, event_storage: BaseEventStorage, history: list[TaskEvent]) -> None:
        await event_storage.append(history)
        found = await event_storage.query(types=[EventType.FAILED, EventType.SUCCEEDED])
        assert _ids(found) == _ids(history[4:])
        started = await event_storage.query(types=["started"], task_id="t2" * 16)
        assert _ids(started) == _ids([history[3]])

    async def test_query_since_until(self, event_storage: BaseEventStorage, history: list[TaskEvent]) -> None:
        await event_storage.append(history)
        since = history[2].timestamp - timedelta(milliseconds=500)
        until = history[4].timestamp - timedelta(milliseconds=500)
        assert _ids(await event_storage.query(since=since)) == _ids(history[2:])
        assert _ids(await event_storage.query(until=until)) == _ids(history[:4])
        assert _ids(await event_storage.query(since=since, until=until)) == _ids(history[2:4])
        assert await event_storage.query(since=now_ms(60)) == []

    async def test_since_is_inclusive(self, event_storage: BaseEventStorage, edges: Edges) -> None:
        t1, _, events = edges
        before, at_t1, between, at_t2, after = events
        await event_storage.append(events)
        assert _ids(await event_storage.query(since=t1)) == _ids([at_t1, between, at_t2, after])

    async def test_until_is_exclusive(self, event_storage: BaseEventStorage, edges: Edges) -> None:
        _, t2, events = edges
        before, at_t1, between, at_t2, after = events
        await event_storage.append(events)
        assert _ids(await event_storage.query(until=t2)) == _ids([before, at_t1, between])

    async def test_since_and_until_together_are_half_open(self, event_storage: BaseEventStorage, edges: Edges) -> None:
        t1, t2, events = edges
        before, at_t1, between, at_t2, after = events
        await event_storage.append(events)
        assert _ids(await event_storage.query(since=t1, until=t2)) == _ids([at_t1, between])
        assert await event_storage.query(since=t1, until=t1) == []
        assert _ids(await event_storage.query(since=t2, until=after.timestamp)) == _ids([at_t2])

    async def test_consecutive_windows_hold_each_event_once(
        self, event_storage: BaseEventStorage, edges: Edges
    ) -> None:
        """Windows that meet at an event's instant: the event is in the later one only."""
        t1, t2, events = edges
        before, at_t1, between, at_t2, after = events
        await event_storage.append(events)
        bounds = [t1 - timedelta(seconds=1), t1, between.timestamp, t2, t2 + timedelta(seconds=1)]
        windows = [await event_storage.query(since=a, until=b) for a, b in pairwise(bounds)]
        assert [_ids(w) for w in windows] == [_ids([before]), _ids([at_t1]), _ids([between]), _ids([at_t2, after])]

    async def test_query_limit_keeps_the_oldest(
        self, event_storage: BaseEventStorage, history: list[TaskEvent]
    ) -> None:
        await event_storage.append(history)
        assert _ids(await event_storage.query(limit=2)) == _ids(history[:2])
        assert _ids(await event_storage.query(task_id="t2" * 16, limit=2)) == _ids([history[1], history[3]])

    async def test_out_of_order_batches_are_sorted(self, event_storage_factory: StorageFactory) -> None:
        async with connected(event_storage_factory, 2) as (one, two):
            base = now_ms(-30)
            late = [make_event("a" * 32, EventType.SUCCEEDED, timestamp=base + timedelta(seconds=5))]
            early = [make_event("a" * 32, EventType.ENQUEUED, timestamp=base + timedelta(seconds=1))]
            tied = [make_event("a" * 32, kind, timestamp=base + timedelta(seconds=3)) for kind in EventType][:3]
            await one.append(late)
            await two.append(early)
            await one.append(tied)
            assert _ids(await two.query(task_id="a" * 32)) == _ids(early + tied + late)

    async def test_purge_before(self, event_storage: BaseEventStorage, history: list[TaskEvent]) -> None:
        await event_storage.append(history)
        assert await event_storage.purge(before=history[3].timestamp - timedelta(milliseconds=500)) == 3
        assert _ids(await event_storage.query()) == _ids(history[3:])
        assert await event_storage.purge(before=now_ms(-3600)) == 0
        assert await event_storage.purge() == 3
        assert await event_storage.query() == []
