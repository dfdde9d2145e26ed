"""Finishing: each outcome kind, one token check per outcome, one accepted finish per lease."""

from __future__ import annotations

import anyio

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing.fixtures import connected, make_task, now_ms
from omniq.testing.task_queue.kit import LONG, QueueFactory, QueueTests, claim_one, error, token

__all__ = ["FinishingTests"]


class FinishingTests(QueueTests):
    """``finish``: SUCCEEDED, FAILED, RETRY, RELEASE, RESCHEDULE and EXPIRED, each under its lease token."""

    async def test_finish_succeeded(self, task_queue: BaseTaskQueue) -> None:
        task = make_task()
        await task_queue.enqueue(task)
        held = await claim_one(task_queue)
        done = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.SUCCEEDED)
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
        held = await claim_one(task_queue)
        failure = error("division by zero")
        failed = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.FAILED, error=failure)
        assert await task_queue.finish([failed]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert stored.error == failure and stored.finished_at is not None and stored.lease_token is None
        again = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish([again]) == [False]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.FAILED

    async def test_finish_batch_checks_each_token(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task() for _ in range(3)])
        a, b, c = await task_queue.claim_ready(["default"], 3, lease=LONG, worker_id="w1")
        outcomes = [
            Outcome(task_id=a.id, lease_token=token(a), kind=OutcomeKind.SUCCEEDED),
            Outcome(task_id=b.id, lease_token="wrong", kind=OutcomeKind.SUCCEEDED),
            Outcome(task_id="0" * 32, lease_token="x", kind=OutcomeKind.FAILED),
            Outcome(task_id=c.id, lease_token=token(c), kind=OutcomeKind.FAILED, error=error()),
        ]
        assert await task_queue.finish(outcomes) == [True, False, False, True]
        statuses = [t.status if t else None for t in await task_queue.get_many([a.id, b.id, c.id])]
        assert statuses == [TaskStatus.SUCCEEDED, TaskStatus.RUNNING, TaskStatus.FAILED]
        assert await task_queue.finish([]) == []

    async def test_concurrent_finishes_accept_only_one(self, task_queue_factory: QueueFactory) -> None:
        async with connected(task_queue_factory, 3) as (q, one, two):
            await q.enqueue(make_task())
            held = await claim_one(q)
            flags: list[bool] = []

            async def finish(target: BaseTaskQueue, kind: OutcomeKind) -> None:
                outcome = Outcome(task_id=held.id, lease_token=token(held), kind=kind, error=error())
                flags.extend(await target.finish([outcome]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(finish, one, OutcomeKind.SUCCEEDED)
                tg.start_soon(finish, two, OutcomeKind.FAILED)
            assert sorted(flags) == [False, True]

    async def test_retry_keeps_attempt_and_waits_for_eta(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=3))
        held = await claim_one(task_queue)
        failure = error("flaky")
        eta = now_ms(3600)
        retry = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RETRY, eta=eta, error=failure)
        assert await task_queue.finish([retry]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.error, stored.eta) == (TaskStatus.PENDING, 1, failure, eta)
        assert stored.lease_token is None and stored.finished_at is None
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        assert await task_queue.finish([retry]) == [False]

    async def test_release_refunds_attempt_and_is_claimable_at_once(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        held = await claim_one(task_queue)
        release = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RELEASE)
        assert await task_queue.finish([release]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.lease_token) == (TaskStatus.PENDING, 0, None)
        # A pending task is held by nobody: the released lease leaves no trace of its holder.
        assert (stored.lease_expires_at, stored.started_at, stored.worker_id) == (None, None, None)
        again = await claim_one(task_queue)
        assert again.id == held.id and again.attempts == 1

    async def test_reschedule_resets_attempts_and_sets_eta(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(interval=3600.0, max_retries=2))
        held = await claim_one(task_queue)
        retry = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RETRY, error=error())
        assert await task_queue.finish([retry]) == [True]
        held = await claim_one(task_queue)
        assert held.attempts == 2
        tick = now_ms(3600)
        done = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RESCHEDULE, eta=tick)
        assert await task_queue.finish([done]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.eta, stored.lease_token) == (TaskStatus.PENDING, 0, tick, None)
        assert stored.interval == 3600.0
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_expired_outcome_is_terminal(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(expires_at=now_ms(-1)))
        held = await claim_one(task_queue)
        expired = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.EXPIRED)
        assert await task_queue.finish([expired]) == [True]
        stored = await task_queue.get(held.id)
        assert stored is not None and stored.status is TaskStatus.EXPIRED
        assert stored.finished_at is not None and stored.lease_token is None
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

    async def test_every_change_moves_updated_at_and_only_a_release_forgets_the_holder(
        self, task_queue: BaseTaskQueue
    ) -> None:
        await task_queue.enqueue(make_task(max_retries=3))
        held = await claim_one(task_queue, worker="w-2")
        assert held.updated_at is not None and held.started_at is not None
        await anyio.sleep(0.05)  # each step below happens on a later engine millisecond
        retry = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RETRY, error=error())
        assert await task_queue.finish([retry]) == [True]
        retried = await task_queue.get(held.id)
        assert retried is not None and retried.updated_at is not None and retried.updated_at > held.updated_at
        assert (retried.started_at, retried.worker_id, retried.finished_at) == (held.started_at, "w-2", None)
        await anyio.sleep(0.05)
        assert await task_queue.set_paused(held.id, True)
        paused = await task_queue.get(held.id)
        assert paused is not None and paused.updated_at is not None and paused.updated_at > retried.updated_at
        assert await task_queue.set_paused(held.id, False)
        again = await claim_one(task_queue, worker="w-4")
        assert (again.worker_id, again.attempts) == ("w-4", 2)
        release = Outcome(task_id=again.id, lease_token=token(again), kind=OutcomeKind.RELEASE)
        assert await task_queue.finish([release]) == [True]
        released = await task_queue.get(held.id)
        assert released is not None and (released.started_at, released.worker_id, released.attempts) == (None, None, 1)

    async def test_finish_and_claim_finishes_then_claims_from_the_given_queues(self, task_queue: BaseTaskQueue) -> None:
        """Flags as ``finish`` gives them, then a claim of up to ``limit`` tasks of ``queues`` only."""
        await task_queue.enqueue_many([make_task(), make_task()])
        a, b = await task_queue.claim_ready(["default"], 2, lease=LONG, worker_id="w1")
        waiting = [make_task(created_at=now_ms(-5 + i)) for i in range(3)]
        elsewhere = make_task(queue="other")
        await task_queue.enqueue_many([*waiting, elsewhere])
        outcomes = [
            Outcome(task_id=a.id, lease_token=token(a), kind=OutcomeKind.SUCCEEDED),
            Outcome(task_id=b.id, lease_token="wrong", kind=OutcomeKind.SUCCEEDED),
        ]
        accepted, claimed = await task_queue.finish_and_claim(
            outcomes, queues=["default"], limit=2, lease=LONG, worker_id="w2"
        )
        assert accepted == [True, False]
        assert [t.id for t in claimed] == [t.id for t in waiting[:2]]
        assert all(t.status is TaskStatus.RUNNING and t.worker_id == "w2" and t.lease_token for t in claimed)
        statuses = [t.status if t else None for t in await task_queue.get_many([a.id, b.id, elsewhere.id])]
        assert statuses == [TaskStatus.SUCCEEDED, TaskStatus.RUNNING, TaskStatus.PENDING]
        # no room: a finish alone
        done = Outcome(task_id=claimed[0].id, lease_token=token(claimed[0]), kind=OutcomeKind.SUCCEEDED)
        assert await task_queue.finish_and_claim([done], queues=["default"], limit=0, lease=LONG, worker_id="w2") == (
            [True],
            [],
        )
        assert [t.id for t in await task_queue.claim_ready(["default"], 5, lease=LONG, worker_id="w1")] == [
            waiting[2].id
        ]
