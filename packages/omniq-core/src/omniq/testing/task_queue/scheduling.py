"""Scheduling: a task with a future eta (a delay, a retry's backoff) is claimed at its eta, not before."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from omniq.base import BaseTaskQueue
from omniq.models import Outcome, OutcomeKind, utcnow
from omniq.testing.fixtures import CLOCK_SKEW, make_task, now_ms
from omniq.testing.task_queue.kit import LONG, QueueTests, claim_one, error, token

__all__ = ["SchedulingTests"]


class SchedulingTests(QueueTests):
    """Tasks whose ``eta`` is in the future: skipped by claims until due, then claimed promptly."""

    async def test_future_eta_is_not_claimable_until_due(self, task_queue: BaseTaskQueue) -> None:
        later = make_task(eta=now_ms(3600))
        soon = make_task(eta=utcnow() + timedelta(seconds=0.5))
        await task_queue.enqueue_many([later, soon])
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []
        with anyio.fail_after(10):
            claimed = await task_queue.claim(["default"], 10, lease=LONG, worker_id="w1", wait=9)
        assert [t.id for t in claimed] == [soon.id]
        assert utcnow() >= soon.eta - timedelta(seconds=CLOCK_SKEW)  # type: ignore[operator]  # claimed at its eta
        assert await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1") == []

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

    async def test_retry_becomes_claimable_when_due(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(max_retries=3))
        held = await claim_one(task_queue)
        eta = utcnow() + timedelta(seconds=0.4)
        retry = Outcome(task_id=held.id, lease_token=token(held), kind=OutcomeKind.RETRY, eta=eta, error=error())
        assert await task_queue.finish([retry]) == [True]
        with anyio.fail_after(10):
            claimed = await task_queue.claim(["default"], 1, lease=LONG, worker_id="w2", wait=9)
        assert [t.id for t in claimed] == [held.id]
        assert claimed[0].attempts == 2 and claimed[0].lease_token != held.lease_token
