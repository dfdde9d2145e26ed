"""Dependencies on NATS: the paths the conformance area cannot reach, and the sweep after a process died.

The crash tests write what a dying process would have left (an end without
its release, a readied dependant without its ticket, a creation without its
re-read) and check that ``recover`` finishes the job once the notes are due
(``ack_wait`` seconds after the write: 1 s here).
"""

import anyio
import msgspec
import pytest

from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, Task, TaskStatus
from omniq.testing import make_task
from omniq_nats import enqueueing, subjects as names
from omniq_nats.jetstream import scan
from omniq_nats.notes import HEADER
from omniq_nats.records import apply_outcome, decode_record, encode_record, transition, with_task
from omniq_nats.tickets import publish_tickets

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


def done(task, kind=OutcomeKind.SUCCEEDED):
    return Outcome(task_id=task.id, lease_token=task.lease_token, kind=kind)


def finished(record, outcome, now):
    """``record`` as the finish accepting ``outcome`` writes it."""
    task = apply_outcome(record.task, outcome, now)
    assert task is not None
    return with_task(record, task)


async def claim_ids(q, limit=10, lease=30.0):
    return [t.id for t in await q.claim_ready(["default"], limit, lease=lease, worker_id="w")]


async def waiting_of(q, task_id):
    task = await q.get(task_id)
    assert task is not None
    return task.waiting


async def claimed_after_recover(q, task_id, timeout=10.0):
    """Run ``recover`` until ``task_id`` can be claimed (the sweep's notes come due); the claimed ids."""
    with anyio.fail_after(timeout):
        while True:
            await q.recover()
            ids = await claim_ids(q)
            if ids:
                assert ids == [task_id]
                return ids
            await anyio.sleep(0.2)


async def test_tasks_without_dependencies_file_no_note(make_queue, raw, prefix):
    async with make_queue() as q:
        await q.enqueue_many([make_task() for _ in range(3)])
        held = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert await q.finish([done(t) for t in held]) == [True] * 3
        assert await q.cancel(await q.enqueue(make_task()))
        msgs = await scan(raw, names.leases_stream(prefix), names.lease_subjects(prefix))
        assert msgs and not [m for m in msgs if m.headers and HEADER in m.headers]


async def test_self_references_and_later_batch_members_do_not_count(make_queue):
    async with make_queue() as q:
        alone = make_task()
        alone = msgspec.structs.replace(alone, depends_on=(alone.id,))
        first, second = make_task(), make_task()
        first = msgspec.structs.replace(first, depends_on=(second.id,))  # later in the batch: not stored yet
        second = msgspec.structs.replace(second, depends_on=(first.id,))  # earlier in the batch: counts
        await q.enqueue_many([alone, first, second])
        assert [await waiting_of(q, t.id) for t in (alone, first, second)] == [0, 0, 1]
        held = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert sorted(t.id for t in held) == sorted([alone.id, first.id])
        assert await q.finish([done(t) for t in held]) == [True, True]
        assert await claim_ids(q) == [second.id]


async def test_a_registration_on_a_running_limited_dependency_survives_heartbeats(make_queue):
    async with make_queue() as q:
        dep = make_task(limits=Limits(key="k", concurrency=1))
        await q.enqueue(dep)
        [held] = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        child = make_task(depends_on=(dep.id,))
        await q.enqueue(child)
        assert await waiting_of(q, child.id) == 1
        assert await q.extend({dep.id: held.lease_token}, 30) == {dep.id}
        assert await q.extend({dep.id: held.lease_token}, 30) == {dep.id}
        assert await claim_ids(q) == []
        assert await q.finish([done(held, OutcomeKind.FAILED)]) == [True]
        assert await waiting_of(q, child.id) == 0
        assert await claim_ids(q) == [child.id]


async def test_a_dependency_failed_by_a_claim_releases_its_dependants(make_queue):
    async with make_queue(ack_wait=0.5) as dead, make_queue(ack_wait=0.5) as alive:
        dep = make_task()  # no retries: the claim that finds its lease expired fails it
        child = make_task(depends_on=(dep.id,))
        await dead.enqueue_many([dep, child])
        assert await claim_ids(dead, lease=0.3) == [dep.id]
        with anyio.fail_after(10):
            got: list[Task] = []
            while not got:
                got = await alive.claim(["default"], 5, lease=30, worker_id="alive", wait=1)
        assert [t.id for t in got] == [child.id]
        assert (await alive.get(dep.id)).status is TaskStatus.FAILED


async def test_a_stray_ticket_of_a_waiting_task_is_dropped(make_queue):
    async with make_queue() as q:
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await q.enqueue_many([dep, child])
        client = await q._connection.client()
        await publish_tickets(client, [await q.get(child.id)])  # as a resume or an operator retry might
        assert await q.set_paused(child.id, True) and await q.set_paused(child.id, False)  # publishes nothing
        assert await claim_ids(q) == [dep.id]
        assert await claim_ids(q) == []
        held = await q.get(dep.id)
        assert await q.finish([done(held)]) == [True]
        assert await claim_ids(q) == [child.id]
        assert await claim_ids(q) == []


async def test_an_operator_retry_of_a_cancelled_dependant_waits_again(make_queue):
    async with make_queue() as q:
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await q.enqueue_many([dep, child])
        assert await q.cancel(child.id)
        retried = await q.retry(child.id)
        assert retried is not None and retried.status is TaskStatus.PENDING and retried.waiting == 1
        assert await claim_ids(q) == [dep.id]
        held = await q.get(dep.id)
        assert await q.finish([done(held)]) == [True]
        assert await claim_ids(q) == [child.id]


async def test_recover_releases_a_dependant_whose_release_died_with_its_process(make_queue):
    async with make_queue(ack_wait=1.0) as q:
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await q.enqueue_many([dep, child])
        [held] = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        client = await q._connection.client()
        outcome = done(held)

        def end(record, now):
            return finished(record, outcome, now)

        # the end's write (noted) without the release that follows it in finish
        assert dep.id in await transition(client, [dep.id], end, use_cache=False)
        assert await waiting_of(q, child.id) == 1
        await claimed_after_recover(q, child.id)


async def test_recover_tickets_a_dependant_readied_without_its_ticket(make_queue):
    async with make_queue(ack_wait=1.0) as q:
        dep = make_task()
        child = make_task(depends_on=(dep.id,))
        await q.enqueue_many([dep, child])
        [held] = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        client = await q._connection.client()
        outcome = done(held)

        def end(record, now):
            return finished(record, outcome, now)

        def ready(record, now):
            return msgspec.structs.replace(record, task=msgspec.structs.replace(record.task, waiting=0), awaited=[])

        # the release's write, without the ticket that follows it
        assert dep.id in await transition(client, [dep.id], end, use_cache=False)
        assert child.id in await transition(client, [child.id], ready, use_cache=False)
        assert await claim_ids(q) == []
        await claimed_after_recover(q, child.id)


async def test_recover_releases_a_dependant_created_as_its_dependency_ended(make_queue, monkeypatch):
    async def died(client, records):  # the process died before the re-read that follows the creation
        return None

    monkeypatch.setattr(enqueueing, "settle", died)
    async with make_queue(ack_wait=1.0) as q:
        dep = make_task()
        await q.enqueue(dep)
        [held] = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        child = make_task(depends_on=(dep.id,))
        await q.enqueue(child)
        assert await waiting_of(q, child.id) == 1
        # the dependency ended, its releaser having looked before the dependant's record was there:
        # written here without a note, so only the enqueue's own note is left to find it.
        client = await q._connection.client()
        key = names.token(dep.id)
        entry = await client.tasks.get(key)
        record = decode_record(entry.value)
        assert record.dependants == [child.id]
        ended = finished(record, done(held), await client.clock.now())
        assert ended.dependants == []
        assert await client.tasks.update(key, encode_record(ended), entry.revision) is not None
        await claimed_after_recover(q, child.id)
