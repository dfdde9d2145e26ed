"""The operator's side on NATS: pages, statistics, retry, the worker registry, headers."""

from datetime import timedelta

import anyio
import pytest

from omniq.models import Outcome, OutcomeKind, TaskError, TaskStatus, utcnow
from omniq.monitoring import TaskQuery, page_cursor
from omniq.testing import make_task, make_worker
from omniq_nats import subjects as names

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def _fail(q, task_id):
    """Claim ``task_id`` (the only ready task) and fail it for good."""
    [task] = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
    assert task.id == task_id
    error = TaskError(type="ValueError", message="boom")
    outcome = Outcome(task_id=task.id, lease_token=task.lease_token, kind=OutcomeKind.FAILED, error=error)
    assert await q.finish([outcome]) == [True]


async def test_headers_survive_every_read_path(make_queue):
    async with make_queue() as q:
        task = make_task(headers={"traceparent": "00-abc-def-01"})
        await q.enqueue(task)
        assert (await q.get(task.id)).headers == task.headers
        assert (await q.list_page(TaskQuery()))[0].headers == task.headers
        [claimed] = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
        assert claimed.headers == task.headers
        await q.cancel(task.id)
        assert (await q.retry(task.id)).headers == task.headers


async def test_list_page_filters_orders_and_pages_by_key(make_queue):
    async with make_queue() as q:
        base = utcnow() - timedelta(minutes=10)
        tasks = [make_task(created_at=base + timedelta(seconds=i), queue="a" if i % 2 else "b") for i in range(7)]
        await q.enqueue_many(tasks)
        newest_first = sorted(tasks, key=lambda t: (t.created_at, t.id), reverse=True)
        first = await q.list_page(TaskQuery(limit=3))
        assert [t.id for t in first] == [t.id for t in newest_first[:3]]
        cursor = page_cursor(first[-1].created_at, first[-1].id)
        await q.enqueue(make_task(created_at=base + timedelta(seconds=30)))  # newer: never on a later page
        second = await q.list_page(TaskQuery(limit=3, after=cursor))
        assert [t.id for t in second] == [t.id for t in newest_first[3:6]]
        only_a = await q.list_page(TaskQuery(queue="a", limit=10))
        assert {t.id for t in only_a} == {t.id for t in tasks if t.queue == "a"}
        window = await q.list_page(TaskQuery(since=tasks[2].created_at, until=tasks[4].created_at, limit=10))
        assert [t.id for t in window] == [tasks[3].id, tasks[2].id]
        assert await q.list_page(TaskQuery(status=TaskStatus.FAILED)) == []


async def test_queue_stats_counts_ready_age_and_completions(make_queue):
    async with make_queue() as q:
        old = make_task(created_at=utcnow() - timedelta(seconds=120))
        await q.enqueue(old)
        await q.enqueue(make_task(queue="other", eta=utcnow() + timedelta(hours=1)))
        assert [s.queue for s in await q.queue_stats()] == ["default", "other"]
        [default, other] = await q.queue_stats()
        assert default.counts[TaskStatus.PENDING.value] == 1 and default.counts[TaskStatus.FAILED.value] == 0
        assert default.oldest_ready_age is not None and default.oldest_ready_age >= 119
        assert other.oldest_ready_age is None
        await _fail(q, old.id)
        [default, _] = await q.queue_stats()
        assert default.counts[TaskStatus.FAILED.value] == 1
        assert len(default.completed_per_minute) == 60 and default.completed_per_minute[-1] == 1


async def test_retry_runs_a_failed_task_again(make_queue):
    async with make_queue() as q:
        task = make_task()
        await q.enqueue(task)
        await _fail(q, task.id)
        retried = await q.retry(task.id)
        assert retried is not None and retried.status is TaskStatus.PENDING
        assert retried.attempts == 0 and retried.error is None and retried.finished_at is None
        assert retried.payload == task.payload
        assert await q.retry(task.id) is None  # PENDING: not retryable
        assert await q.retry("no-such-task") is None
        [again] = await q.claim(["default"], 1, lease=30, worker_id="w", wait=5)
        assert again.id == task.id and again.attempts == 1


async def test_retry_wakes_a_waiting_worker(make_queue):
    async with make_queue() as waiter, make_queue() as admin:
        task = make_task()
        await admin.enqueue(task)
        await _fail(admin, task.id)
        got = []
        async with anyio.create_task_group() as tg:

            async def wait_for_it():
                got.extend(await waiter.claim(["default"], 1, lease=30, worker_id="w", wait=20))

            tg.start_soon(wait_for_it)
            await anyio.sleep(0.3)
            with anyio.fail_after(10):
                await admin.retry(task.id)
        assert [t.id for t in got] == [task.id]


async def test_retry_keeps_one_live_task_per_unique_key(make_queue):
    async with make_queue() as q:
        first = make_task(unique_key="k")
        await q.enqueue(first)
        await q.cancel(first.id)
        second = make_task(unique_key="k")
        assert await q.enqueue(second) == second.id
        assert await q.retry(first.id) is None
        assert (await q.get(first.id)).status is TaskStatus.CANCELLED  # left as it was
        await q.cancel(second.id)
        retried = await q.retry(first.id)
        assert retried.status is TaskStatus.PENDING and not retried.paused  # the reservation is lifted
        assert await q.enqueue(make_task(unique_key="k")) == first.id
        # first's ticket from before its cancel is still in the stream, beside the retry's: one claim only.
        claimed = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert [t.id for t in claimed] == [first.id]
        assert await q.claim_ready(["default"], 10, lease=30, worker_id="w") == []


async def test_worker_registry_is_shared_refreshed_and_expires(make_queue, prefix, raw):
    async with make_queue() as a, make_queue() as b:
        await a.register_worker(make_worker(id="w2"), ttl=60)
        await a.register_worker(make_worker(-5, id="w1"), ttl=1)
        assert [w.id for w in await b.list_workers()] == ["w1", "w2"]  # another connection sees them
        await anyio.sleep(1.5)
        assert [w.id for w in await b.list_workers()] == ["w2"]
        js = raw.jetstream()
        info = await js.stream_info(names.kv_stream(names.workers_bucket(prefix)))
        assert info.state.messages == 1  # the expired record was purged
        await b.register_worker(make_worker(id="w2", processed=7), ttl=60)
        assert [w.processed for w in await a.list_workers()] == [7]
        await a.unregister_worker("w2")
        await a.unregister_worker("unknown")
        assert await b.list_workers() == []
