"""The finisher counts the concurrency slots its unrecorded outcomes still hold, for the pool's next claim.

A pool whose limited tasks just ended claims only once their outcomes are
recorded: before, the engine still counts them as running, and the claim
would find their slots taken. The count is the finisher's; these tests drive
it against the memory engine's real claim and finish.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from omniq.lifecycle import Lifecycle
from omniq.models import Outcome, OutcomeKind
from omniq.worker.finisher import Finisher

pytestmark = pytest.mark.anyio


async def _claimed(app: Any, n: int, **options: Any) -> list[Any]:
    for _ in range(n):
        await app.enqueue("f", **options)
    claimed: list[Any] = await app.task_queue.claim_ready(["default"], n, lease=30.0, worker_id="w")
    return claimed


def _succeeded(task: Any) -> Outcome:
    return Outcome(task_id=task.id, lease_token=task.lease_token or "", kind=OutcomeKind.SUCCEEDED)


async def test_limited_outcomes_hold_slots_until_recorded(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: None, name="f")
        limited = await _claimed(app, 3, concurrency_limit=3)
        assert len(limited) == 3
        finisher = Finisher(app, "w", fuse=False, lifecycle=Lifecycle())
        for task in limited:
            finisher.add(task, _succeeded(task))
        assert finisher.slots == 3
        waiter_done = anyio.Event()

        async def wait_recorded() -> None:
            await finisher.slots_recorded()
            waiter_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_recorded)
            await anyio.sleep(0.05)
            assert not waiter_done.is_set()  # nothing recorded yet: the slots are still taken
            with anyio.fail_after(10):
                await finisher.flush()
                await waiter_done.wait()
        assert finisher.slots == 0
        # the engine agrees: the three slots are free again
        assert len(await _claimed(app, 3, concurrency_limit=3)) == 3


async def test_unlimited_outcomes_hold_no_slot(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: None, name="f")
        tasks = await _claimed(app, 2)
        finisher = Finisher(app, "w", fuse=False, lifecycle=Lifecycle())
        for task in tasks:
            finisher.add(task, _succeeded(task))
        assert finisher.slots == 0
        with anyio.fail_after(1):
            await finisher.slots_recorded()  # returns at once
        await finisher.flush()
        assert finisher.slots == 0


async def test_an_outcome_kept_after_an_outage_keeps_its_slot(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: None, name="f")
        [task] = await _claimed(app, 1, concurrency_limit=1)
        finisher = Finisher(app, "w", fuse=False, lifecycle=Lifecycle())
        finisher.add(task, _succeeded(task))
        queue = app.task_queue
        real_finish = queue.finish
        calls = 0

        async def away_once(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("engine away")
            return await real_finish(*args, **kwargs)

        queue.finish = away_once  # the engine is away for one call; the finisher keeps the batch
        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(finisher.flush)
                    await anyio.sleep(0.05)  # first try failed; the retry waits out its back-off
                    assert finisher.slots == 1
            assert finisher.slots == 0 and calls == 2
        finally:
            del queue.finish


async def test_a_pool_never_runs_more_than_its_concurrency_when_finishes_claim(make_app: Any) -> None:
    """Limited tasks' finishes claim for the pool (finish_and_claim) while its claim loop claims too."""
    running = 0
    most = 0

    async def work(n: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.005 * (n % 3))
        running -= 1
        return n

    async with make_app() as app:
        app.register(work, name="work")
        ids = [await app.enqueue("work", n, concurrency_limit=2) for n in range(20)]
        ids += [await app.enqueue("work", n) for n in range(20)]
        with anyio.fail_after(60):
            await app.worker(concurrency=3, burst=True).start()
        results = [await app.get_result(task_id) for task_id in ids]
        assert all(r is not None and r.status.value == "succeeded" for r in results)
        assert most <= 3, f"{most} tasks ran at once in a pool of concurrency 3"
