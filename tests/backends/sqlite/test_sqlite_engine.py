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
from omniq_sqlite import SQLiteEventStorage, SQLiteResultStorage, SQLiteTaskQueue
from omniq_sqlite._wake import wake_dir
from omniq_sqlite.connection import _switch_to_wal, resolve_path
from omniq_sqlite.schema import LATEST_VERSION, SCHEMA_VERSION, migrate
from tests.backends.sqlite.locks import hold_write_lock


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


def test_connections_switching_a_new_file_to_wal_together_all_succeed(tmp_path):
    # SQLite fails one of two connections racing for the switch's exclusive lock at once, busy
    # timeout or not (about 1 round in 15 of four threads): the switch retries until its timeout.
    for round_ in range(100):
        path = str(tmp_path / f"new-{round_}.db")
        start = threading.Barrier(4)
        modes: list[object] = []

        def switch(path: str = path, start: threading.Barrier = start, modes: list[object] = modes) -> None:
            with closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False)) as conn:
                conn.execute("PRAGMA busy_timeout = 10000")
                start.wait()
                try:
                    modes.append(_switch_to_wal(conn, 10.0, path))
                except (sqlite3.Error, BackendError) as exc:
                    modes.append(exc)

        threads = [threading.Thread(target=switch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert modes == ["wal"] * 4, f"round {round_}: {modes}"


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
