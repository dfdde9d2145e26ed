"""Script-level behaviour of the Redis task queue: atomic claims, ordering, wake-ups, key layout."""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import msgspec
import pytest
from redis.crc import key_slot

from omniq.errors import SerializationError
from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.testing import make_task, now_ms
from omniq_redis import RedisTaskQueue, keys
from omniq_redis.connection import close_client, open_client
from omniq_redis.scripts import SCRIPTS, Script

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


async def test_concurrent_claim_scripts_never_share_a_task(redis_url, prefix):
    """Eight connections race the claim script with small batches: each task goes out exactly once."""
    producer = RedisTaskQueue(redis_url, prefix=prefix)
    claimers = [RedisTaskQueue(redis_url, prefix=prefix) for _ in range(8)]
    claimed: list[list[str]] = [[] for _ in claimers]
    async with producer:
        ids = await producer.enqueue_many([make_task(priority=i % 3) for i in range(600)])
        for claimer in claimers:
            await claimer.connect()
        try:

            async def drain(index: int) -> None:
                while True:
                    batch = await claimers[index].claim_ready(["default"], 7, lease=30, worker_id=f"w{index}")
                    if not batch:
                        return
                    claimed[index].extend(task.id for task in batch)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    for index in range(len(claimers)):
                        group.start_soon(drain, index)
        finally:
            for claimer in claimers:
                await claimer.close()
        everything = [task_id for batch in claimed for task_id in batch]
        assert len(everything) == len(set(everything)) == 600
        assert set(everything) == set(ids)
        assert sum(1 for batch in claimed if batch) > 1, "the race never happened"
        assert await producer.count(status=TaskStatus.RUNNING) == 600


async def test_claim_order_is_priority_then_eta_then_fifo(queue):
    base = now_ms(-10)
    tasks = [
        make_task(id="low-old", priority=0, eta=base),
        make_task(id="high-late", priority=5, eta=base + timedelta(seconds=5)),
        make_task(id="high-early", priority=5, eta=base + timedelta(seconds=1)),
        make_task(id="low-new-1", priority=0),
        make_task(id="low-new-2", priority=0),
        make_task(id="negative", priority=-3, eta=base - timedelta(days=1)),
    ]
    await queue.enqueue_many(tasks)
    claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert [task.id for task in claimed] == ["high-early", "high-late", "low-old", "low-new-1", "low-new-2", "negative"]


async def test_due_delayed_tasks_are_promoted_by_the_claim(queue, raw, prefix):
    await queue.enqueue(make_task(id="later", eta=now_ms(0.4)))
    qk = keys.QueueKeys(prefix, "default")
    assert await raw.zcard(qk.delayed) == 1 and await raw.zcard(qk.ready) == 0
    assert await queue.claim_ready(["default"], 1, lease=30, worker_id="w") == []
    await anyio.sleep(0.5)
    claimed = await queue.claim_ready(["default"], 1, lease=30, worker_id="w")
    assert [task.id for task in claimed] == ["later"]
    assert await raw.zcard(qk.delayed) == 0


async def test_an_idle_claim_wakes_when_an_earlier_eta_is_enqueued(queue):
    """A worker blocked until a far eta learns of a nearer one enqueued meanwhile."""
    await queue.enqueue(make_task(id="far", eta=now_ms(60)))
    assert await queue.claim(["default"], 5, lease=30, worker_id="w", wait=0.01) == []  # learns the far eta

    async def enqueue_soon() -> None:
        await anyio.sleep(0.3)
        await queue.enqueue(make_task(id="near", eta=now_ms(0.3)))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(enqueue_soon)
            claimed = await queue.claim(["default"], 5, lease=30, worker_id="w", wait=8.0)
    assert [task.id for task in claimed] == ["near"]


async def test_wait_for_work_survives_cancellation_of_a_blocking_pop(redis_url, prefix, queue):
    """A BLPOP cut short by a cancel scope must not poison the blocking connection."""
    with anyio.move_on_after(0.2):
        await queue.wait_for_work(["default"], 5.0)
    async with RedisTaskQueue(redis_url, prefix=prefix) as producer:

        async def enqueue_soon() -> None:
            await anyio.sleep(0.3)
            await producer.enqueue(make_task(id="wake"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(enqueue_soon)
                await queue.wait_for_work(["default"], 8.0)
    assert [task.id for task in await queue.claim_ready(["default"], 5, lease=30, worker_id="w")] == ["wake"]


async def test_draining_claim_drops_stale_wake_up_tokens(queue, raw, prefix):
    await queue.enqueue_many([make_task() for _ in range(10)])
    signal = keys.QueueKeys(prefix, "default").signal
    assert await raw.llen(signal) == 10
    await queue.claim_ready(["default"], 4, lease=30, worker_id="w")
    assert await raw.llen(signal) == 10, "work is left: the tokens stay"
    await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert await raw.llen(signal) == 0


async def test_lease_deadline_uses_the_server_clock(queue, raw):
    await queue.enqueue(make_task())
    seconds, micros = await raw.time()
    (task,) = await queue.claim_ready(["default"], 1, lease=60, worker_id="w")
    server_now = seconds + micros / 1e6
    assert task.lease_expires_at is not None
    assert 59 <= task.lease_expires_at.timestamp() - server_now <= 61


async def test_a_queue_keeps_its_keys_in_one_cluster_slot(queue, raw, prefix):
    await queue.enqueue_many([make_task(id="a", queue="emails"), make_task(id="b", queue="emails", eta=now_ms(60))])
    (claimed,) = await queue.claim_ready(["emails"], 1, lease=30, worker_id="w")
    outcome = Outcome(task_id=claimed.id, lease_token=claimed.lease_token or "", kind=OutcomeKind.RETRY, eta=now_ms(60))
    assert await queue.finish([outcome]) == [True]
    await queue.enqueue(make_task(id="c", queue="emails"))
    queue_keys = [key async for key in raw.scan_iter(match=f"{{{prefix}:emails}}*", count=1000)]
    assert len(queue_keys) >= 6
    assert len({key_slot(key) for key in queue_keys}) == 1


async def test_queue_names_with_braces_are_refused(queue):
    with pytest.raises(ValueError, match="braces"):
        await queue.enqueue(make_task(queue="bad{name}"))


async def test_an_unreadable_envelope_is_left_out_of_a_claim_not_fatal(queue, raw, prefix, caplog):
    """Not even salvageable (no id to report on): logged, the rest of the batch is claimed."""
    good = make_task()
    await queue.enqueue_many([make_task(id="broken", priority=5), good])
    await raw.hset(keys.QueueKeys(prefix, "default").task("broken"), "b", b"\xc1 not msgpack")
    with caplog.at_level(logging.ERROR, logger="omniq.redis"):
        claimed = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert [t.id for t in claimed] == [good.id]
    assert "unreadable" in caplog.text


async def test_corrupted_envelope_is_a_serialization_error(queue, raw, prefix):
    await queue.enqueue(make_task(id="broken"))
    await raw.hset(keys.QueueKeys(prefix, "default").task("broken"), "b", b"\xc1 not msgpack")
    with pytest.raises(SerializationError):
        await queue.get("broken")


async def test_lost_scripts_are_loaded_again(redis_url, prefix, monkeypatch):
    """After a server restart or SCRIPT FLUSH the SHA is unknown: the client reloads and runs it."""
    # Scripts the server has never seen (their source names this test's unique prefix).
    monkeypatch.setitem(SCRIPTS, "probe1", Script("probe1", f"return '1{prefix}'"))
    monkeypatch.setitem(SCRIPTS, "probe2", Script("probe2", f"return '2{prefix}'"))
    client = await open_client(redis_url, {}, scripts=False)
    try:
        assert await client.run("probe1", [prefix]) == f"1{prefix}".encode()
        replies = await client.run_many([("probe2", [prefix]), ("probe1", [prefix])])
        assert replies == [f"2{prefix}".encode(), f"1{prefix}".encode()]
    finally:
        await close_client(client)


def test_stored_microsecond_times_read_back_exactly():
    """from_us goes through a float for speed; it must still give back every microsecond."""
    import random
    from datetime import datetime, timedelta, timezone

    from omniq_redis._codec import from_us, to_us

    rng = random.Random(7)
    start = datetime(1970, 1, 1, tzinfo=timezone.utc)
    end = datetime(9999, 12, 31, tzinfo=timezone.utc)
    span = (end - start) // timedelta(microseconds=1)
    near = (datetime(2110, 1, 1, tzinfo=timezone.utc) - start) // timedelta(microseconds=1)
    for bound in [near] * 20_000 + [span] * 2_000:
        moment = start + timedelta(microseconds=rng.randrange(0, bound))
        assert from_us(str(to_us(moment)).encode()) == moment


async def test_a_full_wake_up_list_is_left_at_its_cap(queue, raw, prefix):
    for _ in range(keys.SIGNAL_CAP + 6):
        await queue.enqueue(make_task())
    assert await raw.llen(keys.QueueKeys(prefix, "default").signal) == keys.SIGNAL_CAP


async def test_a_reconnected_client_registers_its_queue_again(queue, raw, prefix):
    await queue.enqueue(make_task(queue="emails"))
    await raw.delete(keys.global_key(prefix, keys.QUEUES))  # as if the server had lost its data
    await queue.close()
    await queue.connect()
    await queue.enqueue(make_task(queue="emails"))
    assert await queue.count() == 2, "count without a queue reads the registered queues"
    assert await queue.count(queue="emails") == 2


async def test_the_single_enqueue_script_stores_what_the_general_one_does(queue, raw, prefix, monkeypatch):
    """A plain enqueue() on a registered queue runs enqueue_one; enqueue_many the general script."""
    ran: list[str] = []
    run = queue._run

    async def recording_run(name, args, script_keys=()):
        ran.append(name)
        return await run(name, args, script_keys)

    run_many = queue._run_many

    async def recording_run_many(calls):
        ran.extend(name for name, _ in calls)
        return await run_many(calls)

    monkeypatch.setattr(queue, "_run", recording_run)
    monkeypatch.setattr(queue, "_run_many", recording_run_many)
    await queue.enqueue(make_task())  # the queue's first: general script, registers it
    created = now_ms()
    fast = make_task(priority=3, max_retries=2, created_at=created)
    general = make_task(priority=3, max_retries=2, created_at=created)
    await queue.enqueue(fast)
    await queue.enqueue_many([general])
    assert ran == ["enqueue", "enqueue_one", "enqueue"]

    qk = keys.QueueKeys(prefix, "default")
    hashes = [await raw.hgetall(qk.task(task.id)) for task in (fast, general)]
    assert hashes[0].keys() == hashes[1].keys()
    for field in (b"s", b"c", b"pr", b"mr"):
        assert hashes[0][field] == hashes[1][field], field
    for task, stored in zip((fast, general), hashes, strict=True):
        assert await raw.hget(keys.global_key(prefix, keys.INDEX), task.id) == b"default"
        assert await raw.zscore(qk.pending, task.id) == float(stored[b"c"])
        assert await raw.zscore(qk.ready, stored[b"rm"]) == -3
    assert await raw.llen(qk.signal) == 3
    got_fast, got_general = await queue.get_many([fast.id, general.id])
    assert got_fast is not None and got_general is not None
    assert msgspec.structs.replace(got_fast, id=general.id, payload=general.payload) == got_general

    claimed = await queue.claim_ready(["default"], 3, lease=30, worker_id="w")
    assert [task.id for task in claimed][:2] == [fast.id, general.id], "priority 3 first, then FIFO"
