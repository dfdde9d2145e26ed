"""The database under the components: aiosqlite, group commit, small writes inline, checkpoints, forks."""

from __future__ import annotations

import os
import sqlite3
import threading

import aiosqlite
import anyio
import pytest

from omniq.models import Task
from omniq.testing import ForkedChild
from omniq_sqlite import SQLiteResultStorage, SQLiteTaskQueue
from tests.backends.sqlite.locks import hold_write_lock


@pytest.mark.anyio
async def test_group_commit_isolates_a_failing_write(db_path):
    # Writes queued behind a busy database thread share one transaction; one that fails
    # must roll back alone while the others commit (and the queue stays usable).
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        db = await q._connection.client()
        await db.write(lambda conn: conn.execute("CREATE TABLE probe (n INTEGER PRIMARY KEY)"))
        blocker = hold_write_lock(db_path, 0.5)  # the writes below queue up behind the lock

        def insert(conn, n):
            conn.execute("INSERT INTO probe (n) VALUES (?)", (n,))
            if n == 3:
                raise ValueError("job 3 fails after its insert")
            return n

        results: dict[int, object] = {}

        async def write(n: int) -> None:
            try:
                results[n] = await db.write(insert, n)
            except ValueError as exc:
                results[n] = exc

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(write, n)
        blocker.join(10)
        assert isinstance(results.pop(3), ValueError)
        assert results == {n: n for n in range(8) if n != 3}
        rows = await db.read(lambda conn: [r[0] for r in conn.execute("SELECT n FROM probe ORDER BY n")])
        assert rows == [0, 1, 2, 4, 5, 6, 7]
        task_id = await q.enqueue(Task(id="after-the-group", func="f"))
        assert (await q.get(task_id)) is not None


# -- small writes on the caller's thread (Database.write_small) ------------------------------------


@pytest.mark.anyio
async def test_single_enqueue_runs_inline_and_is_committed_when_it_returns(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        db = await q._connection.client()
        assert db.inline  # WAL + synchronous=NORMAL: small writes may skip the hop
        threads: list[int] = []
        original = db._try_inline

        def spy(fn, args):
            result = original(fn, args)
            threads.append(threading.get_ident())
            return result

        db._try_inline = spy  # type: ignore[method-assign]
        for n in range(20):
            assert await q.enqueue(Task(id=f"t{n}", func="noop")) == f"t{n}"
            # A returned enqueue is committed: a foreign connection (another process) sees it at once.
            foreign = sqlite3.connect(db_path)
            try:
                assert foreign.execute("SELECT count(*) FROM omniq_tasks").fetchone()[0] == n + 1
            finally:
                foreign.close()
        assert threads and set(threads) == {threading.get_ident()}
        assert [t.id for t in await q.claim_ready(["default"], 50, lease=30, worker_id="w")] == [
            f"t{n}" for n in range(20)
        ]


@pytest.mark.anyio
async def test_inline_enqueue_never_blocks_the_loop_on_another_process_lock(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}", busy_timeout=20) as q:
        await q.enqueue(Task(id="warm", func="noop"))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            holder = hold_write_lock(db_path, 0.5)
            try:
                assert await q.enqueue(Task(id="t1", func="noop")) == "t1"  # waits on the database thread
            finally:
                holder.join()
            tg.cancel_scope.cancel()
        assert ticks >= 10, f"the event loop ran only {ticks} ticks while the lock was held"
        assert (await q.get("t1")) is not None


@pytest.mark.anyio
async def test_sequential_enqueues_yield_to_the_event_loop(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        ran = 0

        async def other() -> None:
            nonlocal ran
            while True:
                await anyio.lowlevel.checkpoint()
                ran += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            for n in range(50):
                await q.enqueue(Task(id=f"t{n}", func="noop"))
            tg.cancel_scope.cancel()
        assert ran >= 25, f"another task ran {ran} times during 50 enqueues"


@pytest.mark.anyio
async def test_synchronous_full_keeps_every_write_on_the_database_thread(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}", synchronous="FULL") as q:
        db = await q._connection.client()
        assert not db.inline  # an fsync per commit must not run on the event loop
        assert await q.enqueue(Task(id="t1", func="noop")) == "t1"
        assert (await q.get("t1")) is not None


@pytest.mark.anyio
async def test_inline_enqueue_with_unique_key_returns_the_live_task(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        first = await q.enqueue(Task(id="a", func="noop", unique_key="k"))
        second = await q.enqueue(Task(id="b", func="noop", unique_key="k"))
        assert (first, second) == ("a", "a")
        assert await q.count() == 1


@pytest.mark.anyio
async def test_a_forked_child_opens_its_own_database(db_path):
    """A process-pool child inherits connected components: it must not use the parent's
    database thread (absent there) nor its SQLite connections (never valid across a fork)."""

    def child(queue: SQLiteTaskQueue, parents: object) -> bool:
        async def enqueue() -> bool:
            await queue.enqueue(Task(id="from-child", func="f", payload=b""))
            own = queue._connection.current is not parents
            await queue.close()
            return own

        return anyio.run(enqueue)

    async with SQLiteTaskQueue(db_path) as queue:
        await queue.enqueue(Task(id="from-parent", func="f", payload=b""))
        assert await ForkedChild(child, queue, queue._connection.current).outcome() == (True, 0)
        assert {t.id for t in await queue.list()} == {"from-parent", "from-child"}
        await queue.enqueue(Task(id="after", func="f", payload=b""))  # the parent's database still works
        assert await queue.count() == 3


@pytest.mark.anyio
async def test_a_fork_waits_until_no_database_thread_is_inside_sqlite(db_path):
    """A child forked while another thread is inside SQLite inherits SQLite's process-wide
    mutexes held, and hangs on its first allocation. The fork waits for the job to end."""
    started, release = threading.Event(), threading.Event()
    job_done = False

    def long_job(conn: sqlite3.Connection) -> None:
        nonlocal job_done
        started.set()
        release.wait(30)
        conn.execute("SELECT 1").fetchone()
        job_done = True

    async with SQLiteTaskQueue(db_path) as queue:
        db = await queue._connection.client()
        async with anyio.create_task_group() as tg:
            tg.start_soon(db.read, long_job)
            assert await anyio.to_thread.run_sync(started.wait, 30)
            threading.Timer(0.3, release.set).start()  # ends the job; the fork below must wait for it
            # the child returns its copy of job_done: the parent's memory at the instant of the fork
            forked = ForkedChild(lambda: job_done)
        assert await forked.outcome() == (True, 0)
        await queue.enqueue(Task(id="after", func="f", payload=b""))  # the parent's locks were released
        assert await queue.count() == 1


# -- aiosqlite and checkpoints ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_aiosqlite_connection_per_file_and_process_on_a_daemon_thread(db_path):
    async with SQLiteTaskQueue(db_path) as q, SQLiteResultStorage(db_path) as r:
        db = await q._connection.client()
        assert db is await r._connection.client()
        assert isinstance(db._conn, aiosqlite.Connection)
        assert db._conn._thread.daemon  # a component left open never keeps the process alive
        thread = db._conn._thread
    thread.join(10)
    assert not thread.is_alive()  # the last close stops it


@pytest.mark.anyio
async def test_checkpoints_run_on_their_own_thread_while_writes_come(db_path):
    async with SQLiteTaskQueue(db_path) as q:
        db = await q._connection.client()
        assert db._checkpointer is not None
        threads: set[int] = set()
        original = db._checkpoint_loop

        def spy() -> None:
            threads.add(threading.get_ident())
            original()

        db._checkpoint_loop = spy  # type: ignore[method-assign]
        await q.enqueue_many([Task(id=f"t{n}", func="noop") for n in range(100)])  # on the writer thread
        await q.enqueue(Task(id="small", func="noop"))  # inline, on this thread
        with anyio.fail_after(10):
            while not threads or db._checkpointing:
                await anyio.sleep(0.01)
        assert threads == {db._checkpointer._thread.ident}
        assert threading.get_ident() not in threads and db._conn._thread.ident not in threads


@pytest.mark.anyio
async def test_a_write_after_close_is_a_backend_error_not_a_hang(db_path):
    from omniq.errors import BackendError

    queue = SQLiteTaskQueue(db_path)
    db = await queue._connection.client()
    await queue.close()
    with anyio.fail_after(10), pytest.raises(BackendError):
        await db.write(lambda conn: None)


@pytest.mark.anyio
async def test_writers_wait_their_turn_in_the_kernel_not_in_busy_sleeps(db_path):
    # Another process's turn (its flock on <db>-writers: another open file description locks the same
    # way) holds every write of ours, however short our busy timeout: they run once it ends, and the
    # event loop keeps running meanwhile (an inline write hands its job to the database thread).
    from omniq_sqlite._writers import WritersLock

    async with SQLiteTaskQueue(f"sqlite:///{db_path}", busy_timeout=0.05) as q:
        await q.enqueue(Task(id="warm", func="noop"))
        other = WritersLock(str(db_path))
        assert other.acquire(blocking=False)
        try:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await anyio.sleep(0.01)
                    ticks += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                enqueued: list[str] = []

                async def enqueue() -> None:
                    enqueued.append(await q.enqueue(Task(id="t1", func="noop")))

                tg.start_soon(enqueue)
                await anyio.sleep(0.3)
                assert enqueued == []  # still waiting for the turn, past its 50 ms busy timeout
                assert ticks >= 10, f"the event loop ran only {ticks} ticks while waiting"
                other.release()
                with anyio.fail_after(10):
                    while not enqueued:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            assert enqueued == ["t1"]
            assert (await q.get("t1")) is not None
            assert other.acquire(blocking=False)  # ours released its turn after the commit
        finally:
            other.release()
            other.close()


@pytest.mark.anyio
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open descriptors in /proc")
async def test_closing_a_database_closes_its_files(db_path):
    # The writers' lock file among them: a process that opens and closes databases keeps no descriptor.
    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        await q.enqueue(Task(id="warm", func="noop"))
    before = descriptors()
    for i in range(5):
        async with SQLiteTaskQueue(f"sqlite:///{db_path.parent}/other{i}.db") as q:
            await q.enqueue(Task(id=f"t{i}", func="noop"))
        assert (db_path.parent / f"other{i}.db-writers").exists()
    assert descriptors() <= before
