"""Unique keys: one live task per key in the whole store (every queue); a fresh task once the holder is done."""

from __future__ import annotations

from typing import Any

import pytest

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind
from omniq.testing.fixtures import make_task
from omniq.testing.task_queue.kit import QueueTests, claim_one, token

__all__ = ["UniqueKeyTests"]


class UniqueKeyTests(QueueTests):
    """An enqueue whose ``unique_key`` a PENDING or RUNNING task holds returns that task's id."""

    async def test_unique_key_while_pending_returns_first_id(self, task_queue: BaseTaskQueue) -> None:
        first = make_task(unique_key="report")
        assert await task_queue.enqueue(first) == first.id
        assert await task_queue.enqueue(make_task(unique_key="report")) == first.id
        assert await task_queue.count() == 1

    async def test_unique_key_while_running_returns_first_id(self, task_queue: BaseTaskQueue) -> None:
        first = make_task(unique_key="report")
        await task_queue.enqueue(first)
        await claim_one(task_queue)
        assert await task_queue.enqueue(make_task(unique_key="report")) == first.id
        assert await task_queue.enqueue_many([make_task(unique_key="report")]) == [first.id]
        assert await task_queue.count() == 1

    async def test_unique_key_duplicates_in_one_batch(self, task_queue: BaseTaskQueue) -> None:
        a, b, c, d = (make_task(unique_key=key) for key in ("k1", "k2", "k1", "k2"))
        free = make_task()
        assert await task_queue.enqueue_many([a, b, c, free, d]) == [a.id, b.id, a.id, free.id, b.id]
        assert await task_queue.count() == 3

    @pytest.mark.parametrize("kind", [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, "cancel"])
    async def test_unique_key_after_terminal_creates_new_task(self, task_queue: BaseTaskQueue, kind: Any) -> None:
        first = make_task(unique_key="nightly")
        await task_queue.enqueue(first)
        if kind == "cancel":
            assert await task_queue.cancel(first.id)
        else:
            held = await claim_one(task_queue)
            assert await task_queue.finish([Outcome(task_id=held.id, lease_token=token(held), kind=kind)])
        second = make_task(unique_key="nightly")
        assert await task_queue.enqueue(second) == second.id != first.id
        assert await task_queue.enqueue(make_task(unique_key="nightly")) == second.id
        assert await task_queue.count() == 2

    async def test_a_unique_key_holds_across_queues(self, task_queue: BaseTaskQueue) -> None:
        """The scope of a key is the store (a prefix, a schema, a file, a directory), not a queue."""
        first = make_task(queue="mail", unique_key="report")
        assert await task_queue.enqueue(first) == first.id
        assert await task_queue.enqueue(make_task(queue="sms", unique_key="report")) == first.id
        assert await task_queue.enqueue_many([make_task(queue="sms", unique_key="report")]) == [first.id]
        await claim_one(task_queue, "mail")
        assert await task_queue.enqueue(make_task(queue="sms", unique_key="report")) == first.id
        assert (await task_queue.count(), await task_queue.count(queue="sms")) == (1, 0)
