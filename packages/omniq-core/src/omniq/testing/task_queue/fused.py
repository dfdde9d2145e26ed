"""The fused paths: a queue that writes results, or enqueue events, in the same atomic step.

Fused results and fused events are capabilities: each test skips itself unless
the task queue declares the capability (see :func:`~omniq.testing.requires`)
and the test class provides the factory fixture of the component to fuse with
(``fused_result_storage_factory``, ``fused_event_storage_factory``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue, Capability
from omniq.models import EventType, Outcome, OutcomeKind, Task, TaskEvent, TaskStatus
from omniq.testing.fixtures import GARBAGE_PAYLOAD, connected, make_event, make_result, make_task, requires
from omniq.testing.task_queue.kit import LONG, QueueTests, claim_one, error, token

__all__ = ["FusedEventTests", "FusedResultTests"]


@contextlib.asynccontextmanager
async def _fused(request: pytest.FixtureRequest, name: str, can_fuse: Callable[[Any], bool]) -> AsyncIterator[Any]:
    """A connected component from the test class's ``name`` factory fixture, which the queue fuses with.

    Skips when the test class provides no such fixture.
    """
    try:
        factory: Callable[[], Any] = request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"the test class provides no {name} fixture")
    async with connected(factory) as (component,):
        assert can_fuse(component), f"the queue cannot fuse with what {name} makes"
        yield component


def _enqueued(task: Task) -> TaskEvent:
    return make_event(task.id, EventType.ENQUEUED, queue=task.queue, func=task.func)


class FusedResultTests(QueueTests):
    """``finish(outcomes, results=...)`` storing accepted results in the queue's own atomic step."""

    @pytest.fixture
    @requires(Capability.FUSED_RESULTS)
    async def fused_result_storage(
        self, task_queue: BaseTaskQueue, request: pytest.FixtureRequest
    ) -> AsyncIterator[BaseResultStorage]:
        """A connected result storage the queue fuses with; skips when the backend has none."""
        async with _fused(request, "fused_result_storage_factory", task_queue.can_fuse_results) as storage:
            yield storage

    async def test_fused_finish_stores_accepted_results(
        self, task_queue: BaseTaskQueue, fused_result_storage: BaseResultStorage
    ) -> None:
        await task_queue.enqueue_many([make_task(), make_task()])
        a, b = await task_queue.claim_ready(["default"], 2, lease=LONG, worker_id="w1")
        ok = make_result(a.id, payload=GARBAGE_PAYLOAD, attempts=1, started_at=a.started_at)
        lost = make_result(b.id)
        outcomes = [
            Outcome(task_id=a.id, lease_token=token(a), kind=OutcomeKind.SUCCEEDED, result=ok),
            Outcome(task_id=b.id, lease_token="stale", kind=OutcomeKind.SUCCEEDED, result=lost),
        ]
        assert await task_queue.finish(outcomes, results=fused_result_storage) == [True, False]
        stored = await fused_result_storage.get(a.id)
        assert stored is not None and stored.payload == GARBAGE_PAYLOAD and stored.status is TaskStatus.SUCCEEDED
        assert await fused_result_storage.get(b.id) is None

    async def test_fused_finish_wakes_result_waiters(
        self, task_queue: BaseTaskQueue, fused_result_storage: BaseResultStorage
    ) -> None:
        await task_queue.enqueue(make_task())
        held = await claim_one(task_queue)
        got: list[Any] = []

        async def wait() -> None:
            got.append(await fused_result_storage.wait(held.id, 60))

        failure = error()
        failed = make_result(held.id, status=TaskStatus.FAILED, error=failure, payload=b"")
        outcome = Outcome(
            task_id=held.id, lease_token=token(held), kind=OutcomeKind.FAILED, error=failure, result=failed
        )
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.3)
                assert await task_queue.finish([outcome], results=fused_result_storage) == [True]
        assert got[0] is not None and got[0].status is TaskStatus.FAILED and got[0].error == failure


class FusedEventTests(QueueTests):
    """``enqueue_recorded``: a bulk enqueue's events written beside the tasks, each exactly once."""

    @pytest.fixture
    @requires(Capability.FUSED_EVENTS)
    async def fused_event_storage(
        self, task_queue: BaseTaskQueue, request: pytest.FixtureRequest
    ) -> AsyncIterator[BaseEventStorage]:
        """A connected event storage the queue fuses with; skips when the backend has none."""
        async with _fused(request, "fused_event_storage_factory", task_queue.can_fuse_events) as storage:
            yield storage

    async def test_enqueue_recorded_stores_the_tasks_and_each_event_once(
        self, task_queue: BaseTaskQueue, fused_event_storage: BaseEventStorage
    ) -> None:
        tasks = [make_task() for _ in range(5)]
        events = [_enqueued(task) for task in tasks]
        ids, unwritten = await task_queue.enqueue_recorded(tasks, events, fused_event_storage)
        assert ids == [t.id for t in tasks]
        assert await task_queue.count(status=TaskStatus.PENDING) == 5
        written = await fused_event_storage.query()
        # Each event is either written or handed back to the caller, never both, never lost.
        assert sorted(e.task_id for e in [*written, *unwritten]) == sorted(t.id for t in tasks)
        assert all(e.type is EventType.ENQUEUED for e in [*written, *unwritten])

    async def test_enqueue_recorded_records_nothing_for_a_task_it_did_not_store(
        self, task_queue: BaseTaskQueue, fused_event_storage: BaseEventStorage
    ) -> None:
        held = make_task(unique_key="report")
        await task_queue.enqueue(held)
        fresh, duplicate = make_task(), make_task(unique_key="report")
        events = [_enqueued(fresh), _enqueued(duplicate)]
        ids, unwritten = await task_queue.enqueue_recorded([fresh, duplicate], events, fused_event_storage)
        assert ids == [fresh.id, held.id]
        written = await fused_event_storage.query()
        assert [e.task_id for e in [*written, *unwritten]] == [fresh.id]
