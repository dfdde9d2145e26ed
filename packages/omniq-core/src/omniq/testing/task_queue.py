"""Conformance tests for :class:`~omniq.base.BaseTaskQueue`.

Subclass :class:`TaskQueueSuite` in a class named ``Test...`` and provide a
``task_queue_factory`` fixture: a zero-argument callable returning a new,
unconnected queue bound to one store that is private to the test. Optionally
provide ``fused_result_storage_factory`` (result storages the queue can fuse
with) to run the fused-results tests, and ``fused_event_storage_factory``
(event storages it can fuse with) to run the fused-events tests, and
``corrupt_record`` (writes a corrupted field; see :mod:`omniq.testing._corrupt`)
to run the corrupted-record tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import anyio
import pytest

from omniq.base import BaseTaskQueue, Capability
from omniq.models import Outcome, OutcomeKind, TaskStatus, utcnow
from omniq.testing._corrupt import CorruptRecordTests
from omniq.testing._fused import FusedPathTests
from omniq.testing._queue_kit import (
    LONG,
    SHORT,
    claim_one as _claim_one,
    error as _error,
    recover as _recover,
    token as _tok,
)
from omniq.testing.fixtures import (
    GARBAGE_PAYLOAD,
    ForkedChild,
    connected,
    make_task,
    now_ms,
    wait_until,
)

__all__ = ["TaskQueueSuite"]

QueueFactory = Callable[[], BaseTaskQueue]


class TaskQueueSuite(FusedPathTests, CorruptRecordTests):
    """Every behaviour of the task queue contract, against a real engine."""

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    async def task_queue(self, task_queue_factory: QueueFactory) -> AsyncIterator[BaseTaskQueue]:
        """A connected queue from the backend's factory."""
        queue = task_queue_factory()
        await queue.connect()
        try:
            yield queue
        finally:
            await queue.close()

    # -- enqueue / get ------------------------------------------------------------------------------

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
        assert stored is not None
        for field in task.__struct_fields__:
            if field != "updated_at":
                assert getattr(stored, field) == getattr(task, field), field
        assert stored.created_at.utcoffset() == timedelta(0)

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
        claimed = await _claim_one(task_queue)
        assert claimed.payload == payload

    async def test_get_unknown_is_none(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.get("0" * 32) is None
        assert await task_queue.get_many(["0" * 32]) == [None]

    async def test_returned_tasks_are_copies(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(error=_error())
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
            assert stored is not None
            for field in task.__struct_fields__:
                if field != "updated_at":
                    assert getattr(stored, field) == getattr(task, field), field
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        expected = sorted(tasks, key=lambda t: -t.priority)  # stable: FIFO within a priority
        assert [t.id for t in claimed] == [t.id for t in expected]

    # -- unique keys --------------------------------------------------------------------------------

    async def test_unique_key_while_pending_returns_first_id(self, task_queue: BaseTaskQueue) -> None:
        first = make_task(unique_key="report")
        assert await task_queue.enqueue(first) == first.id
        assert await task_queue.enqueue(make_task(unique_key="report")) == first.id
        assert await task_queue.count() == 1

    async def test_unique_key_while_running_returns_first_id(self, task_queue: BaseTaskQueue) -> None:
        first = make_task(unique_key="report")
        await task_queue.enqueue(first)
        await _claim_one(task_queue)
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
            held = await _claim_one(task_queue)
            assert await task_queue.finish([Outcome(task_id=held.id, lease_token=_tok(held), kind=kind)])
        second = make_task(unique_key="nightly")
        assert await task_queue.enqueue(second) == second.id != first.id
        assert await task_queue.enqueue(make_task(unique_key="nightly")) == second.id
        assert await task_queue.count() == 2

    # -- claim --------------------------------------------------------------------------------------

    async def test_claim_sets_lease(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(max_retries=2)
        await task_queue.enqueue(task)
        before = utcnow() - timedelta(seconds=5)  # slack for an engine clock a little behind ours
        claimed = await _claim_one(task_queue, lease=LONG, worker="worker-7")
        assert claimed.id == task.id and claimed.payload == task.payload
        assert claimed.status is TaskStatus.RUNNING
        assert claimed.attempts == 1
        assert claimed.lease_token and isinstance(claimed.lease_token, str)
        assert claimed.lease_expires_at is not None and claimed.lease_expires_at > utcnow() + timedelta(seconds=10)
        assert claimed.started_at is not None and claimed.started_at >= before
        assert claimed.worker_id == "worker-7"
        stored = await task_queue.get(task.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.lease_token, stored.worker_id) == (
            TaskStatus.RUNNING,
            1,
            claimed.lease_token,
            "worker-7",
        )

    async def test_claim_honours_limit_and_empty(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        await task_queue.enqueue_many([make_task() for _ in range(5)])
        first = await task_queue.claim_ready(["default"], 3, lease=LONG, worker_id="w1")
        rest = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert (len(first), len(rest)) == (3, 2)
        assert {t.id for t in first}.isdisjoint(t.id for t in rest)
        assert len({t.lease_token for t in first + rest}) == 5
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_claim_filters_by_queue(self, task_queue: BaseTaskQueue) -> None:
        mail, sms, other = make_task(queue="mail"), make_task(queue="sms"), make_task(queue="other")
        await task_queue.enqueue_many([mail, sms, other])
        assert await task_queue.claim_ready(["nothing"], 10, lease=LONG, worker_id="w1") == []
        claimed = await task_queue.claim_ready(["mail", "sms"], 10, lease=LONG, worker_id="w1")
        assert {t.id for t in claimed} == {mail.id, sms.id}
        assert [t.id for t in await task_queue.claim_ready(["other"], 10, lease=LONG, worker_id="w1")] == [other.id]

    async def test_claim_order_priority_then_eta_then_fifo(self, task_queue: BaseTaskQueue) -> None:
        low = [make_task(priority=0) for _ in range(3)]
        high = [make_task(priority=5) for _ in range(3)]
        overdue = make_task(priority=0, eta=now_ms(-60))  # its eta counts: older than every created_at
        urgent = make_task(priority=9)
        await task_queue.enqueue_many([low[0], high[0], low[1], high[1]])
        await task_queue.enqueue_many([low[2], high[2], overdue, urgent])
        claimed = await task_queue.claim_ready(["default"], 100, lease=LONG, worker_id="w1")
        expected = [urgent, *high, overdue, *low]
        assert [t.id for t in claimed] == [t.id for t in expected]

    async def test_claim_one_at_a_time_follows_the_same_order(self, task_queue: BaseTaskQueue) -> None:
        tasks = [make_task(priority=i % 3) for i in range(9)]
        await task_queue.enqueue_many(tasks)
        expected = sorted(tasks, key=lambda t: -t.priority)  # stable: FIFO within a priority
        got = [(await _claim_one(task_queue)).id for _ in tasks]
        assert got == [t.id for t in expected]

    async def test_a_better_task_enqueued_between_claims_is_claimed_first(self, task_queue: BaseTaskQueue) -> None:
        """Claiming in batches (a worker draining a backlog) keeps priority order for newcomers."""
        await task_queue.enqueue_many([make_task(priority=0) for _ in range(20)])
        assert len(await task_queue.claim_ready(["default"], 5, lease=LONG, worker_id="w1")) == 5
        urgent = make_task(priority=9)
        await task_queue.enqueue(urgent)
        claimed = await task_queue.claim_ready(["default"], 5, lease=LONG, worker_id="w1")
        assert claimed[0].id == urgent.id and len(claimed) == 5

    async def test_future_eta_is_not_claimable_until_due(self, task_queue: BaseTaskQueue) -> None:
        later = make_task(eta=now_ms(3600))
        soon = make_task(eta=utcnow() + timedelta(seconds=0.5))
        await task_queue.enqueue_many([later, soon])
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        with anyio.fail_after(10):
            claimed = await task_queue.claim(["default"], 10, lease=LONG, worker_id="w1", wait=9)
        assert [t.id for t in claimed] == [soon.id]
        assert utcnow() >= soon.eta - timedelta(seconds=0.1)  # type: ignore[operator]
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_paused_task_is_not_claimable_until_resumed(self, task_queue: BaseTaskQueue) -> None:
        task, other = make_task(), make_task()
        await task_queue.enqueue_many([task, other])
        assert await task_queue.set_paused(task.id, True)
        paused = await task_queue.get(task.id)
        assert paused is not None and paused.paused and paused.status is TaskStatus.PENDING
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert [t.id for t in claimed] == [other.id]
        assert await task_queue.set_paused(task.id, False)
        assert [t.id for t in await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")] == [task.id]

    async def test_enqueued_paused_task_waits_for_resume(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(paused=True)
        await task_queue.enqueue(task)
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        assert await task_queue.set_paused(task.id, False)
        assert (await _claim_one(task_queue)).id == task.id

    async def test_set_paused_unknown_or_terminal_is_false(self, task_queue: BaseTaskQueue) -> None:
        assert not await task_queue.set_paused("0" * 32, True)
        task = make_task()
        await task_queue.enqueue(task)
        await task_queue.cancel(task.id)
        assert not await task_queue.set_paused(task.id, True)

    async def test_concurrent_claimers_get_each_task_exactly_once(self, task_queue_factory: QueueFactory) -> None:
        total = 200
        async with connected(task_queue_factory, 5) as (producer, *claimers):
            await producer.enqueue_many([make_task() for _ in range(total)])
            seen: Counter[str] = Counter()

            async def claim_loop(q: BaseTaskQueue, worker: str) -> None:
                while sum(seen.values()) < total:
                    for task in await q.claim(["default"], 7, lease=LONG, worker_id=worker, wait=0.2):
                        assert task.attempts == 1 and task.worker_id == worker
                        seen[task.id] += 1

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n, q in enumerate(claimers):
                        tg.start_soon(claim_loop, q, f"w{n}")
            assert len(seen) == total and set(seen.values()) == {1}
            assert await producer.claim_ready(["default"], 10, lease=LONG, worker_id="late") == []
            assert await producer.count(status=TaskStatus.RUNNING) == total

    # -- extend -------------------------------------------------------------------------------------

    async def test_extend_pushes_deadline_of_held_leases(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(), make_task()])
        a, b = await task_queue.claim_ready(["default"], 2, lease=5, worker_id="w1")
        held = await task_queue.extend({a.id: _tok(a), b.id: _tok(b)}, 60)
        assert held == {a.id, b.id}
        stored = await task_queue.get(a.id)
        assert stored is not None and stored.lease_expires_at is not None
        assert stored.lease_expires_at > utcnow() + timedelta(seconds=30)
        assert stored.lease_token == a.lease_token and stored.status is TaskStatus.RUNNING
        assert await task_queue.extend({}, 60) == set()

    async def test_extend_omits_lost_cancelled_and_unknown(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(), make_task(), make_task()])
        a, b, c = await task_queue.claim_ready(["default"], 3, lease=LONG, worker_id="w1")
        assert await task_queue.cancel(b.id)
        await task_queue.finish([Outcome(task_id=c.id, lease_token=_tok(c), kind=OutcomeKind.SUCCEEDED)])
        leases = {a.id: "not-the-token", b.id: _tok(b), c.id: _tok(c), "0" * 32: "x"}
        assert await task_queue.extend(leases, 60) == set()
        assert await task_queue.extend({a.id: _tok(a)}, 60) == {a.id}

    # -- finish -------------------------------------------------------------------------------------

    async def test_finish_succeeded(self, task_queue: BaseTaskQueue) -> None:
        task = make_task()
        await task_queue.enqueue(task)
        held = await _claim_one(task_queue)
        done = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([done]) == [True]
        stored = await task_queue.get(task.id)
        assert stored is not None
        assert stored.status is TaskStatus.SUCCEEDED and stored.finished_at is not None
        assert stored.lease_token is None and stored.lease_expires_at is None
        assert stored.error is None and stored.attempts == 1
        assert await task_queue.finish([done]) == [False]
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_finish_failed_stores_error(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await _claim_one(task_queue)
        error = _error("division by zero")
        failed = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.FAILED, error=error)
        assert await task_queue.finish([failed]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert stored.error == error and stored.finished_at is not None and stored.lease_token is None
        again = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([again]) == [False]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.FAILED

    async def test_finish_batch_checks_each_token(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task() for _ in range(3)])
        a, b, c = await task_queue.claim_ready(["default"], 3, lease=LONG, worker_id="w1")
        outcomes = [
            Outcome(task_id=a.id, lease_token=_tok(a), kind=OutcomeKind.SUCCEEDED),
            Outcome(task_id=b.id, lease_token="wrong", kind=OutcomeKind.SUCCEEDED),
            Outcome(task_id="0" * 32, lease_token="x", kind=OutcomeKind.FAILED),
            Outcome(task_id=c.id, lease_token=_tok(c), kind=OutcomeKind.FAILED, error=_error()),
        ]
        assert await task_queue.finish(outcomes) == [True, False, False, True]
        statuses = [t.status if t else None for t in await task_queue.get_many([a.id, b.id, c.id])]
        assert statuses == [TaskStatus.SUCCEEDED, TaskStatus.RUNNING, TaskStatus.FAILED]
        assert await task_queue.finish([]) == []

    async def test_concurrent_finishes_accept_only_one(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 3) as (q, one, two):
            await q.enqueue(make_task())
            held = await _claim_one(q)
            flags: list[bool] = []

            async def finish(target: BaseTaskQueue, kind: OutcomeKind) -> None:
                outcome = Outcome(task_id=held.id, lease_token=_tok(held), kind=kind, error=_error())
                flags.extend(await target.finish([outcome]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(finish, one, OutcomeKind.SUCCEEDED)
                tg.start_soon(finish, two, OutcomeKind.FAILED)
            assert sorted(flags) == [False, True]

    async def test_stale_completion_is_rejected(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (first, second):
            await first.enqueue(make_task(max_retries=3))
            stale = await _claim_one(first, lease=SHORT, worker="dead")
            recovered = await wait_until(partial(_recover, first), message="recover() never returned the expired lease")
            assert [t.id for t in recovered] == [stale.id]
            assert recovered[0].status is TaskStatus.PENDING and recovered[0].lease_token is None
            fresh = await _claim_one(second, lease=LONG, worker="alive")
            assert fresh.id == stale.id and fresh.attempts == 2 and fresh.lease_token != stale.lease_token
            late = Outcome(task_id=stale.id, lease_token=_tok(stale), kind=OutcomeKind.SUCCEEDED)
            assert await first.finish([late]) == [False]
            assert await first.extend({stale.id: _tok(stale)}, 60) == set()
            stored = await second.get(stale.id)
            assert stored is not None
            assert (stored.status, stored.lease_token, stored.worker_id) == (
                TaskStatus.RUNNING,
                fresh.lease_token,
                "alive",
            )
            ok = Outcome(task_id=fresh.id, lease_token=_tok(fresh), kind=OutcomeKind.SUCCEEDED)
            assert await second.finish([ok]) == [True]

    # -- recover ------------------------------------------------------------------------------------

    async def test_recover_with_attempts_exhausted_fails(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=0))
        held = await _claim_one(task_queue, lease=SHORT)
        recovered = await wait_until(
            partial(_recover, task_queue), message="recover() never returned the expired lease"
        )
        assert [t.id for t in recovered] == [held.id]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert stored.error is not None and stored.error.type == "LeaseExpired"
        assert stored.finished_at is not None and stored.lease_token is None and stored.attempts == 1
        late = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([late]) == [False]
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_recover_leaves_live_and_extended_leases(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(max_retries=1) for _ in range(3)])
        one, two, expiring = await task_queue.claim_ready(["default"], 3, lease=1.0, worker_id="w1")
        assert await task_queue.extend({one.id: _tok(one), two.id: _tok(two)}, LONG) == {one.id, two.id}
        recovered = await wait_until(partial(_recover, task_queue))
        assert [t.id for t in recovered] == [expiring.id]
        assert await task_queue.recover() == []
        statuses = [t.status if t else None for t in await task_queue.get_many([one.id, two.id, expiring.id])]
        assert statuses == [TaskStatus.RUNNING, TaskStatus.RUNNING, TaskStatus.PENDING]

    # -- retry / release / reschedule / expire -------------------------------------------------------

    async def test_retry_keeps_attempt_and_waits_for_eta(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=3))
        held = await _claim_one(task_queue)
        error = _error("flaky")
        eta = now_ms(3600)
        retry = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.RETRY, eta=eta, error=error)
        assert await task_queue.finish([retry]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.error, stored.eta) == (TaskStatus.PENDING, 1, error, eta)
        assert stored.lease_token is None and stored.finished_at is None
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        assert await task_queue.finish([retry]) == [False]

    async def test_retry_becomes_claimable_when_due(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=3))
        held = await _claim_one(task_queue)
        eta = utcnow() + timedelta(seconds=0.4)
        retry = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.RETRY, eta=eta, error=_error())
        assert await task_queue.finish([retry]) == [True]
        with anyio.fail_after(10):
            claimed = await task_queue.claim(["default"], 1, lease=LONG, worker_id="w2", wait=9)
        assert [t.id for t in claimed] == [held.id]
        assert claimed[0].attempts == 2 and claimed[0].lease_token != held.lease_token

    async def test_release_refunds_attempt_and_is_claimable_at_once(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await _claim_one(task_queue)
        release = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.RELEASE)
        assert await task_queue.finish([release]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.lease_token) == (TaskStatus.PENDING, 0, None)
        # A pending task is held by nobody: the released lease leaves no trace of its holder.
        assert (stored.lease_expires_at, stored.started_at, stored.worker_id) == (None, None, None)
        again = await _claim_one(task_queue)
        assert again.id == held.id and again.attempts == 1

    async def test_reschedule_resets_attempts_and_sets_eta(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(interval=3600.0, max_retries=2))
        held = await _claim_one(task_queue)
        retry = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.RETRY, error=_error())
        assert await task_queue.finish([retry]) == [True]
        held = await _claim_one(task_queue)
        assert held.attempts == 2
        tick = now_ms(3600)
        done = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.RESCHEDULE, eta=tick)
        assert await task_queue.finish([done]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.eta, stored.lease_token) == (TaskStatus.PENDING, 0, tick, None)
        assert stored.interval == 3600.0
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_expired_outcome_is_terminal(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(expires_at=now_ms(-1)))
        held = await _claim_one(task_queue)
        expired = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.EXPIRED)
        assert await task_queue.finish([expired]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.EXPIRED
        assert stored.finished_at is not None and stored.lease_token is None
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    # -- cancel -------------------------------------------------------------------------------------

    async def test_cancel_pending(self, task_queue: BaseTaskQueue) -> None:
        task = make_task(eta=now_ms(3600))
        await task_queue.enqueue_many([task, make_task()])
        assert await task_queue.cancel(task.id)
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED
        claimed = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert task.id not in {t.id for t in claimed}
        assert not await task_queue.cancel(task.id)

    async def test_cancel_running_loses_the_lease(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await _claim_one(task_queue)
        assert await task_queue.cancel(held.id)
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED and stored.lease_token is None
        done = Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([done]) == [False]
        assert await task_queue.extend({held.id: _tok(held)}, 60) == set()
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED

    async def test_cancel_terminal_or_unknown_is_false(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await _claim_one(task_queue)
        await task_queue.finish([Outcome(task_id=held.id, lease_token=_tok(held), kind=OutcomeKind.SUCCEEDED)])
        assert not await task_queue.cancel(held.id)
        assert not await task_queue.cancel("0" * 32)
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.SUCCEEDED

    # -- list / count / purge -----------------------------------------------------------------------

    async def _populate(self, q: BaseTaskQueue) -> dict[str, list[str]]:
        """Enqueue 5 tasks in "a" and 3 in "b" (created one second apart), run two of "a"."""
        base = now_ms(-100)
        a = [make_task(queue="a", created_at=base + timedelta(seconds=i)) for i in range(5)]
        b = [make_task(queue="b", created_at=base + timedelta(seconds=10 + i)) for i in range(3)]
        await q.enqueue_many(a + b)
        running = await q.claim_ready(["a"], 2, lease=LONG, worker_id="w1")
        assert [t.id for t in running] == [a[0].id, a[1].id]
        return {"a": [t.id for t in a], "b": [t.id for t in b]}

    async def test_list_filters_newest_first_with_limit_and_offset(self, task_queue: BaseTaskQueue) -> None:
        ids = await self._populate(task_queue)
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
        await self._populate(task_queue)
        assert await task_queue.count() == 8
        assert await task_queue.count(queue="a") == 5
        assert await task_queue.count(status=TaskStatus.RUNNING) == 2
        assert await task_queue.count(status=TaskStatus.PENDING, queue="b") == 3
        assert await task_queue.count(status=TaskStatus.SUCCEEDED) == 0

    async def test_purge_by_queue_status_and_all(self, task_queue: BaseTaskQueue) -> None:
        ids = await self._populate(task_queue)
        assert await task_queue.purge(queue="b") == 3
        assert await task_queue.get(ids["b"][0]) is None
        assert await task_queue.purge(statuses=[TaskStatus.RUNNING]) == 2
        assert await task_queue.count() == 3
        assert await task_queue.purge(queue="a", statuses=[TaskStatus.SUCCEEDED]) == 0
        assert await task_queue.purge() == 3
        assert await task_queue.count() == 0
        assert await task_queue.claim_ready(["a", "b"], 10, lease=LONG, worker_id="w1") == []
        assert await task_queue.purge() == 0

    # -- fork safety ----------------------------------------------------------------------------------

    async def test_a_forked_child_enqueues_through_the_inherited_queue(self, task_queue: BaseTaskQueue) -> None:
        """A forked child enqueues through the queue it inherited, and the parent's queue still works.

        A process-pool task that enqueues runs in a forked child holding the worker's connected
        queue: the child's enqueue and close must work, and the parent's connections must too.
        """
        if Capability.FORK_SAFE not in type(task_queue).capabilities:
            pytest.skip(f"{type(task_queue).__name__} lacks the {Capability.FORK_SAFE} capability")
        first, from_child, last = make_task(), make_task(), make_task()

        def child() -> str:
            async def enqueue() -> None:
                with anyio.fail_after(20):
                    await task_queue.enqueue(from_child)
                    await task_queue.close()

            anyio.run(enqueue)
            return "ok"

        await task_queue.enqueue(first)
        outcome = await ForkedChild(child).outcome()
        assert outcome == ("ok", 0)
        with anyio.fail_after(20):  # a parent connection the child used or closed would hang or fail here
            await task_queue.enqueue(last)
            assert {t.id for t in await task_queue.list(limit=10)} == {first.id, from_child.id, last.id}

    # -- waiting ------------------------------------------------------------------------------------

    async def test_wait_for_work_wakes_on_enqueue_from_another_instance(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (waiter, producer):
            woke = anyio.Event()

            async def wait() -> None:
                await waiter.wait_for_work(["wake"], 60)
                woke.set()

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await anyio.sleep(0.5)  # let the waiter block first
                    await producer.enqueue(make_task(queue="wake"))
                    await woke.wait()
            assert [t.id for t in await waiter.claim_ready(["wake"], 1, lease=LONG, worker_id="w1")]

    async def test_wait_for_work_returns_at_once_when_work_is_ready(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        with anyio.fail_after(10):
            await task_queue.wait_for_work(["default"], 60)

    async def test_wait_for_work_times_out(self, task_queue: BaseTaskQueue) -> None:
        with anyio.fail_after(10):
            await task_queue.wait_for_work(["idle"], 0.3)

    async def test_claim_with_wait_picks_up_task_enqueued_meanwhile(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 2) as (claimer, producer):
            task = make_task(queue="later")
            claimed: list[Any] = []

            async def claim() -> None:
                claimed.extend(await claimer.claim(["later"], 5, lease=LONG, worker_id="w1", wait=9))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(claim)
                    await anyio.sleep(0.3)
                    await producer.enqueue(task)
            assert [t.id for t in claimed] == [task.id]

    @pytest.mark.parametrize("queues", [["default"], ["default", "other"]], ids=["one-queue", "two-queues"])
    async def test_claim_with_wait_takes_a_delayed_task_at_its_eta(
        self, task_queue: BaseTaskQueue, queues: list[str]
    ) -> None:
        """An idle claimer sleeps until the next eta, not through it to the end of its wait."""
        later = make_task(eta=now_ms(0.5))
        await task_queue.enqueue(later)
        started = anyio.current_time()
        with anyio.fail_after(10):
            claimed = await task_queue.claim(queues, 5, lease=LONG, worker_id="w1", wait=8)
        assert [t.id for t in claimed] == [later.id]
        assert anyio.current_time() - started < 6, "slept through the eta"

    async def test_claim_with_wait_returns_empty_after_wait(self, task_queue: BaseTaskQueue) -> None:
        with anyio.fail_after(10):
            assert await task_queue.claim(["idle"], 5, lease=LONG, worker_id="w1", wait=0.3) == []
