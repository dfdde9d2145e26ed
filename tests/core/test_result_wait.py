"""``get_result(wait=True)`` between the queue's finish and the result's write (the two-write finish order).

A waiter that finds the record SUCCEEDED and no stored result is almost
always between the two writes: it waits for the value a short grace, and
settles for the result made from the record only when none comes (its
worker died there), still well before its own timeout.
"""

from __future__ import annotations

import anyio
import pytest

from omniq import AsyncOmniQ, TaskStatus
from omniq.constants import RESULT_WRITE_GRACE_SECONDS
from omniq.models import Outcome, OutcomeKind, TaskResult

pytestmark = pytest.mark.anyio


async def _finish_in_queue_only(app: AsyncOmniQ) -> str:
    """Enqueue a task and do step 1 of its finish (the queue's), as a worker about to write its result."""
    app.register(lambda: 42, name="answer")
    task_id = await app.enqueue("answer")
    (claimed,) = await app.task_queue.claim(["default"], 1, lease=30, worker_id="w")
    assert claimed.lease_token is not None
    done = Outcome(task_id=task_id, lease_token=claimed.lease_token, kind=OutcomeKind.SUCCEEDED)
    assert await app.task_queue.finish([done]) == [True]
    return task_id


async def test_a_waiter_between_the_two_writes_gets_the_value() -> None:
    async with AsyncOmniQ(backend="memory", url="result-wait-between") as app:
        task_id = await _finish_in_queue_only(app)
        task = await app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.SUCCEEDED

        async def write_result_late() -> None:
            await anyio.sleep(RESULT_WRITE_GRACE_SECONDS / 4)
            payload = app.serializer.dumps(42)
            await app.result_storage.set(TaskResult(task_id=task_id, status=TaskStatus.SUCCEEDED, payload=payload))

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_result_late)
            result = await app.get_result(task_id, wait=True, timeout=30)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 42


async def test_a_waiter_settles_for_the_record_when_no_value_comes() -> None:
    async with AsyncOmniQ(backend="memory", url="result-wait-never") as app:
        task_id = await _finish_in_queue_only(app)
        started = anyio.current_time()
        result = await app.get_result(task_id, wait=True, timeout=60)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result is None
        assert anyio.current_time() - started < 30  # the grace, not the waiter's timeout
