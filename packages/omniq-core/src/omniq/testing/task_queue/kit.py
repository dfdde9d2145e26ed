"""What every area of the task queue suite shares: the connected queue and a few helpers.

Each area class subclasses :class:`QueueTests`, so it runs on its own as well
as inside :class:`~omniq.testing.TaskQueueSuite`; backend authors may use the
helpers in engine-specific tests too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import anyio
import pytest

from omniq.base import BaseTaskQueue
from omniq.models import Task, TaskError
from omniq.testing.fixtures import connected, make_task, now_ms

__all__ = [
    "LONG",
    "SHORT",
    "QueueFactory",
    "QueueTests",
    "assert_stored_as",
    "claim_during",
    "claim_one",
    "error",
    "populate",
    "recover",
    "token",
]

QueueFactory = Callable[[], BaseTaskQueue]

LONG = 30.0  # a lease that cannot expire during a test
SHORT = 0.3  # a lease meant to expire


class QueueTests:
    """The fixture every area of the task queue suite runs on.

    The test class provides ``task_queue_factory``: a zero-argument callable
    returning a new, unconnected queue bound to one store private to the test.
    """

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    async def task_queue(self, task_queue_factory: QueueFactory) -> AsyncIterator[BaseTaskQueue]:
        """A connected queue from the backend's factory."""
        async with connected(task_queue_factory) as (queue,):
            yield queue


def assert_stored_as(task: Task, stored: Task | None) -> None:
    """``stored`` (a queue's copy of ``task``, as read back) keeps every field of it but ``updated_at``."""
    assert stored is not None, f"task {task.id} was not stored"
    for field in task.__struct_fields__:
        if field != "updated_at":
            assert getattr(stored, field) == getattr(task, field), field


def error(message: str = "boom", attempt: int = 1) -> TaskError:
    """A retryable task error, as a worker records it."""
    return TaskError(type="ValueError", message=message, traceback="Traceback...\n", attempt=attempt)


def token(task: Task) -> str:
    """The lease token of a claimed task."""
    assert task.lease_token is not None, f"task {task.id} holds no lease"
    return task.lease_token


async def recover(q: BaseTaskQueue) -> list[Task]:
    """``q.recover()`` as a probe for :func:`~omniq.testing.wait_until`."""
    return await q.recover()


async def claim_one(q: BaseTaskQueue, queue: str = "default", *, lease: float = LONG, worker: str = "w1") -> Task:
    """Claim exactly one ready task from ``queue``; fail the test when there is none."""
    claimed = await q.claim_ready([queue], 1, lease=lease, worker_id=worker)
    assert len(claimed) == 1, f"expected one ready task in {queue!r}, claimed {len(claimed)}"
    return claimed[0]


async def claim_during(
    claimer: BaseTaskQueue, queue: str, action: Callable[[], Awaitable[object]], *, wait: float = 9.0
) -> list[Task]:
    """What a claim waiting up to ``wait`` s on ``queue`` takes while ``action`` runs (once the claim waits)."""
    claimed: list[Task] = []

    async def claim() -> None:
        claimed.extend(await claimer.claim([queue], 5, lease=LONG, worker_id="w1", wait=wait))

    with anyio.fail_after(wait + 1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)
            await anyio.sleep(0.3)
            await action()
    return claimed


async def populate(q: BaseTaskQueue) -> dict[str, list[str]]:
    """Enqueue 5 tasks in "a" and 3 in "b" (created one second apart), run two of "a"; return their ids."""
    base = now_ms(-100)
    a = [make_task(queue="a", created_at=base + timedelta(seconds=i)) for i in range(5)]
    b = [make_task(queue="b", created_at=base + timedelta(seconds=10 + i)) for i in range(3)]
    await q.enqueue_many(a + b)
    running = await q.claim_ready(["a"], 2, lease=LONG, worker_id="w1")
    assert [t.id for t in running] == [a[0].id, a[1].id]
    return {"a": [t.id for t in a], "b": [t.id for t in b]}
