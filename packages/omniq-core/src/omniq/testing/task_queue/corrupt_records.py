"""Corrupted records: reading one is a typed error; claiming one fails it once; upkeep goes on.

A stored record can go bad behind the queue's back (a hand edit, a bug in an
older version, a disk): a naive datetime, a duration that is not a finite
number, an undecodable sub-record. The contract: reading it (``get``,
``get_many``, ``list``) raises :class:`~omniq.errors.SerializationError`,
never a raw decoder error and never a task that blows up later; claiming it
neither fails the claim batch nor drops the task: it comes back as a
:class:`~omniq._records.CorruptTask` under a lease, which the worker ends
FAILED, and it is never claimed again.

Writing a corrupted record takes the engine's own tools, so these tests need
a ``corrupt_record`` fixture from the test class: an async callable
``corrupt(task_id, field)`` that corrupts one field of a stored task, for
``field`` in :data:`CORRUPTIBLE` (it may ``pytest.skip`` a field its engine
cannot hold). Without it they skip with a reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from omniq.base import BaseTaskQueue, CorruptTask
from omniq.errors import SerializationError
from omniq.models import Outcome, OutcomeKind, TaskError, TaskStatus
from omniq.testing.fixtures import make_task
from omniq.testing.task_queue.kit import LONG, QueueTests

__all__ = ["CORRUPTIBLE", "CorruptRecordTests", "Corrupter"]

#: the fields a ``corrupt_record`` fixture must be able to corrupt:
#: ``expires_at`` a naive (or unreadable) time, ``result_ttl`` not a finite number,
#: ``error`` and ``depends_on`` undecodable.
CORRUPTIBLE = ("expires_at", "result_ttl", "error", "depends_on")

Corrupter = Callable[[str, str], Awaitable[None]]


class CorruptRecordTests(QueueTests):
    """Corrupted stored records; run when the test class provides ``corrupt_record``."""

    @pytest.fixture
    def corrupt_record(self) -> Corrupter:
        """Override in the test class: ``async corrupt(task_id, field)`` writes a corrupted field."""
        pytest.skip("the test class provides no corrupt_record fixture (a way to write a corrupted record)")

    @pytest.mark.parametrize("field", CORRUPTIBLE)
    async def test_a_corrupted_record_reads_as_a_serialization_error(
        self, task_queue: BaseTaskQueue, corrupt_record: Corrupter, field: str
    ) -> None:
        task = make_task(result_ttl=60.0)
        await task_queue.enqueue(task)
        await corrupt_record(task.id, field)
        with pytest.raises(SerializationError):
            await task_queue.get(task.id)
        with pytest.raises(SerializationError):
            await task_queue.get_many([task.id])
        with pytest.raises(SerializationError):
            await task_queue.list()

    @pytest.mark.parametrize("field", CORRUPTIBLE)
    async def test_a_corrupted_record_is_counted_cancelled_and_purged(
        self, task_queue: BaseTaskQueue, corrupt_record: Corrupter, field: str
    ) -> None:
        """Upkeep never stops at a corrupted record: it is counted, can be cancelled, and purged."""
        bad, other = make_task(result_ttl=60.0), make_task()
        await task_queue.enqueue_many([bad, other])
        await corrupt_record(bad.id, field)
        assert await task_queue.count() == 2
        assert await task_queue.count(status=TaskStatus.PENDING) == 2
        assert await task_queue.cancel(bad.id)
        assert await task_queue.count(status=TaskStatus.CANCELLED) == 1
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert [t.id for t in claimed] == [other.id]
        assert await task_queue.purge() == 2

    @pytest.mark.parametrize("field", CORRUPTIBLE)
    async def test_a_corrupted_record_is_claimed_for_failure_once(
        self, task_queue: BaseTaskQueue, corrupt_record: Corrupter, field: str
    ) -> None:
        good, bad = make_task(), make_task(priority=5, result_ttl=60.0)  # the corrupted one sorts first
        await task_queue.enqueue_many([good, bad])
        await corrupt_record(bad.id, field)
        claimed = {t.id: t for t in await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")}
        assert set(claimed) == {good.id, bad.id}, "a corrupted record must not fail, or drop out of, a claim"
        held = claimed[bad.id]
        assert isinstance(held, CorruptTask) and held.problem, "the claim hands the worker a CorruptTask"
        assert not isinstance(claimed[good.id], CorruptTask)
        assert (held.status, held.attempts, held.func) == (TaskStatus.RUNNING, 1, bad.func)
        assert held.lease_token is not None
        error = TaskError(type="CorruptRecord", message=held.problem, attempt=1, retryable=False)
        outcome = Outcome(task_id=bad.id, lease_token=held.lease_token, kind=OutcomeKind.FAILED, error=error)
        assert await task_queue.finish([outcome]) == [True]
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w2") == []
        assert await task_queue.count(status=TaskStatus.FAILED) == 1
        assert await task_queue.purge() == 2  # a corrupted record can always be deleted
