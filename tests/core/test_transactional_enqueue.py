"""``enqueue(..., connection=conn)`` through the app (issue 18, item 5): the caller's transaction decides.

The engine side (commit, rollback, unique keys, foreign connections) is in the
conformance suite (:mod:`omniq.testing.task_queue.transactions`); these tests
go through the app: a real worker runs a committed task, the ENQUEUED event
is written in the caller's transaction (so a rollback leaves none), the sync
façade, and engines that cannot refuse with nothing stored.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from omniq import AsyncOmniQ, ConfigurationError, EventType, NotSupportedError, OmniQ, TaskStatus

pytestmark = pytest.mark.anyio


def add(a: int, b: int) -> int:
    return a + b


def _sqlite_app(tmp_path: Path) -> tuple[AsyncOmniQ, str]:
    path = str(tmp_path / "app.db")
    return AsyncOmniQ(backend="sqlite", url=f"sqlite:///{path}"), path


async def _events(app: AsyncOmniQ, task_id: str) -> list[EventType]:
    return [event.type for event in await app.get_events(task_id)]


async def test_sqlite_commit_runs_the_task_and_rollback_leaves_no_trace(tmp_path: Path) -> None:
    app, path = _sqlite_app(tmp_path)
    async with app:
        task = app.task(add)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
            conn.execute("INSERT INTO orders (total) VALUES (5)")
            kept = await app.enqueue(task, 2, 3, connection=conn)
            conn.commit()
            conn.execute("INSERT INTO orders (total) VALUES (7)")
            dropped = await app.enqueue(task, 3, 4, connection=conn)
            many = await app.enqueue_many(task, [(1, 1), (2, 2)], connection=conn)
            conn.rollback()
            assert conn.execute("SELECT total FROM orders").fetchall() == [(5,)]
        for gone in (dropped, *many):
            assert await app.get_task(gone) is None
            assert await _events(app, gone) == []
        with anyio.fail_after(60):
            await app.run_worker(concurrency=2, burst=True)
        result = await app.get_result(kept)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 5
        assert EventType.ENQUEUED in await _events(app, kept)
        assert await app.count_tasks() == 1


def test_sync_app_takes_a_connection_shared_across_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "sync.db")
    with OmniQ(backend="sqlite", url=f"sqlite:///{path}") as app:
        task = app.task(add)
        with closing(sqlite3.connect(path, check_same_thread=False)) as conn:
            kept = app.enqueue(task, 1, 2, connection=conn)
            conn.commit()
            dropped = app.enqueue(task, 2, 2, connection=conn)
            conn.rollback()
        assert app.get_task(kept) is not None and app.get_task(dropped) is None
        # a connection bound to this thread cannot be used on the app's loop thread: a clear error, nothing stored
        with closing(sqlite3.connect(path)) as bound:
            with pytest.raises(ConfigurationError, match="check_same_thread|thread"):
                app.enqueue(task, 3, 3, connection=bound)
        assert app.count_tasks() == 1


async def test_a_connection_to_another_file_is_refused(tmp_path: Path) -> None:
    app, _ = _sqlite_app(tmp_path)
    async with app:
        with closing(sqlite3.connect(str(tmp_path / "other.db"))) as other:
            with pytest.raises(ConfigurationError, match="not open on this task queue's database"):
                await app.enqueue(add, 1, 2, connection=other)
        assert await app.count_tasks() == 0


async def test_an_engine_without_the_capability_refuses() -> None:
    async with AsyncOmniQ(backend="memory", url="tx-refused") as app:
        with pytest.raises(NotSupportedError, match="caller's transaction"):
            await app.enqueue(add, 1, 2, connection=object())
        assert await app.count_tasks() == 0


@pytest.mark.servers
async def test_postgres_commit_and_rollback_through_the_app(postgres_url: str) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    schema = f"omniq_tx_{uuid.uuid4().hex[:12]}"
    try:
        async with AsyncOmniQ(backend="postgres", url=postgres_url, key_prefix=schema) as app:
            task = app.task(add)
            conn = await asyncpg.connect(postgres_url)
            try:
                async with conn.transaction():
                    kept = await app.enqueue(task, 20, 22, connection=conn)
                dropped: list[str] = []
                with pytest.raises(RuntimeError, match="abort"):
                    async with conn.transaction():
                        dropped.append(await app.enqueue(task, 1, 1, connection=conn))
                        dropped.extend(await app.enqueue_many(task, [(2, 2)], connection=conn))
                        raise RuntimeError("abort")
            finally:
                await conn.close()
            for gone in dropped:
                assert await app.get_task(gone) is None
                assert await _events(app, gone) == []
            assert EventType.ENQUEUED in await _events(app, kept)
            with anyio.fail_after(60):
                await app.run_worker(concurrency=2, burst=True)
            result = await app.get_result(kept)
            assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 42
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_the_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's example, as written there, on the app's own file."""
    monkeypatch.chdir(tmp_path)
    async with AsyncOmniQ(backend="sqlite", url="sqlite:///orders.db") as app:

        @app.task
        def send_receipt(total: int) -> None: ...

        with closing(sqlite3.connect("orders.db")) as setup:
            setup.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")

        with closing(sqlite3.connect("orders.db")) as conn:  # the file the app uses
            conn.execute("INSERT INTO orders (total) VALUES (5)")
            await app.enqueue(send_receipt, 5, connection=conn)
            conn.rollback()  # no order, and no task: nothing runs, no event is left

        assert await app.count_tasks() == 0
        assert await app.list_tasks() == []
