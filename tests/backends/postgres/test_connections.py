"""Transactional enqueue, LISTEN surviving a killed connection, error translation."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys

import anyio
import asyncpg
import pytest

from omniq.errors import BackendUnavailableError
from omniq.testing import connected, make_result, make_task, wait_until
from omniq_postgres import PostgresEventStorage, PostgresResultStorage, PostgresTaskQueue

pytestmark = [pytest.mark.anyio, pytest.mark.servers]

UNREACHABLE = "postgresql://omniq:s3cr3t-pw@127.0.0.1:1/omniq"


class Rollback(Exception):
    pass


async def test_rolled_back_transaction_enqueues_nothing(make_queue, postgres_url):
    async with connected(make_queue) as (queue,):
        conn = await asyncpg.connect(postgres_url)
        try:
            task = make_task()
            with pytest.raises(Rollback):
                async with conn.transaction():
                    await conn.execute("SELECT 1")  # the caller's own work
                    assert await queue.enqueue_in_transaction([task], conn) == [task.id]
                    assert await queue.enqueue_in_transaction([make_task()], conn)
                    raise Rollback
            assert await queue.get(task.id) is None
            assert await queue.count() == 0
        finally:
            await conn.close()


async def test_committed_transaction_enqueues_and_wakes_only_on_commit(make_queue, postgres_url):
    async with connected(make_queue, 2) as (producer, worker):
        conn = await asyncpg.connect(postgres_url)
        try:
            task = make_task(queue="tx")
            claimed = []

            async def claim():
                claimed.extend(await worker.claim(["tx"], 1, lease=60, worker_id="w", wait=30))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(claim)
                    async with conn.transaction():
                        await producer.enqueue_in_transaction([task], conn)
                        await anyio.sleep(0.5)
                        assert await producer.get(task.id) is None  # invisible until commit
                        assert claimed == []
            assert [t.id for t in claimed] == [task.id]
        finally:
            await conn.close()


async def test_task_listener_survives_pg_terminate_backend(make_queue, admin):
    async with connected(make_queue, 2) as (worker, producer):
        await worker.wait_for_work(["kill"], 0.01)  # starts the listener
        pid = worker._wakeups.listener.backend_pid()
        assert pid is not None
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def gone():
            return not worker._wakeups.listener.connected

        await wait_until(gone)
        task = make_task(queue="kill")
        claimed = []

        async def claim():
            # wait=30 with a 10 s limit: only a NOTIFY on a fresh LISTEN can deliver in time.
            claimed.extend(await worker.claim(["kill"], 1, lease=60, worker_id="w", wait=30))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim)
                await anyio.sleep(0.5)
                await producer.enqueue(task)
        assert [t.id for t in claimed] == [task.id]
        assert worker._wakeups.listener.backend_pid() not in (None, pid)


async def test_result_listener_survives_pg_terminate_backend(make_results, admin):
    async with connected(make_results, 2) as (waiter, writer):
        assert await waiter.wait("0" * 32, 0.01) is None  # starts the listener
        pid = waiter._listener.backend_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        result = make_result()
        got = []

        async def wait():
            got.append(await waiter.wait(result.task_id, 60))

        with anyio.fail_after(9):  # under the 10 s safety re-read: the NOTIFY must do it
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.5)
                await writer.set(result)
        assert got[0] is not None and got[0].task_id == result.task_id
        assert waiter._listener.backend_pid() not in (None, pid)


@pytest.mark.parametrize("cls", [PostgresTaskQueue, PostgresResultStorage, PostgresEventStorage])
async def test_unreachable_server_is_backend_unavailable_without_password(cls):
    component = cls(UNREACHABLE)
    with anyio.fail_after(20):
        with pytest.raises(BackendUnavailableError) as info:
            await component.connect()
    assert "s3cr3t-pw" not in str(info.value)
    assert "127.0.0.1" in str(info.value)
    await component.close()


async def test_operations_on_unreachable_server_raise_backend_unavailable():
    queue = PostgresTaskQueue(UNREACHABLE)
    with anyio.fail_after(20):
        with pytest.raises(BackendUnavailableError) as info:
            await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
    assert "s3cr3t-pw" not in str(info.value)


async def test_wait_for_work_on_unreachable_server_raises_instead_of_spinning():
    queue = PostgresTaskQueue(UNREACHABLE)
    with anyio.fail_after(10), pytest.raises(BackendUnavailableError):
        await queue.wait_for_work(["default"], 0.2)


async def test_killed_idle_pool_connection_is_replaced(make_queue, admin):
    async with connected(lambda: make_queue(min_size=1, max_size=1)) as (queue,):
        await queue.count()
        pool = await queue._connection.client()
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await anyio.sleep(0.2)
        await queue.enqueue(make_task())
        assert await queue.count() == 1


def _child_enqueues_through_inherited_components(queue, task, parent_pid, out):
    async def main():
        await queue.enqueue(task)  # the parent's pool is not used: the child opens its own
        await queue.wait_for_work(["fork"], 0.01)  # and LISTENs on a connection of its own
        pid = queue._wakeups.listener.backend_pid()
        await queue.close()
        return pid not in (None, parent_pid)

    out.send(asyncio.run(main()))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
async def test_a_forked_child_uses_its_own_pool_and_listener_and_leaves_the_parents_open(make_queue):
    async with connected(make_queue) as (queue,):
        await queue.enqueue(make_task(queue="parent"))  # the parent holds its enqueue connection
        await queue.wait_for_work(["fork"], 0.01)  # starts the parent's listener
        parent_pid = queue._wakeups.listener.backend_pid()
        task = make_task(queue="fork")
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_child_enqueues_through_inherited_components, args=(queue, task, parent_pid, sender)
        )
        child.start()
        assert await anyio.to_thread.run_sync(receiver.poll, 30)
        assert receiver.recv() is True
        await anyio.to_thread.run_sync(child.join, 30)
        assert child.exitcode == 0
        assert queue._wakeups.listener.backend_pid() == parent_pid  # the child closed only its own
        claimed = await queue.claim_ready(["fork"], 5, lease=30, worker_id="w")
        assert [t.id for t in claimed] == [task.id]
        await queue.enqueue(make_task(queue="parent"))  # the parent's enqueue connection still works
        assert await queue.count() == 3


def _enqueue_connection_pid(queue: PostgresTaskQueue) -> int:
    conn = queue._held._conn
    assert conn is not None, "no enqueue connection is held"
    pid: int = conn.get_server_pid()
    return pid


async def test_the_enqueue_connection_killed_between_calls_is_replaced(make_queue, admin):
    async with connected(lambda: make_queue(min_size=1, max_size=4)) as (queue,):
        await queue.enqueue(make_task())
        pid = _enqueue_connection_pid(queue)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await anyio.sleep(0.2)
        await queue.enqueue(make_task())
        assert _enqueue_connection_pid(queue) != pid
        assert await queue.count() == 2


async def test_an_enqueue_cancelled_in_its_statement_gives_its_connection_back(make_queue, admin):
    async with connected(lambda: make_queue(min_size=1, max_size=2)) as (queue,):
        await queue.enqueue(make_task())
        async with admin.transaction():
            await admin.execute(f"LOCK TABLE {queue.names.tasks} IN ACCESS EXCLUSIVE MODE")
            with anyio.move_on_after(0.5) as scope:
                await queue.enqueue(make_task())  # waits on the lock until cancelled
            assert scope.cancelled_caught
            assert queue._held._conn is None  # handed back to the pool, which cancels the statement
        await queue.enqueue(make_task())
        assert await queue.count() == 2


async def test_enqueues_at_once_and_a_pool_of_one_all_land(make_queue):
    async with connected(lambda: make_queue(min_size=1, max_size=2)) as (queue,):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(queue.enqueue, make_task())
        assert await queue.count() == 20
    async with connected(lambda: make_queue(min_size=1, max_size=1)) as (single,):
        await single.enqueue(make_task(queue="one"))
        claimed = await single.claim_ready(["one"], 5, lease=30, worker_id="w")
        assert len(claimed) == 1
