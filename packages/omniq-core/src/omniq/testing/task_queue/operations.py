"""The operator's view: pages of tasks, queue statistics, retrying a finished task, headers.

``list_page`` (filters, newest first, keyset paging that never repeats or
skips a task under inserts and deletes), ``queue_stats`` (counts with zeros,
the oldest ready task's age, completions per minute), ``retry`` (FAILED,
CANCELLED or EXPIRED back to PENDING with a fresh attempt budget) and
``Task.headers`` on every read path.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus, utcnow
from omniq.monitoring import THROUGHPUT_MINUTES, TaskQuery, page_cursor
from omniq.testing.fixtures import CLOCK_SKEW, connected, make_task, now_ms, wait_until
from omniq.testing.task_queue.kit import (
    LONG,
    SHORT,
    QueueFactory,
    QueueTests,
    claim_during,
    claim_one,
    error,
    recover,
    token,
)

__all__ = ["HeaderTests", "ListPageTests", "QueueStatsTests", "RetryTests"]

HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tenant": "acme"}


def ids(tasks: list[Task]) -> list[str]:
    """The ids of ``tasks``, in order."""
    return [task.id for task in tasks]


async def page(q: BaseTaskQueue, **filters: Any) -> list[str]:
    """The ids of one ``list_page`` call."""
    return ids(await q.list_page(TaskQuery(**filters)))


async def finish_as(q: BaseTaskQueue, kind: OutcomeKind, queue: str = "default") -> Task:
    """Claim one task of ``queue`` and finish it with ``kind``; return it as stored."""
    held = await claim_one(q, queue)
    outcome = Outcome(task_id=held.id, lease_token=token(held), kind=kind, error=error())
    assert await q.finish([outcome]) == [True]
    stored = await q.get(held.id)
    assert stored is not None
    return stored


class ListPageTests(QueueTests):
    """``list_page``: equality filters, ``since <= created_at < until``, newest first, keyset paging."""

    async def test_filters_order_and_limit(self, task_queue: BaseTaskQueue) -> None:
        base = now_ms(-100)
        a = [make_task(queue="a", created_at=base + timedelta(seconds=i)) for i in range(4)]
        b = [make_task(queue="b", func="mod.other", created_at=base + timedelta(seconds=10 + i)) for i in range(2)]
        await task_queue.enqueue_many(a + b)
        running = await claim_one(task_queue, "a")
        assert running.id == a[0].id
        newest_first = ids(list(reversed(a + b)))
        assert await page(task_queue, limit=100) == newest_first
        assert await page(task_queue) == newest_first  # the default limit is larger than six
        assert await page(task_queue, limit=3) == newest_first[:3]
        assert await page(task_queue, queue="a") == ids(list(reversed(a)))
        assert await page(task_queue, func="mod.other") == ids(list(reversed(b)))
        assert await page(task_queue, func="mod.other", queue="a") == []
        assert await page(task_queue, status=TaskStatus.RUNNING) == [a[0].id]
        assert await page(task_queue, status=TaskStatus.PENDING, queue="a", limit=2) == [a[3].id, a[2].id]
        assert await page(task_queue, status=TaskStatus.SUCCEEDED) == []
        assert await page(task_queue, queue="nothing") == []

    async def test_time_range_is_half_open(self, task_queue: BaseTaskQueue) -> None:
        base = now_ms(-100)
        tasks = [make_task(created_at=base + timedelta(seconds=i)) for i in range(5)]
        await task_queue.enqueue_many(tasks)
        since, until = tasks[1].created_at, tasks[3].created_at
        assert await page(task_queue, since=since, until=until) == [tasks[2].id, tasks[1].id]
        assert await page(task_queue, since=since) == ids(list(reversed(tasks[1:])))
        assert await page(task_queue, until=until) == [tasks[2].id, tasks[1].id, tasks[0].id]
        assert await page(task_queue, since=since, until=since) == []
        just_after = since + timedelta(milliseconds=1)
        assert await page(task_queue, since=just_after, until=until) == [tasks[2].id]

    async def test_equal_created_at_orders_by_id_descending(self, task_queue: BaseTaskQueue) -> None:
        moment = now_ms(-10)
        tasks = [make_task(created_at=moment) for _ in range(4)]
        await task_queue.enqueue_many(tasks)
        by_id = sorted(ids(tasks), reverse=True)
        assert await page(task_queue) == by_id
        first = await task_queue.list_page(TaskQuery(limit=2))
        cursor = page_cursor(first[-1].created_at, first[-1].id)
        assert await page(task_queue, limit=2, after=cursor) == by_id[2:]

    async def test_keyset_paging_never_repeats_or_skips_under_inserts_and_deletes(
        self, task_queue: BaseTaskQueue
    ) -> None:
        base = now_ms(-100)

        def at(seconds: float, queue: str = "p", **fields: Any) -> Task:
            return make_task(queue=queue, created_at=base + timedelta(seconds=seconds), **fields)

        keep = [at(i) for i in range(10)]
        doomed_early, doomed_cursor = at(2.5, "doomed"), at(5.5, "doomed")
        await task_queue.enqueue_many([*keep, doomed_early, doomed_cursor])
        first = await task_queue.list_page(TaskQuery(limit=5))
        assert ids(first) == [keep[9].id, keep[8].id, keep[7].id, keep[6].id, doomed_cursor.id]
        # Between pages: a newer task and one tied with the cursor but with a larger id (both before
        # the cursor: never shown), an older one and a tie with a smaller id (after it: shown), and
        # deletes of the cursor's own task and of one not reached yet.
        newer, tie_before = at(50), at(5.5, id="f" * 32)
        older, tie_after = at(4.5), at(5.5, id="0" * 31 + "1")
        await task_queue.enqueue_many([newer, tie_before, older, tie_after])
        assert await task_queue.purge(queue="doomed") == 2
        seen = list(first)
        after = page_cursor(first[-1].created_at, first[-1].id)
        for _ in range(20):
            next_page = await task_queue.list_page(TaskQuery(limit=3, after=after))
            seen += next_page
            if len(next_page) < 3:
                break
            after = page_cursor(next_page[-1].created_at, next_page[-1].id)
        seen_ids = ids(seen)
        assert len(seen_ids) == len(set(seen_ids)), "a task was repeated"
        assert {t.id for t in keep} <= set(seen_ids), "a task was skipped"
        assert tie_after.id in seen_ids and older.id in seen_ids
        assert newer.id not in seen_ids and tie_before.id not in seen_ids and doomed_early.id not in seen_ids
        keys = [(t.created_at, t.id) for t in seen]
        assert keys == sorted(keys, reverse=True)
        assert len(seen_ids) == 10 + 1 + 2  # keep, the deleted cursor (first page), older and tie_after

    async def test_paging_with_filters_keeps_them(self, task_queue: BaseTaskQueue) -> None:
        base = now_ms(-100)
        tasks = [make_task(queue="ab"[i % 2], created_at=base + timedelta(seconds=i)) for i in range(9)]
        await task_queue.enqueue_many(tasks)
        wanted = ids([t for t in reversed(tasks) if t.queue == "a"])
        first = await task_queue.list_page(TaskQuery(queue="a", limit=2))
        cursor = page_cursor(first[-1].created_at, first[-1].id)
        rest = await page(task_queue, queue="a", limit=10, after=cursor)
        assert ids(first) + rest == wanted


class QueueStatsTests(QueueTests):
    """``queue_stats``: one entry per queue holding tasks, sorted by name."""

    async def test_no_tasks_no_stats(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.queue_stats() == []

    async def test_counts_every_status_and_sorts_by_queue(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(queue=q) for q in ("c", "a", "a", "a", "b")])
        await finish_as(task_queue, OutcomeKind.SUCCEEDED, "a")
        await claim_one(task_queue, "a")
        stats = await task_queue.queue_stats()
        assert [s.queue for s in stats] == ["a", "b", "c"]
        zeros = {status.value: 0 for status in TaskStatus}
        assert stats[0].counts == {**zeros, "pending": 1, "running": 1, "succeeded": 1}
        assert stats[1].counts == {**zeros, "pending": 1}
        assert stats[2].counts == {**zeros, "pending": 1}
        for entry in stats:
            assert len(entry.completed_per_minute) == THROUGHPUT_MINUTES

    async def test_oldest_ready_age(self, task_queue: BaseTaskQueue) -> None:
        long_ago = now_ms(-1000)
        ready = make_task(queue="a", created_at=now_ms(-100))
        paused = make_task(queue="a", created_at=long_ago)
        later = make_task(queue="a", created_at=long_ago, eta=now_ms(3600))
        due = make_task(queue="a", created_at=now_ms(-5), eta=now_ms(-50))
        busy = make_task(queue="a", created_at=now_ms(-2000), priority=9)
        idle = [make_task(queue="b", created_at=long_ago), make_task(queue="b", eta=now_ms(3600))]
        await task_queue.enqueue_many([ready, paused, later, due, busy, *idle])
        assert await task_queue.set_paused(paused.id, True) and await task_queue.set_paused(idle[0].id, True)
        assert (await claim_one(task_queue, "a")).id == busy.id
        a, b = await task_queue.queue_stats()
        assert a.oldest_ready_age is not None and 100 - CLOCK_SKEW <= a.oldest_ready_age < 160
        assert b.oldest_ready_age is None and b.counts["pending"] == 2
        await task_queue.cancel(ready.id)
        (a, _) = await task_queue.queue_stats()
        assert a.oldest_ready_age is not None and 50 - CLOCK_SKEW <= a.oldest_ready_age < 110  # ``due``, by its eta

    async def test_completed_per_minute_counts_succeeded_and_failed(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(queue="a", max_retries=1) for _ in range(6)])
        await task_queue.enqueue(make_task(queue="b"))
        for kind in (OutcomeKind.SUCCEEDED, OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.RETRY):
            await finish_as(task_queue, kind, "a")
        await finish_as(task_queue, OutcomeKind.EXPIRED, "a")
        cancelled = await task_queue.list(status=TaskStatus.PENDING, queue="a", limit=1)
        assert await task_queue.cancel(cancelled[0].id)
        a, b = await task_queue.queue_stats()
        for entry in (a, b):
            assert len(entry.completed_per_minute) == THROUGHPUT_MINUTES
        # The current minute is the last bucket; a minute may have turned since the finishes.
        assert sum(a.completed_per_minute[-2:]) == 3 == sum(a.completed_per_minute)
        assert b.completed_per_minute == [0] * THROUGHPUT_MINUTES
        counts = a.counts
        assert (counts["succeeded"], counts["failed"], counts["expired"], counts["cancelled"]) == (2, 1, 1, 1)
        assert (counts["pending"], counts["running"]) == (1, 0)


class RetryTests(QueueTests):
    """``retry``: a FAILED, CANCELLED or EXPIRED task runs again; anything else is left alone."""

    def assert_reset(self, retried: Task | None, before: Task, started: datetime) -> None:
        assert retried is not None
        assert (retried.status, retried.attempts, retried.eta, retried.paused) == (TaskStatus.PENDING, 0, None, False)
        assert (retried.error, retried.started_at, retried.finished_at, retried.worker_id) == (None, None, None, None)
        assert (retried.lease_token, retried.lease_expires_at) == (None, None)
        assert retried.updated_at is not None and retried.updated_at >= started - timedelta(seconds=CLOCK_SKEW)
        kept = ("id", "func", "payload", "queue", "priority", "unique_key", "max_retries", "timeout", "headers")
        assert {f: getattr(retried, f) for f in kept} == {f: getattr(before, f) for f in kept}

    @pytest.mark.parametrize("kind", [OutcomeKind.FAILED, OutcomeKind.EXPIRED])
    async def test_retry_finished_task_runs_again(self, task_queue: BaseTaskQueue, kind: OutcomeKind) -> None:
        task = make_task(max_retries=1, priority=3, unique_key="job", headers=HEADERS, timeout=9.0)
        await task_queue.enqueue(task)
        done = await finish_as(task_queue, kind)
        started = utcnow()
        retried = await task_queue.retry(task.id)
        self.assert_reset(retried, done, started)
        assert await task_queue.get(task.id) == retried
        again = await claim_one(task_queue)
        assert (again.id, again.attempts, again.headers) == (task.id, 1, HEADERS)
        ok = Outcome(task_id=again.id, lease_token=token(again), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([ok]) == [True]
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.status is TaskStatus.SUCCEEDED and stored.attempts == 1

    async def test_retry_cancelled_paused_delayed_task_is_ready_now(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(eta=now_ms(3600))
        await task_queue.enqueue(task)
        assert await task_queue.set_paused(task.id, True)
        assert await task_queue.cancel(task.id)
        before = await task_queue.get(task.id)
        assert before is not None
        self.assert_reset(await task_queue.retry(task.id), before, utcnow())
        assert (await claim_one(task_queue)).id == task.id

    async def test_retry_recurring_task(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(interval=3600.0)
        await task_queue.enqueue(task)
        assert await task_queue.cancel(task.id)
        retried = await task_queue.retry(task.id)
        assert retried is not None and retried.status is TaskStatus.PENDING and retried.interval == 3600.0
        held = await claim_one(task_queue)
        tick = now_ms(3600)
        rescheduled = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RESCHEDULE, eta=tick)
        assert await task_queue.finish([rescheduled]) == [True]
        stored = await task_queue.get(task.id)
        assert stored is not None and (stored.status, stored.eta) == (TaskStatus.PENDING, tick)

    async def test_other_statuses_and_unknown_ids_are_left_alone(self, task_queue: BaseTaskQueue) -> None:
        succeeded, running, pending = make_task(), make_task(), make_task()
        await task_queue.enqueue(succeeded)
        await finish_as(task_queue, OutcomeKind.SUCCEEDED)
        await task_queue.enqueue(running)
        await claim_one(task_queue)
        await task_queue.enqueue(pending)
        before = await task_queue.get_many([succeeded.id, running.id, pending.id])
        for task in (succeeded, running, pending):
            assert await task_queue.retry(task.id) is None
        assert await task_queue.get_many([succeeded.id, running.id, pending.id]) == before
        assert await task_queue.retry("0" * 32) is None
        assert await task_queue.get("0" * 32) is None

    async def test_retry_keeps_one_live_task_per_unique_key(self, task_queue: BaseTaskQueue) -> None:
        first = make_task(unique_key="nightly")
        await task_queue.enqueue(first)
        await finish_as(task_queue, OutcomeKind.FAILED)
        second = make_task(unique_key="nightly")
        assert await task_queue.enqueue(second) == second.id
        assert await task_queue.retry(first.id) is None, "two live tasks would hold one unique key"
        stored = await task_queue.get(first.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert await task_queue.cancel(second.id)
        retried = await task_queue.retry(first.id)
        assert retried is not None and retried.status is TaskStatus.PENDING
        assert await task_queue.enqueue(make_task(unique_key="nightly")) == first.id
        assert await task_queue.retry(second.id) is None  # the key is held again, by the retried task

    async def test_retry_wakes_a_waiting_worker(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (q, waiter):
            task = make_task()
            await q.enqueue(task)
            await q.cancel(task.id)
            started = anyio.current_time()
            claimed = await claim_during(waiter, "default", lambda: q.retry(task.id), wait=8)
            assert ids(claimed) == [task.id]
            assert anyio.current_time() - started < 6, "the waiting worker slept through the retry"


class HeaderTests(QueueTests):
    """``Task.headers`` is stored and returned unchanged on every read path; None stays None."""

    async def test_headers_round_trip(self, task_queue: BaseTaskQueue) -> None:
        with_headers, plain = make_task(headers=HEADERS), make_task()
        await task_queue.enqueue(with_headers)
        await task_queue.enqueue_many([plain])
        got = await task_queue.get(with_headers.id)
        assert got is not None and got.headers == HEADERS
        assert [t.headers if t else "?" for t in await task_queue.get_many([with_headers.id, plain.id])] == [
            HEADERS,
            None,
        ]
        assert {t.id: t.headers for t in await task_queue.list(limit=10)} == {with_headers.id: HEADERS, plain.id: None}
        paged = await task_queue.list_page(TaskQuery(limit=10))
        assert {t.id: t.headers for t in paged} == {with_headers.id: HEADERS, plain.id: None}
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert {t.id: t.headers for t in claimed} == {with_headers.id: HEADERS, plain.id: None}

    async def test_headers_survive_recover_and_retry(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(headers=HEADERS, max_retries=1)
        await task_queue.enqueue(task)
        await task_queue.claim_ready(["default"], 1, lease=SHORT, worker_id="w1")
        recovered = await wait_until(lambda: recover(task_queue), message="the lease was not recovered")
        assert [(t.id, t.headers) for t in recovered] == [(task.id, HEADERS)]
        failed = await finish_as(task_queue, OutcomeKind.FAILED)
        assert failed.headers == HEADERS
        retried = await task_queue.retry(task.id)
        assert retried is not None and retried.headers == HEADERS
