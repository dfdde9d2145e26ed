"""A worker never loops on one task: whatever goes wrong around a task ends it FAILED after one attempt.

Each test runs a real burst worker on the memory backend (which stores what it
is given, unchecked: the records here are what a corrupted store would hand
back) with a deadline: before the fix the burst never ended, releasing and
re-claiming the same task for ever.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import anyio
import msgspec
import pytest

from omniq import AsyncOmniQ, Settings
from omniq.models import EventType, Task, TaskStatus, utcnow

pytestmark = pytest.mark.anyio

#: a burst that has not ended by then is looping.
DEADLINE = 15.0


async def _burst(app: AsyncOmniQ) -> None:
    with anyio.fail_after(DEADLINE):
        await app.worker(burst=True).start()


async def _stored(app: AsyncOmniQ, **fields: Any) -> Task:
    """Store a task of the registered ``f`` with ``fields`` as given, behind the app's checks."""
    task = app._build_task("f", (), {}, app.functions["f"].default_options)
    task = msgspec.structs.replace(task, **fields)
    await app.task_queue.enqueue(task)
    return task


async def _runs(app: AsyncOmniQ, task_id: str) -> int:
    return len(await app.event_storage.query(task_id=task_id, types=[EventType.STARTED]))


async def test_a_naive_expiry_fails_the_task_once(make_app: Any, caplog: Any) -> None:
    """The TTL check raised TypeError and the task was released and re-claimed for ever."""
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        task = await _stored(app, expires_at=datetime.now() + timedelta(hours=1))  # naive: no record may hold one
        good = await app.enqueue("f")
        with caplog.at_level(logging.WARNING, logger="omniq"):
            await _burst(app)
        stored = await app.get_task(task.id)
        assert stored is not None and stored.status is TaskStatus.FAILED and stored.attempts == 1
        assert stored.error is not None and stored.error.type == "TypeError" and not stored.error.retryable
        result = await app.get_result(task.id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert await _runs(app, task.id) == 1
        assert (await app.get_result(good)).status is TaskStatus.SUCCEEDED
        [record] = [r for r in caplog.records if task.id in r.getMessage()]
        assert record.levelno == logging.ERROR
        assert all(part in record.getMessage() for part in ("f", "queue default", "attempt 1"))


async def test_a_result_ttl_that_overflows_runs_the_task_once(make_app: Any) -> None:
    """OMNIQ_RESULT_TTL=100000000000000 made every run raise OverflowError and re-run for ever."""
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        task = await _stored(app, result_ttl=1e14)
        await _burst(app)
        result = await app.get_result(task.id)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.attempts == 1
        assert result.expires_at is None  # the ttl cannot be added: the result is kept
        assert await _runs(app, task.id) == 1


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
async def test_a_non_finite_result_ttl_runs_the_task_once(make_app: Any, value: float) -> None:
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        task = await _stored(app, result_ttl=value)
        await _burst(app)
        result = await app.get_result(task.id)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.attempts == 1
        assert await _runs(app, task.id) == 1


async def test_a_schedule_whose_next_tick_overflows_fails_once(make_app: Any) -> None:
    """Building the outcome itself raises (the next tick is past year 9999): the failure is still recorded."""
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        task = await _stored(app, interval=1e14, eta=utcnow())
        await _burst(app)
        stored = await app.get_task(task.id)
        assert stored is not None and stored.status is TaskStatus.FAILED and stored.attempts == 1
        assert stored.error is not None and stored.error.type == "OverflowError"
        result = await app.get_result(task.id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert await _runs(app, task.id) == 1


class _Odd(Exception):
    """Not one of the errors argument decoding is expected to raise."""


async def test_any_exception_from_decoding_arguments_fails_once(make_app: Any, monkeypatch: Any) -> None:
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        bad = await _stored(app, max_retries=5)
        decode = app.decode_args

        def decode_args(task: Task) -> Any:
            if task.id == bad.id:
                raise _Odd("a decoder that raises something unexpected")
            return decode(task)

        monkeypatch.setattr(app, "decode_args", decode_args)
        good = await app.enqueue("f")
        await _burst(app)
        stored = await app.get_task(bad.id)
        assert stored is not None and stored.status is TaskStatus.FAILED and stored.attempts == 1
        assert stored.error is not None and stored.error.type == "_Odd"
        assert (await app.get_result(good)).status is TaskStatus.SUCCEEDED


async def test_a_corrupted_recurring_record_ends_its_schedule(tmp_path: Any) -> None:
    """A record corrupted in storage (SQLite here) fails once; its schedule ends instead of failing at every tick."""
    from tests.core.conftest import FAST

    async with AsyncOmniQ(Settings(backend="sqlite", base_dir=tmp_path, **FAST)) as app:
        app.register(lambda: 1, name="f")
        task_id = await app.enqueue("f", interval=60)
        with closing(sqlite3.connect(app.task_queue.path, isolation_level=None)) as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE omniq_tasks SET result_ttl = ?, eta = NULL WHERE id = ?", (float("inf"), task_id))
        await _burst(app)
        with closing(sqlite3.connect(app.task_queue.path, isolation_level=None)) as conn:  # type: ignore[attr-defined]
            status, attempts = conn.execute(
                "SELECT status, attempts FROM omniq_tasks WHERE id = ?", (task_id,)
            ).fetchone()
        assert (status, attempts) == ("failed", 1)
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert result.error is not None and result.error.type == "CorruptRecord"
