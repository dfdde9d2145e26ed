"""Transactional enqueue: tasks stored through a caller's database connection, inside its transaction.

An optional capability (:attr:`~omniq.base.Capability.TRANSACTIONAL_ENQUEUE`).
A queue without it must refuse with :class:`~omniq.errors.NotSupportedError`
and store nothing; a queue with it needs the test class to provide
``caller_transaction``: a callable ``(commit: bool)`` returning an async
context manager that opens a connection of the caller's kind on the queue's
database, begins a transaction, yields the connection, and on exit commits it
(``commit`` True) or rolls it back.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from omniq.base import BaseTaskQueue, Capability
from omniq.errors import ConfigurationError, NotSupportedError
from omniq.models import TaskStatus
from omniq.testing.fixtures import make_task, requires
from omniq.testing.task_queue.kit import QueueTests, claim_one

__all__ = ["CallerTransaction", "TransactionalEnqueueTests"]

#: ``caller_transaction(commit)``: an async context manager yielding a connection in an open transaction.
CallerTransaction = Callable[[bool], AbstractAsyncContextManager[Any]]


class TransactionalEnqueueTests(QueueTests):
    """``enqueue_in_transaction``: visible on commit, gone on rollback; refused without the capability."""

    @pytest.fixture
    @requires(Capability.TRANSACTIONAL_ENQUEUE)
    async def transaction(self, task_queue: BaseTaskQueue, request: pytest.FixtureRequest) -> CallerTransaction:
        """The test class's ``caller_transaction``; a queue with the capability must provide it."""
        try:
            opener: CallerTransaction = request.getfixturevalue("caller_transaction")
        except pytest.FixtureLookupError:
            pytest.fail(
                f"{type(task_queue).__name__} declares {Capability.TRANSACTIONAL_ENQUEUE!r}: "
                "the test class must provide a caller_transaction fixture"
            )
        return opener

    async def test_without_the_capability_nothing_is_enqueued(self, task_queue: BaseTaskQueue) -> None:
        if Capability.TRANSACTIONAL_ENQUEUE in type(task_queue).capabilities:
            pytest.skip(f"{type(task_queue).__name__} has the {Capability.TRANSACTIONAL_ENQUEUE} capability")
        task = make_task()
        with pytest.raises(NotSupportedError):
            await task_queue.enqueue_in_transaction([task], object())
        assert await task_queue.get(task.id) is None

    async def test_commit_makes_the_task_claimable(
        self, task_queue: BaseTaskQueue, transaction: CallerTransaction
    ) -> None:
        task, other = make_task(), make_task()
        async with transaction(True) as connection:
            assert await task_queue.enqueue_in_transaction([task, other], connection) == [task.id, other.id]
            assert await task_queue.get(task.id) is None, "an uncommitted task is visible outside its transaction"
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.status is TaskStatus.PENDING
        claimed = {(await claim_one(task_queue)).id, (await claim_one(task_queue)).id}
        assert claimed == {task.id, other.id}

    async def test_rollback_enqueues_nothing(self, task_queue: BaseTaskQueue, transaction: CallerTransaction) -> None:
        task = make_task()
        async with transaction(False) as connection:
            assert await task_queue.enqueue_in_transaction([task], connection) == [task.id]
        assert await task_queue.get(task.id) is None
        assert await task_queue.claim_ready(["default"], 10, lease=30.0, worker_id="w1") == []

    async def test_unique_key_held_outside_returns_the_holder(
        self, task_queue: BaseTaskQueue, transaction: CallerTransaction
    ) -> None:
        holder = make_task(unique_key="report-7")
        await task_queue.enqueue(holder)
        async with transaction(True) as connection:
            assert await task_queue.enqueue_in_transaction([make_task(unique_key="report-7")], connection) == [
                holder.id
            ]
        assert await task_queue.count() == 1

    async def test_a_foreign_connection_is_refused(
        self, task_queue: BaseTaskQueue, transaction: CallerTransaction
    ) -> None:
        task = make_task()
        with pytest.raises(ConfigurationError):
            await task_queue.enqueue_in_transaction([task], object())
        assert await task_queue.get(task.id) is None
