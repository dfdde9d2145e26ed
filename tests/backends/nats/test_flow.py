"""Flow control and queue pause on NATS: what the engine stores, and what unlimited tasks do not pay."""

from datetime import datetime, timedelta, timezone

import anyio
import pytest

from omniq.flow_control import Limits
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing import make_task
from omniq_nats import flow, subjects as names
from omniq_nats.jetstream import api

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


def limited(**limits):
    return make_task(limits=Limits(key="k", **limits))


async def _flow_messages(raw, prefix) -> int:
    info = await api(raw, f"STREAM.INFO.{names.kv_stream(names.flow_bucket(prefix))}")
    return int(info["state"]["messages"])


async def _pages(client) -> list[str]:
    """The held pages in the flow bucket."""
    return [key for key, entry in await client.flow.entries() if key.startswith("w.") and not entry.deleted]


async def test_unlimited_tasks_never_touch_the_flow_bucket(make_queue, raw, prefix):
    async with make_queue() as q:
        tasks = [make_task() for _ in range(5)]
        await q.enqueue_many(tasks)
        claimed = await q.claim(["default"], 10, lease=30, worker_id="w", wait=1)
        outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token, kind=OutcomeKind.SUCCEEDED) for t in claimed]
        assert await q.finish(outcomes) == [True] * len(claimed)
        assert await _flow_messages(raw, prefix) == 0


async def test_a_rate_limited_task_is_parked_once(make_queue):
    async with make_queue() as q:
        tasks = [limited(rate=1.0, burst=1) for _ in range(3)]
        await q.enqueue_many(tasks)
        assert [t.id for t in await q.claim_ready(["default"], 10, lease=30, worker_id="w")] == [tasks[0].id]
        parked = [await q.get(t.id) for t in tasks[1:]]
        assert all(t.status is TaskStatus.PENDING and t.rate_reserved and t.eta is not None for t in parked)
        assert parked[0].eta < parked[1].eta, "each waiting task reserves its own slot"
        assert await q.claim_ready(["default"], 10, lease=30, worker_id="w") == []
        assert [await q.get(t.id) for t in tasks[1:]] == parked, "a second claim leaves parked tasks alone"


async def test_recover_frees_an_expired_holders_slot_and_wakes_the_held_task(make_queue):
    async with make_queue() as q:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await q.enqueue_many([first, second])
        assert [t.id for t in await q.claim_ready(["default"], 10, lease=0.5, worker_id="w")] == [first.id]
        held = await q.get(second.id)
        assert held.held and held.eta is not None
        await anyio.sleep(0.7)
        assert [t.id for t in await q.recover()] == [first.id]
        woken = await q.get(second.id)
        assert woken.status is TaskStatus.PENDING and not woken.held and woken.eta is None
        claimed = await q.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert {t.id for t in claimed} <= {first.id, second.id} and len(claimed) == 1


async def test_purging_a_holder_frees_its_slot(make_queue):
    async with make_queue() as q:
        first, second = limited(concurrency=1), limited(concurrency=1)
        await q.enqueue_many([first, second])
        assert [t.id for t in await q.claim_ready(["default"], 10, lease=30, worker_id="w")] == [first.id]
        assert await q.purge(statuses=[TaskStatus.RUNNING]) == 1
        assert [t.id for t in await q.claim_ready(["default"], 10, lease=30, worker_id="w")] == [second.id]


async def test_another_connection_sees_a_pause_without_reading_it(make_queue):
    async with make_queue() as admin, make_queue() as claimer:
        client = await claimer._connection.client()
        assert client.paused.queues == frozenset()
        await admin.set_queue_paused("mail", True)
        with anyio.fail_after(5):
            while client.paused.queues != {"mail"}:
                await anyio.sleep(0.01)
        await admin.set_queue_paused("mail", False)
        with anyio.fail_after(5):
            while client.paused.queues:
                await anyio.sleep(0.01)


async def test_claimers_drain_held_tasks_past_stale_tickets_under_a_short_lease(make_queue):
    """A short lease brings the parked tickets of held tasks back while the key is still busy.

    Most of those tickets point at tasks already woken (by a fresh ticket) and
    finished: a claim that meets only them must not answer empty while a
    woken task waits behind them, or a burst worker stops with tasks left.
    Several claimers take small batches, extend their leases and finish in
    batches; every empty claim comes after the last finish, so all is done then.
    """
    lease = 0.6
    tasks = [limited(concurrency=3) for _ in range(60)]
    async with make_queue() as producer, make_queue() as a, make_queue() as b, make_queue() as c:
        await producer.enqueue_many(tasks)
        claimers = [a, b, c]
        with anyio.fail_after(30):
            for turn in range(10_000):
                queue = claimers[turn % len(claimers)]
                claimed = await queue.claim_ready(["default"], 4, lease=lease, worker_id=f"w{turn % 3}")
                if not claimed:
                    break
                await anyio.sleep(0.03)
                assert await queue.extend({t.id: t.lease_token for t in claimed}, lease) == {t.id for t in claimed}
                outcomes = [
                    Outcome(task_id=t.id, lease_token=t.lease_token, kind=OutcomeKind.SUCCEEDED) for t in claimed
                ]
                assert await queue.finish(outcomes) == [True] * len(claimed)
        statuses = [(await producer.get(t.id)).status for t in tasks]
        assert statuses.count(TaskStatus.SUCCEEDED) == len(tasks), statuses.count(TaskStatus.PENDING)


async def test_a_held_backlog_past_the_head_waits_in_pages_and_runs_in_claim_order(make_queue, monkeypatch):
    """The key's state lists at most HEAD held tasks; the rest wait in pages, read back as slots free.

    A state listing every held task outgrew the server's largest message at about 25,000 of them.
    """
    monkeypatch.setattr(flow, "HEAD", 3)
    base = datetime.now(timezone.utc) - timedelta(seconds=10)
    tasks = [
        make_task(limits=Limits(key="k", concurrency=1), created_at=base + timedelta(milliseconds=i)) for i in range(12)
    ]
    async with make_queue() as q:
        await q.enqueue_many(tasks)
        [holder] = await q.claim_ready(["default"], 5, lease=30, worker_id="w")
        while await q.claim_ready(["default"], 5, lease=30, worker_id="w"):
            pass  # parks the others, five at a time (nothing more is claimed: the key is full)
        client = await q._connection.client()
        state = flow._decode((await client.flow.get(names.limit_key("k"))).value)
        assert len(state.held) <= 3 and state.pages
        listed = [entry[2] for entry in state.held]
        for page in state.pages:
            listed += [
                entry[2] for entry in flow._decode_page((await client.flow.get(names.held_page("k", page))).value)
            ]
        assert sorted(listed) == sorted(t.id for t in tasks[1:]) and len(listed) == 11
        assert len(await _pages(client)) == len(state.pages)
        order = [holder.id]
        with anyio.fail_after(30):
            while len(order) < len(tasks):
                done = Outcome(task_id=holder.id, lease_token=holder.lease_token, kind=OutcomeKind.SUCCEEDED)
                assert await q.finish([done]) == [True]
                [holder] = await q.claim(["default"], 5, lease=30, worker_id="w", wait=5)
                order.append(holder.id)
        assert order == [t.id for t in tasks]
        state = flow._decode((await client.flow.get(names.limit_key("k"))).value)
        assert state.held == [] and state.pages == []
        assert await _pages(client) == []
