"""The fused-path part of the task queue conformance suite (see :class:`TaskQueueSuite`).

Fused results and fused events are capabilities: each test skips itself unless
the backend declares the capability and the test class provides the factory
fixture of the component to fuse with.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue, Capability
from omniq.models import EventType, Outcome, OutcomeKind, Task, TaskEvent, TaskStatus
from omniq.testing._queue_kit import LONG, claim_one as _claim_one, error as _error, token as _tok
from omniq.testing.fixtures import GARBAGE_PAYLOAD, connected, make_event, make_result, make_task

__all__ = ["FusedPathTests"]


@contextlib.asynccontextmanager
async def _fused(
    task_queue: BaseTaskQueue, request: pytest.FixtureRequest, capability: str, factory_fixture: str
) -> AsyncIterator[Any]:
    """The connected component a fused-path test needs: skips unless the backend declares
    ``capability`` and the test class provides the ``factory_fixture`` that makes it."""
    if capability not in type(task_queue).capabilities:
        pytest.skip(f"{type(task_queue).__name__} lacks the {capability} capability")
    try:
        factory = request.getfixturevalue(factory_fixture)
    except pytest.FixtureLookupError:
        pytest.skip(f"the test class provides no {factory_fixture} fixture")
    async with connected(factory) as (component,):
        yield component


class FusedPathTests:
    """Fused results and fused events; mixed into :class:`~omniq.testing.TaskQueueSuite`."""

    # -- fused results --------------------------------------------------------------------------------

    @pytest.fixture
    async def fused_result_storage(
        self, task_queue: BaseTaskQueue, request: pytest.FixtureRequest
    ) -> AsyncIterator[BaseResultStorage]:
        """A connected result storage the queue fuses with; skips when the backend has none."""
        async with _fused(task_queue, request, Capability.FUSED_RESULTS, "fused_result_storage_factory") as storage:
            assert task_queue.can_fuse_results(storage)
            yield storage

    async def test_fused_finish_stores_accepted_results(
        self, task_queue: BaseTaskQueue, fused_result_storage: BaseResultStorage
    ) -> None:
        await task_queue.enqueue_many([make_task(), make_task()])
        a, b = await task_queue.claim_ready(["default"], 2, lease=LONG, worker_id="w1")
        ok = make_result(a.id, payload=GARBAGE_PAYLOAD, attempts=1, started_at=a.started_at)
        lost = make_result(b.id)
        outcomes = [
            Outcome(task_id=a.id, lease_token=_tok(a), kind=OutcomeKind.SUCCEEDED, result=ok),
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
        held = await _claim_one(task_queue)
        got: list[Any] = []

        async def wait() -> None:
            got.append(await fused_result_storage.wait(held.id, 60))

        error = _error()
        failed = make_result(held.id, status=TaskStatus.FAILED, error=error, payload=b"")
        outcome = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.FAILED, error=error, result=failed)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.3)
                assert await task_queue.finish([outcome], results=fused_result_storage) == [True]
        assert got[0] is not None and got[0].status is TaskStatus.FAILED and got[0].error == error

    # -- fused events ---------------------------------------------------------------------------------

    @pytest.fixture
    async def fused_event_storage(
        self, task_queue: BaseTaskQueue, request: pytest.FixtureRequest
    ) -> AsyncIterator[BaseEventStorage]:
        """A connected event storage the queue fuses with; skips when the backend has none."""
        async with _fused(task_queue, request, Capability.FUSED_EVENTS, "fused_event_storage_factory") as storage:
            assert task_queue.can_fuse_events(storage)
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


def _enqueued(task: Task) -> TaskEvent:
    return make_event(task.id, EventType.ENQUEUED, queue=task.queue, func=task.func)
