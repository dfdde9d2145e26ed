"""``omniq.current_task()`` inside a task (issue 18, item 3, the context part), in every pool."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import anyio
import pytest

from omniq import AsyncOmniQ, OmniQError, TaskStatus, current_task, report_progress
from omniq.progress import make_progress

pytestmark = pytest.mark.anyio


def _seen() -> dict[str, Any]:
    ctx = current_task()
    return {
        "id": ctx.id,
        "name": ctx.name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "max_retries": ctx.max_retries,
        "retries_left": ctx.retries_left,
        "schedule_id": ctx.schedule_id,
        "has_deadline": ctx.deadline is not None,
        "worker_id": ctx.worker_id,
        "pid": os.getpid(),
    }


@pytest.mark.parametrize("pool", ["async", "thread", "process"])
async def test_a_task_sees_itself_in_every_pool(pool: str) -> None:
    async with AsyncOmniQ(backend="memory", url=f"ctx-{pool}", retry_backoff=0.01) as app:

        @app.task(name="ctx.sync", max_retries=2, queue="mail", timeout=30)
        def sync_view() -> dict[str, Any]:
            seen = _seen()
            if seen["attempt"] == 1:
                raise ConnectionError("first attempt fails")
            return seen

        @app.task(name="ctx.async")
        async def async_view() -> dict[str, Any]:
            return _seen()

        first = await sync_view.enqueue()
        second = await async_view.enqueue()
        with anyio.fail_after(60):
            await app.run_worker(concurrency=2, burst=True, pool=pool, queues=["default", "mail"])
        one, two = await app.get_result(first), await app.get_result(second)
        assert one is not None and one.status is TaskStatus.SUCCEEDED, one
        assert two is not None and two.status is TaskStatus.SUCCEEDED, two
        assert {k: v for k, v in one.result.items() if k not in ("worker_id", "pid")} == {
            "id": first,
            "name": "ctx.sync",
            "queue": "mail",
            "attempt": 2,
            "max_retries": 2,
            "retries_left": 1,
            "schedule_id": None,
            "has_deadline": True,
        }
        assert (two.result["id"], two.result["name"], two.result["has_deadline"]) == (second, "ctx.async", False)
        assert one.result["worker_id"] == two.result["worker_id"] != ""
        assert (one.result["pid"] != os.getpid()) is (pool == "process")


async def test_a_recurring_task_sees_its_schedule() -> None:
    async with AsyncOmniQ(backend="memory", url="ctx-recurring") as app:
        seen: list[str | None] = []

        @app.task
        async def tick() -> None:
            seen.append(current_task().schedule_id)

        schedule_id = await app.enqueue(tick, interval=3600, delay=0)
        with anyio.fail_after(30):
            await app.run_worker(concurrency=1, burst=True)
        assert seen == [schedule_id]


async def test_outside_a_task_it_is_an_error_even_after_an_eager_run() -> None:
    with pytest.raises(OmniQError, match="outside a task"):
        current_task()
    async with AsyncOmniQ(backend="memory", url="ctx-eager", eager=True) as app:

        @app.task
        async def name() -> str:
            return current_task().name

        result = await app.get_result(await name.enqueue())
        assert result is not None and result.result == name.name
    with pytest.raises(OmniQError, match="outside a task"):
        current_task()


async def test_the_readme_example() -> None:
    """README's ``current_task()`` example, with notify_ops recording instead of alerting."""
    import omniq

    alerts: list[str] = []

    def notify_ops(message: str) -> None:
        alerts.append(message)

    async with AsyncOmniQ(backend="memory", url="ctx-readme", retry_backoff=0.01) as app:

        @app.task(max_retries=3)
        def sync_invoices() -> None:
            task = omniq.current_task()
            if task.last_attempt:
                notify_ops(f"{task.name} {task.id}: last try")
            raise ConnectionError("the invoicing service is down")

        task_id = await sync_invoices.enqueue()
        with anyio.fail_after(30):
            await app.run_worker(concurrency=1, burst=True)
        assert alerts == [f"{sync_invoices.name} {task_id}: last try"]


async def test_a_cancelled_thread_task_sees_it_and_stops_cooperatively() -> None:
    started, stopped = threading.Event(), threading.Event()
    async with AsyncOmniQ(backend="memory", url="ctx-cancel-thread", heartbeat_interval=0.1) as app:

        @app.task(name="ctx.long")
        def long_export() -> None:
            task = current_task()
            assert not task.cancelled
            started.set()
            give_up = time.monotonic() + 60  # never reached: the test fails on `stopped` first
            while not task.should_abort() and time.monotonic() < give_up:
                time.sleep(0.02)
            if task.cancelled:
                stopped.set()

        task_id = await long_export.enqueue()
        worker = app.worker(concurrency=1, pool="thread")
        async with anyio.create_task_group() as group:
            group.start_soon(worker.start)
            assert await anyio.to_thread.run_sync(started.wait, 30)
            assert await app.cancel(task_id)
            assert await anyio.to_thread.run_sync(stopped.wait, 30), "the task never saw its cancellation"
            await worker.stop()
        record = await app.get_task(task_id)
        assert record is not None and record.status is TaskStatus.CANCELLED


async def test_a_cancelled_async_task_sees_the_flag_while_it_unwinds() -> None:
    seen: list[bool] = []
    started = anyio.Event()
    async with AsyncOmniQ(backend="memory", url="ctx-cancel-async", heartbeat_interval=0.1) as app:

        @app.task(name="ctx.wait")
        async def wait_forever() -> None:
            task = current_task()
            started.set()
            try:
                await anyio.sleep(60)
            finally:
                seen.append(task.cancelled)

        task_id = await wait_forever.enqueue()
        worker = app.worker(concurrency=1)
        async with anyio.create_task_group() as group:
            group.start_soon(worker.start)
            with anyio.fail_after(30):
                await started.wait()
                assert await app.cancel(task_id)
                while not seen:
                    await anyio.sleep(0.02)
            await worker.stop()
        assert seen == [True]


async def test_progress_in_the_async_pool_on_the_memory_engine() -> None:
    release = anyio.Event()
    async with AsyncOmniQ(backend="memory", url="ctx-progress") as app:

        @app.task(name="ctx.progress")
        async def export(rows: int) -> int:
            for done in range(0, rows + 1, 10):
                report_progress(done, rows, f"{done} rows")  # many reports: the latest is kept
            await release.wait()
            return rows

        task_id = await export.enqueue(50)
        worker = app.worker(concurrency=1)
        async with anyio.create_task_group() as group:
            group.start_soon(worker.start)
            with anyio.fail_after(30):
                while True:
                    task = await app.get_task(task_id)
                    if task is not None and task.progress is not None and task.progress.done == 50:
                        break
                    await anyio.sleep(0.05)
            assert (task.progress.total, task.progress.message, task.progress.fraction) == (50, "50 rows", 1.0)
            release.set()
            result = await app.get_result(task_id, wait=True, timeout=30)
            assert result is not None and result.result == 50
            await worker.stop()
        finished = await app.get_task(task_id)
        assert finished is not None and finished.progress is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("3",), TypeError),
        ((True,), TypeError),
        ((-1,), ValueError),
        ((float("nan"),), ValueError),
        ((1, 0), ValueError),
        ((1, None, 7), TypeError),
    ],
)
def test_bad_progress_is_a_clear_error(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error, match="report_progress"):
        make_progress(*args)


def test_progress_outside_a_task_is_an_error() -> None:
    with pytest.raises(OmniQError, match="outside a task"):
        report_progress(1)


async def test_the_readme_progress_example() -> None:
    import omniq

    written: list[int] = []

    def write_row(row: int) -> None:
        written.append(row)

    async with AsyncOmniQ(backend="memory", url="ctx-readme-progress") as app:

        @app.task
        def export(rows: list[int]) -> None:
            for done, row in enumerate(rows, 1):
                write_row(row)
                omniq.report_progress(done, len(rows), f"row {row}")

        task_id = await export.enqueue([4, 5, 6])
        with anyio.fail_after(30):
            await app.run_worker(concurrency=1, burst=True)
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and written == [4, 5, 6]
