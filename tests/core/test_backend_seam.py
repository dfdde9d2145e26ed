"""The app normalises its arguments once, in the seam where it calls the backends (omniq._components).

Backends receive only what ``base.py`` promises them: a ``TaskStatus`` (or
None), a list of them, event types as a tuple of strings (or None), aware
UTC datetimes. The components are the memory backend, subclassed only to
record what reached them; the app is under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from omniq import AsyncOmniQ, ConfigurationError, EventType, Settings, TaskStatus
from omniq.backends.memory import MemoryEventStorage, MemoryResultStorage, MemoryStore, MemoryTaskQueue
from omniq.models import Task, TaskEvent

pytestmark = pytest.mark.anyio


class RecordingEvents(MemoryEventStorage):
    seen: list[dict[str, Any]]

    async def query(self, **filters: Any) -> list[TaskEvent]:
        self.seen.append(filters)
        return await super().query(**filters)


class RecordingQueue(MemoryTaskQueue):
    seen: list[dict[str, Any]]

    async def list(self, **filters: Any) -> list[Task]:
        self.seen.append(filters)
        return await super().list(**filters)

    async def count(self, **filters: Any) -> int:
        self.seen.append(filters)
        return await super().count(**filters)

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        self.seen.append({"queue": queue, "statuses": statuses})
        return await super().purge(queue=queue, statuses=statuses)


@pytest.fixture
async def app() -> Any:
    store = MemoryStore()
    queue, events = RecordingQueue(store=store), RecordingEvents(store=store)
    queue.seen, events.seen = [], []
    async with AsyncOmniQ(
        Settings(backend="memory"),
        task_queue=queue,
        result_storage=MemoryResultStorage(store=store),
        event_storage=events,
    ) as app:
        yield app


@pytest.mark.parametrize(
    ("given", "passed"),
    [
        (None, None),
        ([], None),
        ("succeeded", ("succeeded",)),
        (EventType.FAILED, ("failed",)),
        (["enqueued", EventType.STARTED], ("enqueued", "started")),
        ((EventType.SUCCEEDED,), ("succeeded",)),
    ],
)
async def test_event_types_reach_the_backend_as_a_tuple_of_strings(app: Any, given: Any, passed: Any) -> None:
    await app.get_events(types=given)
    assert app.event_storage.seen[-1]["types"] == passed


async def test_a_single_event_type_string_is_one_type_not_its_letters(app: Any) -> None:
    app.register(lambda: 1, name="f")
    task_id = await app.enqueue("f")
    assert [e.type for e in await app.get_events(task_id, types="enqueued")] == [EventType.ENQUEUED]


async def test_time_filters_reach_the_backend_aware_and_in_utc(app: Any) -> None:
    aware = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2030, 1, 2, 3, 4, 5)
    await app.get_events(since=aware, until=naive)
    seen = app.event_storage.seen[-1]
    assert seen["since"] == aware and seen["since"].tzinfo is timezone.utc
    assert seen["until"] == naive.astimezone() and seen["until"].tzinfo is timezone.utc  # naive: local time, as eta


async def test_statuses_reach_the_backend_as_task_statuses(app: Any) -> None:
    await app.list_tasks("pending")
    await app.count_tasks(TaskStatus.RUNNING)
    await app.purge(statuses="failed")
    await app.purge(statuses=["cancelled", TaskStatus.EXPIRED])
    seen = app.task_queue.seen
    assert seen[0]["status"] is TaskStatus.PENDING
    assert seen[1]["status"] is TaskStatus.RUNNING
    assert seen[2]["statuses"] == [TaskStatus.FAILED]
    assert seen[3]["statuses"] == [TaskStatus.CANCELLED, TaskStatus.EXPIRED]


@pytest.mark.parametrize(
    "call",
    [
        lambda app: app.get_events(types="nope"),
        lambda app: app.get_events(types=["enqueued", "nope"]),
        lambda app: app.get_events(since="yesterday"),
        lambda app: app.list_tasks("nope"),
        lambda app: app.count_tasks("nope"),
        lambda app: app.purge(statuses=["pending", "nope"]),
    ],
)
async def test_a_bad_value_is_a_configuration_error_before_any_backend_call(app: Any, call: Any) -> None:
    with pytest.raises(ConfigurationError, match="nope|yesterday"):
        await call(app)
    assert app.task_queue.seen == [] and app.event_storage.seen == []
