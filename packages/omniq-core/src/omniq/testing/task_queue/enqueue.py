"""Enqueue and read back: every field kept, batches in order, stored copies."""

from __future__ import annotations

from datetime import timedelta

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing.fixtures import GARBAGE_PAYLOAD, make_task, now_ms
from omniq.testing.task_queue.kit import LONG, QueueTests, assert_stored_as, claim_one, error, token

__all__ = ["EnqueueTests"]


class EnqueueTests(QueueTests):
    """``enqueue``, ``enqueue_many``, ``get`` and ``get_many``."""

    async def test_enqueue_get_round_trip_keeps_every_field(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(
            "app.tasks:send",
            payload=GARBAGE_PAYLOAD,
            queue="mail",
            priority=7,
            unique_key="send-42",
            eta=now_ms(3600),
            max_retries=4,
            timeout=12.5,
            expires_at=now_ms(7200),
            result_ttl=60.0,
            depends_on=("a" * 32, "b" * 32),
        )
        assert await task_queue.enqueue(task) == task.id
        stored = await task_queue.get(task.id)
        assert_stored_as(task, stored)
        assert stored is not None and stored.created_at.utcoffset() == timedelta(0)

    async def test_schedule_fields_round_trip(self, task_queue: BaseTaskQueue) -> None:
        by_interval = make_task(interval=90.0, eta=now_ms(90), result_ttl=0.5)
        by_cron = make_task(cron="*/5 * * * *", eta=now_ms(300), expires_at=now_ms(600), depends_on=("x" * 32,))
        await task_queue.enqueue_many([by_interval, by_cron])
        one, two = await task_queue.get_many([by_interval.id, by_cron.id])
        assert one is not None and two is not None
        assert (one.interval, one.cron, one.eta, one.result_ttl) == (90.0, None, by_interval.eta, 0.5)
        assert one.recurring and two.recurring
        assert (two.cron, two.interval, two.eta, two.expires_at) == (
            "*/5 * * * *",
            None,
            by_cron.eta,
            by_cron.expires_at,
        )
        assert two.depends_on == ("x" * 32,)

    async def test_large_binary_payload(self, task_queue: BaseTaskQueue) -> None:
        payload = GARBAGE_PAYLOAD * 1024  # ~270 kB of non-UTF-8 bytes
        task = make_task(payload=payload)
        await task_queue.enqueue(task)
        claimed = await claim_one(task_queue)
        assert claimed.payload == payload

    async def test_get_unknown_is_none(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.get("0" * 32) is None
        assert await task_queue.get_many(["0" * 32]) == [None]

    async def test_returned_tasks_are_copies(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(error=error())
        await task_queue.enqueue(task)
        task.priority = 99
        fetched = await task_queue.get(task.id)
        assert fetched is not None and fetched.priority == 0
        fetched.queue = "elsewhere"
        assert fetched.error is not None
        fetched.error.message = "changed"
        again = await task_queue.get(task.id)
        assert again is not None and again.queue == "default"
        assert again.error is not None and again.error.message == "boom"

    async def test_enqueue_many_keeps_order_and_returns_ids(self, task_queue: BaseTaskQueue) -> None:
        tasks = [make_task(payload=bytes([i])) for i in range(20)]
        assert await task_queue.enqueue_many(tasks) == [t.id for t in tasks]
        assert await task_queue.enqueue_many([]) == []
        claimed = await task_queue.claim_ready(["default"], 20, lease=LONG, worker_id="w1")
        assert [t.id for t in claimed] == [t.id for t in tasks]
        assert [t.payload for t in claimed] == [bytes([i]) for i in range(20)]

    async def test_single_and_batch_enqueues_agree(self, task_queue: BaseTaskQueue) -> None:
        """A lone enqueue and a batch's keep the same fields and the one claim order.

        A backend may store a lone enqueue by a path of its own: it must keep every field and
        the one claim order (priority, then FIFO) with tasks enqueued in batches.
        """
        tasks = [make_task(priority=i % 2, max_retries=i, timeout=1.5, result_ttl=3.0) for i in range(6)]
        for task in tasks[:2]:
            assert await task_queue.enqueue(task) == task.id
        assert await task_queue.enqueue_many(tasks[2:4]) == [t.id for t in tasks[2:4]]
        for task in tasks[4:]:
            assert await task_queue.enqueue(task) == task.id
        for task, stored in zip(tasks, await task_queue.get_many([t.id for t in tasks]), strict=True):
            assert_stored_as(task, stored)
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        expected = sorted(tasks, key=lambda t: -t.priority)  # stable: FIFO within a priority
        assert [t.id for t in claimed] == [t.id for t in expected]

    async def test_enqueue_of_a_finished_id_replaces_the_task(self, task_queue: BaseTaskQueue) -> None:
        """The core's ids are fresh, but :meth:`BaseTaskQueue.retry`'s default re-enqueues a finished task's id."""
        done, cancelled = make_task(queue="a"), make_task(queue="a")
        await task_queue.enqueue_many([done, cancelled])
        held = await claim_one(task_queue, "a")
        assert held.id == done.id
        failure = error(attempt=1)
        ended = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.FAILED, error=failure)
        assert await task_queue.finish([ended]) == [True]
        assert await task_queue.cancel(cancelled.id)
        again = make_task(id=done.id, queue="b", priority=4, payload=b"\x01again")
        assert await task_queue.enqueue_many([again]) == [done.id]
        assert await task_queue.enqueue(make_task(id=cancelled.id, queue="a")) == cancelled.id
        stored = await task_queue.get(done.id)
        assert stored is not None
        assert (stored.status, stored.queue, stored.priority, stored.payload) == (
            TaskStatus.PENDING,
            "b",
            4,
            b"\x01again",
        )
        assert (stored.attempts, stored.error, stored.started_at, stored.finished_at, stored.worker_id) == (
            0,
            None,
            None,
            None,
            None,
        )
        assert (await task_queue.count(), await task_queue.count(queue="a"), await task_queue.count(queue="b")) == (
            2,
            1,
            1,
        )
        claimed = await task_queue.claim_ready(["a", "b"], 10, lease=LONG, worker_id="w1")
        assert sorted((t.id, t.attempts) for t in claimed) == sorted([(done.id, 1), (cancelled.id, 1)])

    async def test_enqueue_of_a_running_id_leaves_the_task(self, task_queue: BaseTaskQueue) -> None:
        task = make_task()
        await task_queue.enqueue(task)
        held = await claim_one(task_queue)
        assert await task_queue.enqueue(make_task(id=task.id, priority=9)) == task.id
        assert await task_queue.enqueue_many([make_task(id=task.id, queue="other")]) == [task.id]
        stored = await task_queue.get(task.id)
        assert stored is not None
        assert (stored.status, stored.lease_token, stored.priority, stored.queue) == (
            TaskStatus.RUNNING,
            held.lease_token,
            0,
            "default",
        )
        assert await task_queue.count() == 1
