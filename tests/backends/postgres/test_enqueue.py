"""The enqueue INSERT's two shapes (shared values as scalars, per-row values as arrays) and its plain fast path."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest

from omniq.models import TaskError, TaskStatus
from omniq.testing import connected, make_task, now_ms
from omniq_postgres.schema import DUE_INDEX
from omniq_postgres.sql import uniform_mask

pytestmark = [pytest.mark.anyio, pytest.mark.servers]


def _same(stored, task) -> None:
    assert stored is not None
    for field in task.__struct_fields__:
        if field != "updated_at":
            assert getattr(stored, field) == getattr(task, field), field


def test_uniform_mask_sends_shared_columns_as_scalars():
    assert uniform_mask([["a", "b"], [1, 1], [None, None], [2.0, 3.0]], vary_first=True) == (True, False, False, True)
    assert uniform_mask([["a", "a"], [1, 1]], vary_first=True) == (True, False)  # the row source stays an array
    assert uniform_mask([["a"], [1]], vary_first=True) == (False, False)  # one row: all scalars


async def test_a_batch_mixing_shared_and_per_task_values_round_trips(make_queue):
    error = TaskError(type="ValueError", message="boom", traceback="tb", attempt=1)
    shared: dict[str, Any] = {
        "func": "app:send",
        "queue": "mail",
        "max_retries": 2,
        "result_ttl": 30.0,
        "payload": b"\x00same",
    }
    tasks = [
        make_task(**shared),
        make_task(**shared),
        make_task(**shared, priority=5, expires_at=now_ms(7200), timeout=1.5),
        make_task(**shared, interval=60.0, paused=True, depends_on=("a" * 32,), error=error, attempts=2),
        make_task("app:other", queue="mail", cron="*/5 * * * *", eta=now_ms(300), payload=b"\xff\xfe"),
    ]
    async with connected(make_queue) as (queue,):
        assert await queue.enqueue_many(tasks) == [t.id for t in tasks]
        for stored, task in zip(await queue.get_many([t.id for t in tasks]), tasks, strict=True):
            _same(stored, task)
        # The same batch shape but every option shared: only ids and times differ.
        alike = [make_task(**shared) for _ in range(50)]
        assert await queue.enqueue_many(alike) == [t.id for t in alike]
        for stored, task in zip(await queue.get_many([t.id for t in alike]), alike, strict=True):
            _same(stored, task)
        claimed = await queue.claim_ready(["mail"], 100, lease=60, worker_id="w")
        # Priority first, then ready time and enqueue order; the paused and the scheduled ones wait.
        assert [t.id for t in claimed] == [tasks[2].id, tasks[0].id, tasks[1].id] + [t.id for t in alike]


async def test_a_taken_id_falls_back_to_skipping_without_losing_the_rest(make_queue):
    async with connected(make_queue) as (queue,):
        first = make_task()
        await queue.enqueue(first)
        batch = [make_task(), first, make_task()]
        assert await queue.enqueue_many(batch) == [t.id for t in batch]
        assert await queue.count(status=TaskStatus.PENDING) == 3
        twice = make_task()
        assert await queue.enqueue_many([twice, twice]) == [twice.id, twice.id]  # a repeat within one batch
        assert await queue.count() == 4


async def test_a_taken_id_inside_the_callers_transaction_does_not_abort_it(make_queue, postgres_url):
    async with connected(make_queue) as (queue,):
        existing = make_task()
        await queue.enqueue(existing)
        conn = await asyncpg.connect(postgres_url)
        try:
            async with conn.transaction():
                fresh = make_task()
                assert await queue.enqueue_in_transaction([existing, fresh], conn) == [existing.id, fresh.id]
                assert await conn.fetchval("SELECT 1") == 1  # the transaction is still usable
            assert await queue.count() == 2
        finally:
            await conn.close()


async def test_the_due_index_is_gone_and_the_next_due_time_spans_priorities(make_queue, admin, schema):
    async with connected(make_queue) as (queue,):
        assert await admin.fetchval("SELECT to_regclass($1)", f'"{schema}".{DUE_INDEX}') is None
        assert await admin.fetchval(queue._sql.next_due, ["default"]) is None
        # The earliest task hides behind a higher priority whose task is due much later.
        await queue.enqueue_many(
            [make_task(priority=9, eta=now_ms(3600)), make_task(priority=0, eta=now_ms(30)), make_task(priority=-2)]
        )
        await queue.enqueue(make_task(queue="other", eta=now_ms(5)))
        due = await admin.fetchval(queue._sql.next_due, ["default"])
        assert due is not None and due <= 0  # the priority -2 task is ready now
        await queue.claim_ready(["default"], 1, lease=60, worker_id="w")
        due = await admin.fetchval(queue._sql.next_due, ["default"])
        assert 20 < due <= 30
        assert 0 < await admin.fetchval(queue._sql.next_due, ["default", "other"]) <= 5


# -- a bulk enqueue's events, written beside the tasks -------------------------------------------------


def _enqueued(tasks):
    from omniq.models import EventType
    from omniq.testing import make_event

    return [make_event(t.id, EventType.ENQUEUED, queue=t.queue, func=t.func) for t in tasks]


async def test_a_plain_batch_writes_its_events_beside_the_tasks(make_queue, make_events):
    tasks = [make_task() for _ in range(50)]
    async with connected(make_queue) as (queue,), connected(make_events) as (events,):
        ids, unwritten = await queue.enqueue_recorded(tasks, _enqueued(tasks), events)
        assert ids == [t.id for t in tasks] and unwritten == []
        assert [e.task_id for e in await events.query()] == [t.id for t in tasks]


async def test_a_failed_enqueue_writes_no_events(make_queue, make_events):
    from omniq.errors import BackendError

    tasks = [make_task(), make_task("bad\x00name")]  # the server rejects the NUL
    async with connected(make_queue) as (queue,), connected(make_events) as (events,):
        with pytest.raises(BackendError):
            await queue.enqueue_recorded(tasks, _enqueued(tasks), events)
        assert await queue.count() == 0
        assert await events.query() == []


async def test_a_failing_event_storage_hands_the_events_back_and_stores_the_tasks(
    make_queue, make_events, admin, schema
):
    tasks = [make_task() for _ in range(3)]
    async with connected(make_queue) as (queue,), connected(make_events) as (events,):
        await admin.execute(f'ALTER TABLE "{schema}".events RENAME TO events_away')
        ids, unwritten = await queue.enqueue_recorded(tasks, _enqueued(tasks), events)
        assert ids == [t.id for t in tasks]
        assert [e.task_id for e in unwritten] == ids
        assert await queue.count(status=TaskStatus.PENDING) == 3


async def test_an_app_bulk_enqueue_has_written_its_events_when_it_returns(postgres_url, schema):
    from omniq import AsyncOmniQ, Settings
    from omniq.constants import EVENT_BATCH_SIZE
    from omniq.models import EventType

    app = AsyncOmniQ(Settings(backend="postgres", url=postgres_url, key_prefix=schema))
    async with app:
        ids = await app.enqueue_many("app:job", [() for _ in range(EVENT_BATCH_SIZE)])
        buffer = app._events
        assert buffer is not None and buffer._pending == [] and buffer._flushing is None  # nothing went through it
        written = await app.event_storage.query(types=[EventType.ENQUEUED], limit=10 * EVENT_BATCH_SIZE)
        assert sorted(e.task_id for e in written) == sorted(ids)
        small = await app.enqueue_many("app:job", [(), ()])  # below a batch: through the buffer as before
        await app.flush_events()
        assert len(await app.event_storage.query(task_id=small[0])) == 1


# -- enqueue order and wake-ups, now that the enqueue statement does both --------------------------------


async def test_enqueue_order_holds_across_seq_blocks_per_row_seqs_and_plain_sql_rows(
    make_queue, admin, schema, monkeypatch
):
    import omniq_postgres.enqueue as module

    at = now_ms(-10)  # one ready_at for all: only enqueue order separates them

    def batch(n, **fields):
        return [make_task(created_at=at, **fields) for _ in range(n)]

    first, big, keyed, last = batch(3), batch(4), batch(1, unique_key="k1") + batch(2), batch(1)
    async with connected(make_queue) as (queue,):
        await queue.enqueue_many(first)
        await admin.execute(
            f"""INSERT INTO "{schema}".tasks (id, func, queue, status, ready_at, created_at)
                VALUES ('plain', 'f', 'default', 'pending', $1, $1)""",
            at,
        )
        monkeypatch.setattr(module, "SEQ_BLOCK", 2)  # these batches exceed a block: one nextval per row
        await queue.enqueue_many(big)
        await queue.enqueue_many(keyed)
        monkeypatch.undo()
        await queue.enqueue_many(last)
        claimed = await queue.claim_ready(["default"], 100, lease=30, worker_id="w")
        expected = [t.id for t in first] + ["plain"] + [t.id for t in big + keyed + last]
        assert [t.id for t in claimed] == expected


async def test_a_batch_spanning_queues_wakes_a_worker_waiting_on_one_of_them(make_queue):
    async with connected(make_queue, 2) as (producer, worker):
        claimed = []

        async def claim():
            claimed.extend(await worker.claim(["b"], 5, lease=60, worker_id="w", wait=30))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim)
                await anyio.sleep(0.3)
                await producer.enqueue_many([make_task(queue="a"), make_task(queue="b"), make_task(queue="a")])
        assert [t.queue for t in claimed] == ["b"]


async def test_events_with_one_timestamp_keep_append_order_across_id_blocks_and_per_row_ids(make_events, monkeypatch):
    import omniq_postgres.event_storage as module
    from omniq.models import EventType
    from omniq.testing import make_event

    at = now_ms()
    batches = [[make_event(type=EventType.ENQUEUED, timestamp=at) for _ in range(n)] for n in (3, 4, 1, 2)]
    async with connected(make_events) as (events,):
        await events.append(batches[0])
        monkeypatch.setattr(module, "SEQ_BLOCK", 2)  # past a block: one nextval per row
        await events.append(batches[1])
        monkeypatch.undo()
        await events.append(batches[2])
        await events.append(batches[3])
        assert [e.task_id for e in await events.query()] == [e.task_id for batch in batches for e in batch]


async def test_an_unreachable_event_storage_hands_the_events_back(make_queue):
    from omniq_postgres import PostgresEventStorage

    tasks = [make_task() for _ in range(3)]
    unreachable = PostgresEventStorage("postgresql://omniq@127.0.0.1:1/omniq")
    async with connected(make_queue) as (queue,):
        with anyio.fail_after(10):
            ids, unwritten = await queue.enqueue_recorded(tasks, _enqueued(tasks), unreachable)
        assert ids == [t.id for t in tasks] and [e.task_id for e in unwritten] == ids
        assert await queue.count() == 3
    await unreachable.close()


async def test_a_fused_bulk_enqueue_still_reaches_enqueue_hooks(postgres_url, schema):
    from omniq import AsyncOmniQ, Settings, hookimpl, plugins
    from omniq.constants import EVENT_BATCH_SIZE

    class Counter:
        seen = 0

        @hookimpl
        def omniq_task_enqueued(self, task):
            Counter.seen += 1

    plugins.register(Counter(), name="test-enqueue-counter")
    try:
        async with AsyncOmniQ(Settings(backend="postgres", url=postgres_url, key_prefix=schema)) as app:
            await app.enqueue_many("app:job", [() for _ in range(EVENT_BATCH_SIZE)])
    finally:
        plugins.get_plugin_manager().unregister(name="test-enqueue-counter")
    assert Counter.seen == EVENT_BATCH_SIZE


async def test_text_columns_packed_into_one_string_round_trip_and_values_that_cannot_be_packed_still_do(make_queue):
    """Per-row text values travel joined by a separator (split by the server) when they split back
    exactly; a value holding the separator, or a NULL among them, sends that column as an array."""
    async with connected(make_queue) as (queue,):
        batches = [
            [make_task(f"app:f{i}", queue=f"q{i % 3}") for i in range(20)],  # func and queue packed
            [make_task(f"app:f{i}", unique_key=f"k{i}") for i in range(5)],  # unique keys packed too
            [make_task("app:\x1fsplit"), make_task("app:plain"), make_task("")],  # the separator inside
            [make_task("app:f", unique_key=None), make_task("app:f", unique_key="only-one")],  # a NULL
        ]
        for tasks in batches:
            assert await queue.enqueue_many(tasks) == [t.id for t in tasks]
            for stored, task in zip(await queue.get_many([t.id for t in tasks]), tasks, strict=True):
                _same(stored, task)
