"""The fast paths of enqueue and of an idle claimer: pipelined writes, hinted claims, idle proofs."""

import time
from typing import Any

import anyio
import pytest

from omniq.errors import OmniQError
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing import make_task
from omniq_nats import subjects as names
from omniq_nats.claiming import take
from omniq_nats.consumers import consumer
from omniq_nats.jetstream import pull

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def test_enqueue_whose_ticket_is_refused_leaves_no_record(make_queue, raw, prefix):
    """Ticket and record are sent together; a record whose ticket failed is removed again."""
    async with make_queue() as q:
        await raw.request(f"$JS.API.STREAM.DELETE.{names.work_stream(prefix)}", b"", timeout=5)
        task = make_task()
        with pytest.raises(OmniQError):
            await q.enqueue(task)
        assert await q.get(task.id) is None


async def test_idle_claim_wakes_on_a_publication_and_claims_it(make_queue):
    async with make_queue() as waiter, make_queue() as producer:
        assert await waiter.claim(["default"], 5, lease=30, worker_id="w", wait=0.2) == []
        task = make_task()
        async with anyio.create_task_group() as tg:
            got: list[Any] = []

            async def wait_for_it() -> None:
                got.extend(await waiter.claim(["default"], 5, lease=30, worker_id="w", wait=20))

            tg.start_soon(wait_for_it)
            await anyio.sleep(0.2)
            start = time.monotonic()
            await producer.enqueue(task)
        assert time.monotonic() - start < 2
        assert [t.id for t in got] == [task.id] and got[0].status is TaskStatus.RUNNING


async def test_ticket_requeued_without_a_publication_is_found_within_wait(make_queue):
    """A plain nak (release) wakes nobody: an idle proof must not outlive ``wait``."""
    async with make_queue() as idle, make_queue() as holder:
        await holder.enqueue(make_task())
        [held] = await holder.claim_ready(["default"], 1, lease=30, worker_id="holder")
        assert await idle.claim(["default"], 1, lease=30, worker_id="idle", wait=0.3) == []  # proves idleness
        release = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.RELEASE)
        assert await holder.finish([release]) == [True]
        start = time.monotonic()
        with anyio.fail_after(10):
            got = await idle.claim(["default"], 1, lease=30, worker_id="idle", wait=1.0)
            while not got:
                got = await idle.claim(["default"], 1, lease=30, worker_id="idle", wait=1.0)
        assert got[0].id == held.id and time.monotonic() - start < 2.5


async def test_an_early_read_never_drops_a_ticket(make_queue, raw, prefix):
    """A record read before the ticket was fetched decides only a claim; a stale terminal read is re-read."""
    async with make_queue() as q:
        task = make_task()
        await q.enqueue(task)
        [held] = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
        done = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.SUCCEEDED)
        assert await q.finish([done]) == [True]
        client = await q._connection.client()
        stale = await client.tasks.get(names.token(task.id))  # SUCCEEDED
        await q.enqueue(task)  # the finished id is replaced: PENDING again, with a new ticket
        msgs = await pull(client.nc, names.work_stream(prefix), await consumer(client, "default", 0), 5)
        claimed = await take(client, msgs, 30, "w", {task.id: stale})
        assert [t.id for t in claimed] == [task.id] and claimed[0].attempts == 1


async def test_a_draining_claimer_skips_the_stream_look_but_not_a_better_ticket(make_queue):
    """While the best subject fills every pull, claims pull it directly; a ticket published to a
    better subject meanwhile is still claimed first."""
    async with make_queue() as worker, make_queue() as producer:
        await producer.enqueue_many([make_task(priority=0) for _ in range(20)])
        first = await worker.claim(["default"], 5, lease=30, worker_id="w", wait=1.0)
        wake = (await worker._connection.client()).wake
        assert len(first) == 5 and wake.busy is not None  # the drain fast path is armed
        signals = wake.signals
        await producer.enqueue(make_task(id="urgent", priority=9))
        with anyio.fail_after(10):
            while wake.signals == signals:  # the publication reached the worker's subscription
                await anyio.sleep(0.005)
        second = await worker.claim(["default"], 5, lease=30, worker_id="w", wait=1.0)
        assert second[0].id == "urgent" and len(second) == 5


async def test_a_watching_claimer_claims_announced_records_without_reading_them(make_queue):
    """An enqueue announces the revisions of the records it created; a watcher claims on them directly."""
    async with make_queue() as worker, make_queue() as producer:
        assert await worker.claim(["default"], 5, lease=30, worker_id="w") == []  # now watching
        revisions = (await worker._connection.client()).wake.revisions
        tasks = [make_task() for _ in range(3)]
        await producer.enqueue_many(tasks)
        with anyio.fail_after(10):
            while len(revisions) < len(tasks):
                await anyio.sleep(0.01)
        claimed = await worker.claim_ready(["default"], 5, lease=30, worker_id="w")
        assert sorted(t.id for t in claimed) == sorted(t.id for t in tasks)
        assert all(t.status is TaskStatus.RUNNING and t.attempts == 1 for t in claimed)
        assert revisions == {}


async def test_a_stale_announced_revision_costs_a_read_not_the_claim(make_queue):
    """A revision that is no longer the record's (here: the task ran and was enqueued again) fails its
    compare-and-set; the ticket is then decided on a fresh read, so the task is still claimed exactly once."""
    async with make_queue() as q:
        task = make_task()
        await q.enqueue(task)
        client = await q._connection.client()
        first = (await client.tasks.get(names.token(task.id))).revision
        [held] = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
        done = Outcome(task_id=held.id, lease_token=held.lease_token, kind=OutcomeKind.SUCCEEDED)
        assert await q.finish([done]) == [True]
        await q.enqueue(task)  # the finished id is replaced: PENDING again, with a new ticket
        client.wake.revisions[task.id] = first  # what a late announcement of the first enqueue would say
        claimed = await q.claim_ready(["default"], 5, lease=30, worker_id="w")
        assert [t.id for t in claimed] == [task.id] and claimed[0].attempts == 1
        assert (await q.get(task.id)).status is TaskStatus.RUNNING
