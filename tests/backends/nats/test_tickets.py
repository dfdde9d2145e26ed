"""JetStream-specific behaviour: tickets, AckWait redelivery, naks, the lease index."""

import json
from datetime import timedelta

import anyio
import pytest

from omniq.base import CorruptTask
from omniq.models import Outcome, OutcomeKind, TaskError, TaskStatus, encode_task, utcnow
from omniq.testing import make_task
from omniq_nats import subjects as names

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def stream_messages(nc, stream):
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    return json.loads(reply.data)["state"]["messages"]


async def assert_messages(raw, stream: str, expected: int) -> None:
    """Wait (10 s at most) until ``stream`` holds ``expected`` messages.

    Index publishes and ticket acks/terms are plain NATS messages, not
    acknowledged JetStream calls, so a stream reaches its count shortly after
    the call that caused it, not necessarily before that call returns.
    """
    count = -1
    with anyio.move_on_after(10):
        while (count := await stream_messages(raw, stream)) != expected:
            await anyio.sleep(0.05)
    assert count == expected, f"{stream} holds {count} messages, expected {expected}"


async def test_finished_tasks_leave_no_ticket(make_queue, raw, prefix):
    async with make_queue() as q:
        await q.enqueue_many([make_task() for _ in range(5)])
        await assert_messages(raw, names.work_stream(prefix), 5)
        held = await q.claim_ready(["default"], 5, lease=30, worker_id="w")
        kinds = [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.EXPIRED, OutcomeKind.SUCCEEDED]
        outcomes = [
            Outcome(task_id=t.id, lease_token=t.lease_token, kind=k) for t, k in zip(held[:4], kinds, strict=True)
        ]
        assert await q.finish(outcomes) == [True] * 4
        assert await q.cancel(held[4].id)
        await assert_messages(raw, names.work_stream(prefix), 0)


async def test_retry_naks_the_same_ticket_with_its_delay(make_queue, raw, prefix):
    async with make_queue() as q:
        await q.enqueue(make_task(max_retries=2))
        [held] = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
        eta = utcnow() + timedelta(seconds=0.6)
        retry = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.RETRY, eta=eta)
        assert await q.finish([retry]) == [True]
        await assert_messages(raw, names.work_stream(prefix), 1)  # no new ticket: the old one waits
        assert await q.claim_ready(["default"], 1, lease=30, worker_id="w") == []
        with anyio.fail_after(10):
            [again] = await q.claim(["default"], 1, lease=30, worker_id="w", wait=9)
        assert again.id == held.id and again.attempts == 2


async def test_ack_wait_redelivery_takes_over_a_dead_workers_task_without_recover(make_queue):
    async with make_queue(ack_wait=0.5) as dead, make_queue(ack_wait=0.5) as alive:
        await dead.enqueue(make_task(max_retries=3))
        [stale] = await dead.claim_ready(["default"], 1, lease=0.3, worker_id="dead")
        with anyio.fail_after(10):
            fresh = await alive.claim(["default"], 1, lease=30, worker_id="alive", wait=9)
            while not fresh:
                fresh = await alive.claim(["default"], 1, lease=30, worker_id="alive", wait=1)
        assert fresh[0].id == stale.id and fresh[0].attempts == 2 and fresh[0].worker_id == "alive"
        late = Outcome(task_id=stale.id, lease_token=stale.lease_token, kind=OutcomeKind.SUCCEEDED)
        assert await dead.finish([late]) == [False]
        ok = Outcome(task_id=stale.id, lease_token=fresh[0].lease_token, kind=OutcomeKind.SUCCEEDED)
        assert await alive.finish([ok]) == [True]


async def test_redelivery_while_the_lease_lives_does_not_steal(make_queue, raw, prefix):
    async with make_queue(ack_wait=0.3) as holder, make_queue(ack_wait=0.3) as other:
        await holder.enqueue(make_task())
        [held] = await holder.claim_ready(["default"], 1, lease=30, worker_id="holder")
        await anyio.sleep(1.0)  # AckWait passed: JetStream redelivers the ticket
        assert await other.claim(["default"], 1, lease=30, worker_id="other", wait=1.0) == []
        stored = await other.get(held.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING and stored.worker_id == "holder"
        done = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.SUCCEEDED)
        assert await holder.finish([done]) == [True]
        await assert_messages(raw, names.work_stream(prefix), 0)


async def test_ticket_without_record_creates_the_task(make_queue, raw, prefix):
    """An enqueue that died between its ticket and its record loses nothing."""
    async with make_queue() as q:
        task = make_task(queue="orphans")
        await raw.request(names.work_subject(prefix, "orphans", 0), encode_task(task), timeout=5)
        assert await q.get(task.id) is None
        [claimed] = await q.claim_ready(["orphans"], 1, lease=30, worker_id="w")
        assert claimed.id == task.id and claimed.attempts == 1
        stored = await q.get(task.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING


async def test_purged_tasks_tickets_are_dropped_not_resurrected(make_queue, raw, prefix):
    async with make_queue() as q:
        tasks = [make_task() for _ in range(3)]
        await q.enqueue_many(tasks)
        assert await q.purge(statuses=[TaskStatus.PENDING]) == 3
        assert await q.claim_ready(["default"], 10, lease=30, worker_id="w") == []
        await assert_messages(raw, names.work_stream(prefix), 0)
        assert await q.get_many([t.id for t in tasks]) == [None, None, None]


async def test_corrupted_ticket_is_terminated(make_queue, raw, prefix):
    async with make_queue() as q:
        await raw.request(names.work_subject(prefix, "default", 0), b"\xc1garbage", timeout=5)
        good = make_task()
        await q.enqueue(good)
        claimed = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert [t.id for t in claimed] == [good.id]
        await assert_messages(raw, names.work_stream(prefix), 1)  # only the good, held ticket


async def test_each_priority_has_its_own_subject_and_consumer(make_queue, raw, prefix):
    async with make_queue() as q:
        await q.enqueue_many([make_task(priority=p) for p in (-3, 0, 7)])
        reply = await raw.request(
            f"$JS.API.STREAM.INFO.{names.work_stream(prefix)}",
            json.dumps({"subjects_filter": ">"}).encode(),
            timeout=5,
        )
        subjects = set(json.loads(reply.data)["state"]["subjects"])
        assert subjects == {names.work_subject(prefix, "default", p) for p in (-3, 0, 7)}
        claimed = await q.claim_ready(["default"], 3, lease=30, worker_id="w")
        assert [t.priority for t in claimed] == [7, 0, -3]


async def test_recover_reads_the_lease_index_and_purges_past_seconds(make_queue, raw, prefix):
    async with make_queue() as q:
        await q.enqueue_many([make_task(max_retries=0), make_task(max_retries=1)])
        held = await q.claim_ready(["default"], 2, lease=0.2, worker_id="w")
        await assert_messages(raw, names.leases_stream(prefix), 1)  # one message per deadline second
        await anyio.sleep(1.5)  # the deadline second is wholly in the past
        recovered = {t.id: t.status for t in await q.recover()}
        assert recovered == {held[0].id: TaskStatus.FAILED, held[1].id: TaskStatus.PENDING}
        await assert_messages(raw, names.leases_stream(prefix), 0)
        await assert_messages(raw, names.work_stream(prefix), 1)  # the failed one's ticket is terminated
        assert [t.id for t in await q.claim_ready(["default"], 2, lease=30, worker_id="w")] == [held[1].id]


async def test_queue_names_that_are_not_subject_tokens(make_queue):
    async with make_queue() as q:
        task = make_task(queue="mail.high priority/ü")
        await q.enqueue(task)
        [claimed] = await q.claim_ready([task.queue], 1, lease=30, worker_id="w")
        assert claimed.id == task.id and claimed.queue == task.queue


async def test_an_unreadable_record_is_claimed_from_its_ticket_for_failure(make_queue, raw, prefix):
    """A task record that is not even MessagePack used to fail the whole claim; its ticket still names the task."""
    async with make_queue() as q:
        bad, good = make_task(priority=5), make_task()
        await q.enqueue_many([bad, good])
        bucket = await raw.jetstream().key_value(names.tasks_bucket(prefix))
        await bucket.put(names.token(bad.id), b"\xc1 not msgpack")
        claimed = {t.id: t for t in await q.claim_ready(["default"], 10, lease=30, worker_id="w")}
        assert set(claimed) == {bad.id, good.id}
        held = claimed[bad.id]
        assert isinstance(held, CorruptTask) and held.func == bad.func and held.attempts == 1
        error = TaskError(type="CorruptRecord", message=held.problem, attempt=1, retryable=False)
        assert held.lease_token is not None
        failed = Outcome(task_id=bad.id, lease_token=held.lease_token, kind=OutcomeKind.FAILED, error=error)
        assert await q.finish([failed]) == [True]
        assert (await q.get(bad.id)).status is TaskStatus.FAILED


async def test_a_look_waits_only_for_tickets_its_consumer_has_not_counted(make_queue):
    """The lag check behind claim_ready (see omniq_nats.consumers.lagging) counts out tickets as known.

    The server acknowledges a publish before its consumers count the
    message, so a look compares the stream's count with the consumer's; a
    ticket held under a lease must not read as lag (the look would then
    wait on every subject whose tickets are all out).
    """
    from omniq_nats.consumers import lagging

    async with make_queue() as q:
        task = make_task(priority=2)
        await q.enqueue(task)
        assert [t.id for t in await q.claim_ready(["default"], 5, lease=30, worker_id="w")] == [task.id]
        client = await q._connection.client()
        assert await q.claim_ready(["default"], 5, lease=30, worker_id="w") == []
        assert not await lagging(client, "default", 2, 1)  # the stream's one ticket is out: known
        assert await lagging(client, "default", 2, 2)  # one more than the consumer knows: not counted yet
