"""Flow control: rate and concurrency limits applied at claim, in the engine (queue pause: :mod:`.pausing`).

The rules are :mod:`omniq.flow_control`'s. Several queue instances on one
store stand for several worker processes (or hosts): the limits must hold
across them. Overlap is checked by bookkeeping, never by the wall clock: a
task joins the test's "running" set after its claim returns and leaves it
before its finish is sent, so the set is always a subset of the engine's
holders and can exceed the limit only if the engine does.
"""

from __future__ import annotations

import random
from datetime import timedelta

import anyio

from omniq.base import BaseTaskQueue, Capability
from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing.fixtures import connected, make_task, now_ms, requires, wait_until
from omniq.testing.task_queue.kit import LONG, SHORT, QueueFactory, QueueTests, token

__all__ = ["FlowControlTests"]


def limited(
    key: str = "limited",
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    burst: int | None = None,
    **fields: object,
) -> Task:
    """A task under :class:`Limits` of ``key``."""
    if rate is not None and burst is None:
        burst = max(1, int(rate))
    return make_task(limits=Limits(key=key, concurrency=concurrency, rate=rate, burst=burst), **fields)  # type: ignore[arg-type]


def done(task: Task, kind: OutcomeKind = OutcomeKind.SUCCEEDED) -> Outcome:
    """The outcome that ends (or, for RETRY, requeues) a claimed task."""
    return Outcome(task_id=task.id, lease_token=token(task), kind=kind)


async def claim_ids(q: BaseTaskQueue, queue: str = "default", limit: int = 10, lease: float = LONG) -> list[str]:
    """Ids of the tasks one claim takes from ``queue``."""
    return [t.id for t in await q.claim_ready([queue], limit, lease=lease, worker_id="w1")]


class FlowControlTests(QueueTests):
    """Concurrency and rate limits per key, across claimers (``Capability.FLOW_CONTROL``)."""

    @requires(Capability.FLOW_CONTROL)
    async def test_limits_are_stored_with_the_task(self, task_queue: BaseTaskQueue) -> None:
        task = limited("k|customer-42", concurrency=2, rate=5.0, burst=3)
        await task_queue.enqueue(task)
        stored = await task_queue.get(task.id)
        assert stored is not None and stored.limits == task.limits
        claimed = await task_queue.claim_ready(["default"], 1, lease=LONG, worker_id="w1")
        assert [t.limits for t in claimed] == [task.limits]

    @requires(Capability.FLOW_CONTROL)
    async def test_concurrency_limit_holds_across_claimers(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        limit, total = 3, 18
        tasks = [limited(concurrency=limit) for _ in range(total)]
        running: set[str] = set()
        most = 0
        finished: list[str] = []
        async with connected(task_queue_factory, 2) as others:
            queues = [task_queue, *others]
            await task_queue.enqueue_many(tasks)

            async def worker(q: BaseTaskQueue, seed: int) -> None:
                nonlocal most
                rng = random.Random(seed)
                while len(finished) < total:
                    claimed = await q.claim(["default"], 2, lease=LONG, worker_id=f"w{seed}", wait=0.2)
                    running.update(t.id for t in claimed)
                    most = max(most, len(running))
                    assert len(running) <= limit, f"{len(running)} tasks of a concurrency limit {limit} run at once"
                    for task in claimed:
                        await anyio.sleep(rng.uniform(0.0, 0.03))
                        running.discard(task.id)  # before the finish: the set stays within the engine's holders
                        assert await q.finish([done(task)]) == [True]
                        finished.append(task.id)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for seed, q in enumerate(queues):
                        tg.start_soon(worker, q, seed)
        assert sorted(finished) == sorted(t.id for t in tasks), "every limited task runs exactly once"
        assert most >= 2, "claimers in parallel should have run more than one at a time"

    @requires(Capability.FLOW_CONTROL)
    async def test_a_held_task_is_claimable_once_a_holder_finishes(self, task_queue: BaseTaskQueue) -> None:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await task_queue.enqueue_many([first, second])
        [holder] = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert holder.id == first.id
        assert await claim_ids(task_queue) == []
        waiting = await task_queue.get(second.id)
        assert waiting is not None and waiting.status is TaskStatus.PENDING
        assert await task_queue.finish([done(holder)]) == [True]
        # Woken by the finish, not by the holder's (long) lease deadline.
        assert await claim_ids(task_queue) == [second.id]

    @requires(Capability.FLOW_CONTROL)
    async def test_a_held_backlog_runs_in_claim_order_one_slot_at_a_time(self, task_queue: BaseTaskQueue) -> None:
        """More held tasks than one claim asks for: each holder's exit lets exactly the next one in claim order run."""
        base = now_ms(-10)
        tasks = [limited(concurrency=1, priority=i % 2, created_at=base + timedelta(milliseconds=i)) for i in range(14)]
        await task_queue.enqueue_many(tasks)
        order = [t.id for t in sorted(tasks, key=lambda t: (-t.priority, t.created_at))]
        [holder] = await task_queue.claim_ready(["default"], 4, lease=LONG, worker_id="w1")
        ran = [holder.id]
        while len(ran) < len(tasks):
            assert await claim_ids(task_queue, limit=4) == [], "a slot is taken: nothing more may start"
            assert await task_queue.finish([done(holder)]) == [True]
            [holder] = await task_queue.claim_ready(["default"], 4, lease=LONG, worker_id="w1")
            ran.append(holder.id)
        assert ran == order

    @requires(Capability.FLOW_CONTROL)
    async def test_claims_fill_a_larger_limit_in_claim_order(self, task_queue: BaseTaskQueue) -> None:
        """Claims in a row take exactly the first six of a limit of 6, then none; the rest follow their exits.

        One claim may take fewer than the free slots (Redis takes half a limit per claim).
        """
        base = now_ms(-10)
        tasks = [limited(concurrency=6, created_at=base + timedelta(milliseconds=i)) for i in range(10)]
        await task_queue.enqueue_many(tasks)

        async def claim_until_empty() -> list[Task]:
            taken: list[Task] = []
            for _ in range(len(tasks)):
                got = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
                if not got:
                    break
                taken += got
            return taken

        holders = await claim_until_empty()
        assert [t.id for t in holders] == [t.id for t in tasks[:6]]
        assert await task_queue.finish([done(t) for t in holders]) == [True] * 6
        assert [t.id for t in await claim_until_empty()] == [t.id for t in tasks[6:]]

    @requires(Capability.FLOW_CONTROL)
    async def test_finish_and_claim_hands_the_freed_slots_to_the_held_tasks(self, task_queue: BaseTaskQueue) -> None:
        """The worker's call when its outcomes free slots: the tasks held for them come back in the same call."""
        base = now_ms(-10)
        tasks = [limited(concurrency=2, created_at=base + timedelta(milliseconds=i)) for i in range(5)]
        await task_queue.enqueue_many(tasks)
        holders = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert [t.id for t in holders] == [t.id for t in tasks[:2]]
        assert await claim_ids(task_queue) == []  # both slots taken: the rest are held
        accepted, claimed = await task_queue.finish_and_claim(
            [done(t) for t in holders], queues=["default"], limit=10, lease=LONG, worker_id="w1"
        )
        assert accepted == [True, True]
        assert [t.id for t in claimed] == [t.id for t in tasks[2:4]]  # the freed slots, in claim order
        assert await claim_ids(task_queue) == []  # and no more than the limit
        accepted, claimed = await task_queue.finish_and_claim(
            [done(claimed[0])], queues=["default"], limit=10, lease=LONG, worker_id="w1"
        )
        assert accepted == [True] and [t.id for t in claimed] == [tasks[4].id]

    @requires(Capability.FLOW_CONTROL)
    async def test_finish_and_claim_leaves_other_queues_and_spare_slots_to_other_claims(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """A finish that claims takes held tasks of its own queues only, up to its limit.

        The other freed slots stay claimable by the claims of the other queues and of its own.
        """
        base = now_ms(-10)

        def at(i: int, queue: str = "default") -> Task:
            return limited(concurrency=3, queue=queue, created_at=base + timedelta(milliseconds=i))

        first, other, second, third = [at(i) for i in range(3)], at(3, "other"), at(4), at(5)
        await task_queue.enqueue_many([*first, other, second, third])
        holders: list[Task] = []
        for _ in range(3):  # one claim may take fewer than the free slots
            holders += await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert [t.id for t in holders] == [t.id for t in first]
        assert await claim_ids(task_queue, "other") == []  # the key is full, whatever the queue
        accepted, claimed = await task_queue.finish_and_claim(
            [done(t) for t in holders], queues=["default"], limit=1, lease=LONG, worker_id="w1"
        )
        assert accepted == [True] * 3
        assert [t.id for t in claimed] == [second.id]
        assert await claim_ids(task_queue, "other") == [other.id]
        assert await claim_ids(task_queue) == [third.id]

    @requires(Capability.FLOW_CONTROL)
    async def test_cancelling_a_holder_frees_its_slot(self, task_queue: BaseTaskQueue) -> None:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await task_queue.enqueue_many([first, second])
        assert await claim_ids(task_queue) == [first.id]
        assert await claim_ids(task_queue) == []
        assert await task_queue.cancel(first.id)
        assert await claim_ids(task_queue) == [second.id]

    @requires(Capability.FLOW_CONTROL)
    async def test_a_waiting_claim_wakes_when_a_slot_frees(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        first, second = limited(concurrency=1), limited(concurrency=1)
        producer = task_queue
        async with connected(task_queue_factory, 1) as (claimer,):
            await producer.enqueue_many([first, second])
            [holder] = await producer.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
            assert await claimer.claim_ready(["default"], 10, lease=LONG, worker_id="w2") == []
            claimed: list[Task] = []

            async def wait_and_claim() -> None:
                claimed.extend(await claimer.claim(["default"], 5, lease=LONG, worker_id="w2", wait=20))

            with anyio.fail_after(12):  # the claim waits up to 20 s: the freed slot must end its wait
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_and_claim)
                    await anyio.sleep(0.3)
                    assert await producer.finish([done(holder)]) == [True]
        assert [t.id for t in claimed] == [second.id]

    @requires(Capability.FLOW_CONTROL)
    async def test_a_waiting_claim_wakes_for_the_slots_a_finish_and_claim_leaves(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        """A finish that claims fewer tasks than it frees slots leaves the rest to a waiting claim, woken at once."""
        base = now_ms(-10)
        tasks = [limited(concurrency=2, created_at=base + timedelta(milliseconds=i)) for i in range(4)]
        producer = task_queue
        async with connected(task_queue_factory, 1) as (claimer,):
            await producer.enqueue_many(tasks)
            holders: list[Task] = []
            for _ in range(2):  # one claim may take fewer than the free slots
                holders += await producer.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
            assert [t.id for t in holders] == [t.id for t in tasks[:2]]
            assert await claimer.claim_ready(["default"], 10, lease=LONG, worker_id="w2") == []
            claimed: list[Task] = []

            async def wait_and_claim() -> None:
                claimed.extend(await claimer.claim(["default"], 5, lease=LONG, worker_id="w2", wait=20))

            with anyio.fail_after(12):  # the claim waits up to 20 s: the slot left must end its wait
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_and_claim)
                    await anyio.sleep(0.3)
                    accepted, taken = await producer.finish_and_claim(
                        [done(t) for t in holders], queues=["default"], limit=1, lease=LONG, worker_id="w1"
                    )
                    assert accepted == [True, True] and len(taken) <= 1
        # The split may differ where finish and claim are two calls (the waiting claim can run between).
        assert claimed, "the waiting claim was not woken for the slot left"
        assert sorted(t.id for t in [*taken, *claimed]) == sorted(t.id for t in tasks[2:])

    @requires(Capability.FLOW_CONTROL)
    async def test_per_key_limits_are_independent(self, task_queue: BaseTaskQueue) -> None:
        a1, b1, a2, b2 = (limited(f"send|{key}", concurrency=1) for key in "abab")
        await task_queue.enqueue_many([a1, b1, a2, b2])
        assert sorted(await claim_ids(task_queue)) == sorted([a1.id, b1.id])
        assert await claim_ids(task_queue) == []

    @requires(Capability.FLOW_CONTROL)
    async def test_unlimited_tasks_are_not_held_back(self, task_queue: BaseTaskQueue) -> None:
        base = now_ms(-100)
        held = [limited(concurrency=1, created_at=base + timedelta(milliseconds=i)) for i in range(4)]
        free = [make_task(created_at=base + timedelta(milliseconds=10 + i)) for i in range(4)]
        await task_queue.enqueue_many(held + free)
        assert await claim_ids(task_queue, limit=5) == [held[0].id] + [t.id for t in free]

    @requires(Capability.FLOW_CONTROL)
    async def test_a_killed_holders_slot_comes_back_after_its_lease(self, task_queue: BaseTaskQueue) -> None:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await task_queue.enqueue_many([first, second])
        assert await claim_ids(task_queue, lease=SHORT) == [first.id]  # its worker is "killed": no finish, no extend
        assert await claim_ids(task_queue) == []

        async def second_claimable() -> list[str]:
            return await claim_ids(task_queue)

        assert await wait_until(second_claimable, timeout=15, message="the expired holder's slot never came back") == [
            second.id
        ]

    @requires(Capability.FLOW_CONTROL)
    async def test_a_slot_handed_over_by_a_finish_that_claims_comes_back_after_its_lease(
        self, task_queue: BaseTaskQueue
    ) -> None:
        """A task a finish that claims started holds its slot as a claimed one does: killed, only until its lease ends."""
        base = now_ms(-10)
        tasks = [limited(concurrency=1, created_at=base + timedelta(milliseconds=i)) for i in range(3)]
        await task_queue.enqueue_many(tasks)
        # the held tasks are due again when this lease ends (3 s): a slot can come back no earlier
        [holder] = await task_queue.claim_ready(["default"], 10, lease=3.0, worker_id="w1")
        assert holder.id == tasks[0].id
        accepted, claimed = await task_queue.finish_and_claim(
            [done(holder)], queues=["default"], limit=1, lease=SHORT, worker_id="w1"
        )
        assert accepted == [True] and [t.id for t in claimed] == [tasks[1].id]  # its worker is "killed"
        assert await claim_ids(task_queue) == []

        async def one_claimable() -> list[str]:
            return await claim_ids(task_queue)

        again = await wait_until(one_claimable, timeout=15, message="the expired holder's slot never came back")
        assert len(again) == 1 and again[0] in (tasks[1].id, tasks[2].id)  # its rerun or the next: one at a time

    @requires(Capability.FLOW_CONTROL)
    async def test_extend_keeps_the_slot(self, task_queue: BaseTaskQueue) -> None:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await task_queue.enqueue_many([first, second])
        [holder] = await task_queue.claim_ready(["default"], 1, lease=3.0, worker_id="w1")
        for _ in range(7):  # 3.5 s in all: past the first lease, which only the extends keep alive
            await anyio.sleep(0.5)
            assert await task_queue.extend({holder.id: token(holder)}, 3.0) == {holder.id}
            assert await claim_ids(task_queue) == [], "a holder that keeps extending keeps its slot"

    @requires(Capability.FLOW_CONTROL)
    async def test_a_retry_counts_against_the_limit(self, task_queue: BaseTaskQueue) -> None:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await task_queue.enqueue_many([first, second])
        [holder] = await task_queue.claim_ready(["default"], 1, lease=LONG, worker_id="w1")
        assert await task_queue.finish([done(holder, OutcomeKind.RETRY)]) == [True]
        again = await claim_ids(task_queue)
        assert len(again) == 1 and again[0] in {first.id, second.id}
        assert await claim_ids(task_queue) == [], "the retried task and the other share one slot"

    @requires(Capability.FLOW_CONTROL)
    async def test_rate_limit_holds_in_every_window(
        self, task_queue: BaseTaskQueue, task_queue_factory: QueueFactory
    ) -> None:
        rate, burst, total = 20.0, 5, 100
        tasks = [limited("rated", rate=rate, burst=burst) for _ in range(total)]
        starts: list[float] = []
        async with connected(task_queue_factory, 2) as others:
            queues = [task_queue, *others]
            await task_queue.enqueue_many(tasks)

            async def worker(q: BaseTaskQueue, n: int) -> None:
                while len(starts) < total:
                    claimed = await q.claim(["default"], 10, lease=LONG, worker_id=f"w{n}", wait=0.5)
                    for task in claimed:
                        assert task.started_at is not None
                        starts.append(task.started_at.timestamp())
                        assert await q.finish([done(task)]) == [True]

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n, q in enumerate(queues):
                        tg.start_soon(worker, q, n)
        assert len(starts) == total
        starts.sort()
        # The bucket's schedule: the k-th start comes no earlier than (k - burst) / rate after the
        # first (one start of slack, for where in its interval the first fell). A claimer that falls
        # behind (a loaded machine) starts its overdue reserved tasks together, as the contract
        # allows ("at most rate x w + burst in any window of w s, as long as workers claim on
        # time"); lateness only delays starts, so this bound holds however late the claimers are.
        for k, start in enumerate(starts):
            earliest = starts[0] + (k - burst - 1) / rate
            assert start >= earliest - 0.01, (
                f"start {k} came {earliest - start:.3f} s early under {rate}/s, burst {burst}"
            )
        assert starts[-1] - starts[0] >= (total - burst) / rate * 0.9, "the rate limit was not applied"

    @requires(Capability.FLOW_CONTROL)
    async def test_a_rate_limited_claim_waits_for_the_next_token(self, task_queue: BaseTaskQueue) -> None:
        tasks = [limited("slow", rate=2.0, burst=1) for _ in range(3)]
        await task_queue.enqueue_many(tasks)
        first = await task_queue.claim_ready(["default"], 10, lease=LONG, worker_id="w1")
        assert [t.id for t in first] == [tasks[0].id], "a burst of 1 lets one start"
        with anyio.fail_after(15):
            got = await task_queue.claim(["default"], 10, lease=LONG, worker_id="w1", wait=10)
        assert [t.id for t in got] == [tasks[1].id], "the wait covers the next token's due time, in order"
        assert got[0].started_at is not None and first[0].started_at is not None
        assert (got[0].started_at - first[0].started_at).total_seconds() >= 0.4, "2/s: half a second apart"
        left = await task_queue.get(tasks[2].id)
        assert left is not None and left.status is TaskStatus.PENDING
