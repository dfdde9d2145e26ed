"""SQLite specifics: busy handling, URLs and settings, migrations, error translation, plugin wiring."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import closing

import anyio
import pytest

from omniq.base import CorruptTask
from omniq.config import Settings
from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError
from omniq.models import Outcome, OutcomeKind, Task, TaskResult, TaskStatus
from omniq.plugins import installed_backends, resolve_backend
from omniq.testing import ForkedChild
from omniq_sqlite import SQLiteEventStorage, SQLiteResultStorage, SQLiteTaskQueue
from omniq_sqlite._wake import wake_dir
from omniq_sqlite.connection import resolve_path
from omniq_sqlite.schema import LATEST_VERSION, SCHEMA_VERSION, migrate


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "omniq.db"


def hold_write_lock(path, seconds: float) -> threading.Thread:
    """Hold SQLite's write lock from a foreign connection (like another process would)."""
    locked = threading.Event()

    def run() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("CREATE TABLE IF NOT EXISTS other (x)")
        locked.set()
        threading.Event().wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert locked.wait(10)
    return thread


@pytest.mark.anyio
async def test_busy_database_waits_instead_of_raising_locked(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}", busy_timeout=20) as q:
        holder = hold_write_lock(db_path, 1.0)
        try:
            task_id = await q.enqueue(Task(id="t1", func="noop"))
            claimed = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
        finally:
            holder.join()
    assert task_id == "t1"
    assert [t.id for t in claimed] == ["t1"]


@pytest.mark.anyio
async def test_lock_held_past_busy_timeout_is_backend_unavailable(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}", busy_timeout=0.3) as q:
        holder = hold_write_lock(db_path, 2.0)
        try:
            with pytest.raises(BackendUnavailableError) as info:
                await q.enqueue(Task(id="t1", func="noop"))
        finally:
            holder.join()
        assert "database is locked" not in str(info.value)
        assert await q.enqueue(Task(id="t1", func="noop")) == "t1"  # usable again once the lock is gone


@pytest.mark.anyio
async def test_reads_proceed_while_another_process_writes(db_path):
    async with SQLiteTaskQueue(f"sqlite:///{db_path}", busy_timeout=0.3) as q:
        await q.enqueue(Task(id="t1", func="noop"))
        holder = hold_write_lock(db_path, 1.0)
        try:
            assert (await q.get("t1")) is not None  # WAL: readers never wait for the writer
            assert await q.count() == 1
        finally:
            holder.join()


def test_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("sqlite:///relative.db") == str(tmp_path / "relative.db")
    assert resolve_path("sqlite:////abs/path.db") == "/abs/path.db"
    assert resolve_path("sqlite:///sub%20dir/x.db?mode=ignored") == str(tmp_path / "sub dir" / "x.db")
    assert resolve_path("plain/file.db") == str(tmp_path / "plain" / "file.db")
    assert resolve_path(None, tmp_path / "base") == str(tmp_path / "base" / "omniq.db")
    for bad in ("postgres://x/y", "sqlite://relative.db", "sqlite:///:memory:", "sqlite:///"):
        with pytest.raises(ConfigurationError):
            resolve_path(bad)


@pytest.mark.anyio
async def test_from_settings_defaults_to_base_dir_file_and_creates_directory(tmp_path):
    settings = Settings(backend="sqlite", base_dir=tmp_path / "state" / "nested")
    queue = SQLiteTaskQueue.from_settings(settings.component("task_queue"), settings)
    results = SQLiteResultStorage.from_settings(settings.component("result_storage"), settings)
    events = SQLiteEventStorage.from_settings(settings.component("event_storage"), settings)
    assert queue.path == results.path == events.path == str(tmp_path / "state" / "nested" / "omniq.db")
    async with queue, results, events:
        assert queue.can_fuse_results(results)
        await queue.enqueue(Task(id="t", func="noop"))
    assert (tmp_path / "state" / "nested" / "omniq.db").exists()


@pytest.mark.anyio
async def test_from_settings_url_and_options(tmp_path):
    settings = Settings(
        backend="sqlite",
        url=f"sqlite:///{tmp_path / 'a.db'}",
        result_storage_url=f"sqlite:///{tmp_path / 'b.db'}",
        task_queue_options={"busy_timeout": 5, "synchronous": "full"},
    )
    queue = SQLiteTaskQueue.from_settings(settings.component("task_queue"), settings)
    results = SQLiteResultStorage.from_settings(settings.component("result_storage"), settings)
    assert queue.path == str(tmp_path / "a.db") and queue.options.busy_timeout == 5
    assert results.path == str(tmp_path / "b.db")
    assert not queue.can_fuse_results(results)  # different files: the core writes results separately


@pytest.mark.anyio
async def test_unfused_finish_leaves_result_storage_alone(tmp_path):
    async with (
        SQLiteTaskQueue(f"sqlite:///{tmp_path / 'a.db'}") as q,
        SQLiteResultStorage(f"sqlite:///{tmp_path / 'b.db'}") as r,
    ):
        await q.enqueue(Task(id="t", func="noop"))
        (task,) = await q.claim_ready(["default"], 1, lease=30, worker_id="w")
        result = TaskResult(task_id="t", status=TaskStatus.SUCCEEDED)
        outcome = Outcome(task_id="t", lease_token=task.lease_token or "", kind=OutcomeKind.SUCCEEDED, result=result)
        assert await q.finish([outcome], results=r) == [True]
        assert await r.get("t") is None


def test_migrations_are_idempotent(db_path):
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn) == LATEST_VERSION
        assert migrate(conn) == 0
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA_VERSION}").fetchone()[0] == LATEST_VERSION
    finally:
        conn.close()


@pytest.mark.anyio
async def test_newer_schema_is_refused(db_path):
    conn = sqlite3.connect(db_path, isolation_level=None)
    migrate(conn)
    conn.execute(f"INSERT INTO {SCHEMA_VERSION} (version, applied_at) VALUES (?, 0)", (LATEST_VERSION + 1,))
    conn.close()
    with pytest.raises(BackendError, match="newer"):
        await SQLiteTaskQueue(f"sqlite:///{db_path}").connect()


@pytest.mark.anyio
async def test_unopenable_path_is_backend_unavailable(tmp_path):
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(BackendUnavailableError):
        await SQLiteTaskQueue(f"sqlite:///{tmp_path / 'a-directory.db'}").connect()


@pytest.mark.anyio
async def test_not_a_database_is_a_backend_error(db_path):
    db_path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(BackendError):
        await SQLiteTaskQueue(f"sqlite:///{db_path}").connect()


@pytest.mark.anyio
async def test_components_share_one_connection_and_close_cleanly(db_path):
    url = f"sqlite:///{db_path}"
    q, r = SQLiteTaskQueue(url), SQLiteResultStorage(url)
    async with q, r:
        assert q._connection.current is r._connection.current
        await q.wait_for_work(["default"], 0.01)  # binds a hint socket
        assert os.listdir(wake_dir(str(db_path)))
    assert not q._connection.connected and not r._connection.connected
    assert os.listdir(wake_dir(str(db_path))) == []  # our sockets are removed on close
    async with SQLiteTaskQueue(url) as again:  # a fresh connection after the last close
        assert await again.count() == 0


@pytest.mark.anyio
async def test_wait_for_work_wakes_at_the_next_eta(db_path):
    from datetime import timedelta

    from omniq.models import utcnow

    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as q:
        await q.enqueue(Task(id="later", func="noop", eta=utcnow() + timedelta(seconds=0.3)))
        with anyio.fail_after(10):  # the caller's timeout is 30 s; the due eta ends the wait
            await q.wait_for_work(["default"], 30.0)
        assert [t.id for t in await q.claim_ready(["default"], 5, lease=30, worker_id="w")] == ["later"]


def test_plugin_registers_all_three_components():
    names = {(component, spec.name) for component, spec in installed_backends()}
    assert {("task_queue", "sqlite"), ("result_storage", "sqlite"), ("event_storage", "sqlite")} <= names
    assert resolve_backend("task_queue", "sqlite") is SQLiteTaskQueue
    assert resolve_backend("result_storage", "sqlite") is SQLiteResultStorage
    assert resolve_backend("event_storage", "sqlite") is SQLiteEventStorage


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


@pytest.mark.anyio
async def test_a_claim_with_a_corrupted_eta_column_hands_it_back_for_failure(db_path):
    """Text in the REAL eta column once made sorting the claimed rows raise TypeError: the whole batch lost."""
    async with SQLiteTaskQueue(f"sqlite:///{db_path}") as queue:
        bad, good = Task(id="b" * 32, func="f"), Task(id="g" * 32, func="f")
        await queue.enqueue_many([bad, good])
        with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
            conn.execute("UPDATE omniq_tasks SET eta = 'not a time' WHERE id = ?", (bad.id,))
        claimed = {t.id: t for t in await queue.claim_ready(["default"], 10, lease=30, worker_id="w")}
        assert set(claimed) == {bad.id, good.id}
        assert isinstance(claimed[bad.id], CorruptTask) and type(claimed[good.id]) is Task
