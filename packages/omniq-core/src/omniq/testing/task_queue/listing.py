"""Listing, counting and purging tasks by status and queue."""

from __future__ import annotations

from datetime import timedelta

from omniq.base import BaseTaskQueue
from omniq.models import TaskStatus, new_id
from omniq.testing.fixtures import make_task, now_ms
from omniq.testing.task_queue.kit import LONG, QueueTests, populate

__all__ = ["ListingTests"]


class ListingTests(QueueTests):
    """``list`` (newest first, limit and offset), ``count`` and ``purge``, filtered by status and queue."""

    async def test_list_orders_by_created_at_then_id_descending(self, task_queue: BaseTaskQueue) -> None:
        """``list_page``'s order, whatever the enqueue order: equal ``created_at`` by id, highest first."""
        moment = now_ms(-10)
        ids = sorted(new_id() for _ in range(6))
        tied = [make_task(id=ids[i], created_at=moment) for i in (3, 0, 5, 1, 4, 2)]
        older = make_task(created_at=moment - timedelta(seconds=1))
        newer = make_task(created_at=moment + timedelta(seconds=1))
        await task_queue.enqueue_many([older, *tied[:3], newer])
        await task_queue.enqueue_many(tied[3:])
        expected = [newer.id, *reversed(ids), older.id]
        assert [t.id for t in await task_queue.list(limit=100)] == expected
        assert [t.id for t in await task_queue.list(limit=3, offset=2)] == expected[2:5]

    async def test_list_filters_newest_first_with_limit_and_offset(self, task_queue: BaseTaskQueue) -> None:
        ids = await populate(task_queue)
        newest_first = list(reversed(ids["a"] + ids["b"]))
        assert [t.id for t in await task_queue.list(limit=100)] == newest_first
        assert [t.id for t in await task_queue.list(limit=3)] == newest_first[:3]
        assert [t.id for t in await task_queue.list(limit=3, offset=2)] == newest_first[2:5]
        assert [t.id for t in await task_queue.list(queue="a")] == list(reversed(ids["a"]))
        assert [t.id for t in await task_queue.list(status=TaskStatus.RUNNING)] == [ids["a"][1], ids["a"][0]]
        pending_a = await task_queue.list(status=TaskStatus.PENDING, queue="a")
        assert [t.id for t in pending_a] == list(reversed(ids["a"][2:]))
        assert await task_queue.list(queue="nothing") == []
        assert await task_queue.list(limit=10, offset=100) == []

    async def test_count(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.count() == 0
        await populate(task_queue)
        assert await task_queue.count() == 8
        assert await task_queue.count(queue="a") == 5
        assert await task_queue.count(status=TaskStatus.RUNNING) == 2
        assert await task_queue.count(status=TaskStatus.PENDING, queue="b") == 3
        assert await task_queue.count(status=TaskStatus.SUCCEEDED) == 0

    async def test_purge_by_queue_status_and_all(self, task_queue: BaseTaskQueue) -> None:
        ids = await populate(task_queue)
        assert await task_queue.purge(queue="b") == 3
        assert await task_queue.get(ids["b"][0]) is None
        assert await task_queue.purge(statuses=[TaskStatus.RUNNING]) == 2
        assert await task_queue.count() == 3
        assert await task_queue.purge(queue="a", statuses=[TaskStatus.SUCCEEDED]) == 0
        assert await task_queue.purge() == 3
        assert await task_queue.count() == 0
        assert await task_queue.claim_ready(["a", "b"], 10, lease=LONG, worker_id="w1") == []
        assert await task_queue.purge() == 0
