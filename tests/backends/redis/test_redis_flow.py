"""Redis flow control and queue pause, at the key level: what the scripts keep, and what they leave alone."""

from __future__ import annotations

import anyio
import pytest

from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing import make_task
from omniq_redis import RedisTaskQueue, keys

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


def limited(key: str = "k", *, queue: str = "default", max_retries: int = 0, **limits: object) -> Task:
    return make_task(queue=queue, max_retries=max_retries, limits=Limits(key=key, **limits))  # type: ignore[arg-type]


async def claim_ids(queue: RedisTaskQueue, name: str = "default", lease: float = 60) -> list[str]:
    return [task.id for task in await queue.claim_ready([name], 10, lease=lease, worker_id="w")]


async def test_an_unlimited_task_leaves_no_flow_state(queue, raw, prefix):
    """The hash of an unlimited task has no limit field, and its claim and finish touch no flow key."""
    task = make_task()
    await queue.enqueue(task)
    await queue.enqueue_many([make_task()])
    claimed = await queue.claim_ready(["default"], 10, lease=60, worker_id="w")
    stored = await raw.hgetall(keys.QueueKeys(prefix, "default").task(task.id))
    assert not {b"lk", b"lc", b"lr", b"lb", b"hd", b"rr"} & set(stored)
    outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.SUCCEEDED) for t in claimed]
    assert await queue.finish(outcomes) == [True, True]
    assert [key async for key in raw.scan_iter(match=f"{{{prefix}}}:{keys.FLOW}:*")] == []


async def test_a_limited_task_keeps_its_limits_in_its_hash(queue, raw, prefix):
    task = limited("send|a", concurrency=2, rate=0.5, burst=3)
    await queue.enqueue(task)
    stored = await raw.hmget(keys.QueueKeys(prefix, "default").task(task.id), "lk", "lc", "lr", "lb")
    assert stored == [b"send|a", b"2", b"0.5", b"3"]


async def test_holders_follow_claim_extend_and_finish(queue, raw, prefix):
    first, second = limited(concurrency=1), limited(concurrency=1)
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=60, worker_id="w")
    holders, held = keys.flow_key(prefix, "h", "k"), keys.flow_key(prefix, "w", "k")
    before = await raw.zscore(holders, holder.id)
    assert before is not None and await raw.zcard(held) == 1
    await anyio.sleep(0.01)
    assert await queue.extend({holder.id: holder.lease_token or ""}, 120) == {holder.id}
    after = await raw.zscore(holders, holder.id)
    assert after is not None and after > before + 50_000_000
    done = Outcome(task_id=holder.id, lease_token=holder.lease_token or "", kind=OutcomeKind.SUCCEEDED)
    assert await queue.finish([done]) == [True]
    assert await raw.exists(holders, held) == 0, "the slot is free and the held task woken"
    assert await claim_ids(queue) == [second.id]


async def test_an_expired_holders_recovery_wakes_a_held_task(queue, raw, prefix):
    first, second = limited(concurrency=1, max_retries=1), limited(concurrency=1)
    await queue.enqueue_many([first, second])
    assert await claim_ids(queue, lease=0.05) == [first.id]
    assert await claim_ids(queue) == []
    await anyio.sleep(0.1)
    assert [task.id for task in await queue.recover()] == [first.id]
    ready = [member.decode()[29:] for member in await raw.zrange(keys.QueueKeys(prefix, "default").ready, 0, -1)]
    assert ready == [second.id, first.id], "woken by the recovery (no claim has run since), at its old place"
    assert await claim_ids(queue) == [second.id]
    assert await claim_ids(queue) == []


async def test_purging_a_holder_frees_its_slot(queue):
    first, second = limited(concurrency=1), limited(concurrency=1)
    await queue.enqueue_many([first, second])
    assert await claim_ids(queue) == [first.id]
    assert await queue.purge(statuses=[TaskStatus.RUNNING]) == 1
    assert await claim_ids(queue) == [second.id]


async def test_a_limit_holds_across_queues(queue):
    await queue.enqueue_many([limited(concurrency=1, queue="a"), limited(concurrency=1, queue="b")])
    assert len(await claim_ids(queue, "a")) == 1
    assert await claim_ids(queue, "b") == []


async def test_the_rate_state_expires_once_past(queue, raw, prefix):
    await queue.enqueue(limited("fast", rate=1000.0, burst=1))
    assert len(await claim_ids(queue)) == 1
    ttl = await raw.pttl(keys.flow_key(prefix, "t", "fast"))
    assert 0 < ttl <= 1100


async def test_a_claim_parks_each_waiting_task_once(queue, raw, prefix):
    """Rate-limited tasks reserve their slots once, in claim order; later claims do not park them again."""
    tasks = [limited("slow", rate=1.0, burst=1) for _ in range(5)]
    await queue.enqueue_many(tasks)
    assert await claim_ids(queue) == [tasks[0].id]
    qk = keys.QueueKeys(prefix, "default")
    parked = await raw.zrange(qk.delayed, 0, -1, withscores=True)
    assert [member.decode() for member, _ in parked] == [t.id for t in tasks[1:]]
    gaps = [later - earlier for (_, earlier), (_, later) in zip(parked, parked[1:], strict=False)]
    assert all(abs(gap - 1_000_000) < 10 for gap in gaps), gaps
    assert await claim_ids(queue) == []
    assert await raw.zrange(qk.delayed, 0, -1, withscores=True) == parked, "nothing was parked again"


async def test_wait_for_work_ignores_a_paused_queues_ready_tasks(queue, redis_url, prefix):
    await queue.enqueue(make_task(queue="mail"))
    await queue.set_queue_paused("mail", True)
    assert await queue.claim_ready(["mail", "other"], 5, lease=60, worker_id="w") == []
    with anyio.move_on_after(0.4) as scope:
        await queue.wait_for_work(["mail", "other"], 5.0)
    assert scope.cancelled_caught, "a paused queue's ready task must not end the wait"
    async with RedisTaskQueue(redis_url, prefix=prefix) as admin:

        async def resume_soon() -> None:
            await anyio.sleep(0.2)
            await admin.set_queue_paused("mail", False)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(resume_soon)
                await queue.wait_for_work(["mail", "other"], 4.0)
    assert len(await claim_ids(queue, "mail")) == 1


async def test_pausing_checks_the_queue_name(queue):
    with pytest.raises(ValueError, match="braces"):
        await queue.set_queue_paused("a{b}", True)


async def test_a_finish_that_claims_hands_the_freed_slot_to_the_held_task(queue, raw, prefix):
    """The held task is leased by the finish script itself, and the claim behind it takes nothing more.

    A wake-up to READY and a claim would have taken the unlimited task queued behind it as well.
    """
    first, second, free = limited(concurrency=1), limited(concurrency=1), make_task()
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=60, worker_id="w")
    assert await claim_ids(queue) == []  # the key is full: the second is held
    await queue.enqueue(free)
    done = Outcome(task_id=holder.id, lease_token=holder.lease_token or "", kind=OutcomeKind.SUCCEEDED)
    accepted, claimed = await queue.finish_and_claim([done], queues=["default"], limit=10, lease=60, worker_id="w2")
    assert accepted == [True]
    assert [(t.id, t.status, t.worker_id) for t in claimed] == [(second.id, TaskStatus.RUNNING, "w2")]
    assert claimed[0].lease_token and claimed[0].lease_token != holder.lease_token
    holders, held = keys.flow_key(prefix, "h", "k"), keys.flow_key(prefix, "w", "k")
    assert await raw.zrange(holders, 0, -1) == [second.id.encode()] and await raw.exists(held) == 0
    assert [key async for key in raw.scan_iter(match=f"{{{prefix}}}:{keys.FLOW}:x:*")] == []  # the claim took its mark
    assert await claim_ids(queue) == [free.id]
    finished = Outcome(task_id=second.id, lease_token=claimed[0].lease_token, kind=OutcomeKind.SUCCEEDED)
    assert await queue.finish([finished]) == [True]


async def test_a_finish_that_claims_leaves_a_rate_limited_held_task_to_the_claim(queue):
    """A held task with a rate limit too is woken, not handed over: the claim checks its rate."""
    first, second = (limited(concurrency=1, rate=1000, burst=1000) for _ in range(2))
    await queue.enqueue_many([first, second])
    [holder] = await queue.claim_ready(["default"], 10, lease=60, worker_id="w")
    assert await claim_ids(queue) == []
    done = Outcome(task_id=holder.id, lease_token=holder.lease_token or "", kind=OutcomeKind.SUCCEEDED)
    accepted, claimed = await queue.finish_and_claim([done], queues=["default"], limit=10, lease=60, worker_id="w")
    assert accepted == [True] and [t.id for t in claimed] == [second.id]
