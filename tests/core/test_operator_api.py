"""The operator API on the app (issue 15 item 4): retry, list_tasks filters and key paging, queue_stats, workers.

On the memory engine and on SQLite, through the public app only; the engines' own behaviour of the
operations is the conformance suite's (omniq.testing.task_queue).
"""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, ConfigurationError, EventType, OmniQ, Settings, TaskStatus
from omniq.capabilities import Capability
from omniq.models import utcnow
from omniq.monitoring import THROUGHPUT_MINUTES, WorkerInfo, page_cursor
from tests.core.conftest import FAST

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
def settings(request: pytest.FixtureRequest, make_settings: Any, tmp_path: Path) -> Settings:
    """Settings of an isolated store on each engine that runs in this process."""
    if request.param == "memory":
        return make_settings()  # type: ignore[no-any-return]
    return Settings(backend="sqlite", base_dir=tmp_path / "data", **FAST)


def _flaky(app: AsyncOmniQ, runs: list[int]) -> Any:
    """A task that fails on its first run only (no retries of its own), counting its runs."""

    @app.task(name="flaky", max_retries=0)
    def flaky(n: int) -> int:
        runs.append(n)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        return n * 2

    return flaky


async def test_retry_runs_a_failed_task_again_with_a_fresh_budget_and_keeps_its_history(settings: Settings) -> None:
    runs: list[int] = []
    async with AsyncOmniQ(settings) as app:
        task_id = await _flaky(app, runs).enqueue(21)
        await app.run_worker(burst=True)
        failed = await app.get_result(task_id)
        assert failed is not None and failed.status is TaskStatus.FAILED

        assert await app.retry(task_id) is True
        task = await app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING
        assert (task.attempts, task.error, task.finished_at, task.eta) == (0, None, None, None)
        assert await app.get_result(task_id) is None  # the old result is gone: a waiter waits for the new run
        assert await app.retry(task_id) is False  # pending now: not retryable

        await app.run_worker(burst=True)
        result = await app.get_result(task_id, wait=True, timeout=10)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == 42
        assert result.attempts == 1 and runs == [21, 21]
        types = [event.type for event in await app.get_events(task_id)]
        requeued = types.index(EventType.REQUEUED)
        assert EventType.FAILED in types[:requeued]  # the old attempt's history stays, before the requeue
        assert types[requeued + 1 :].count(EventType.STARTED) == 1 and types[-1] is EventType.SUCCEEDED


async def test_retry_of_a_cancelled_task_and_the_refusals(settings: Settings) -> None:
    async with AsyncOmniQ(settings) as app:
        app.register(lambda: "ok", name="ok")
        cancelled = await app.enqueue("ok")
        assert await app.cancel(cancelled)
        assert await app.retry(cancelled) is True
        assert (await app.get_task(cancelled)).status is TaskStatus.PENDING  # type: ignore[union-attr]
        await app.run_worker(burst=True)
        done = await app.get_result(cancelled, wait=True, timeout=10)
        assert done is not None and done.status is TaskStatus.SUCCEEDED
        assert await app.retry(cancelled) is False  # succeeded: not retryable
        assert await app.retry("no-such-task") is False


async def test_retry_keeps_one_live_task_per_unique_key(settings: Settings) -> None:
    runs: list[int] = []
    async with AsyncOmniQ(settings) as app:
        _flaky(app, runs)
        first = await app.enqueue("flaky", 1, unique_key="k")
        await app.run_worker(burst=True)
        second = await app.enqueue("flaky", 2, unique_key="k")  # the first is terminal: a new live task
        assert second != first
        assert await app.retry(first) is False  # the key is held by a live task
        task = await app.get_task(first)
        assert task is not None and task.status is TaskStatus.FAILED
        result = await app.get_result(first)  # still readable after the refused retry
        assert result is not None and result.status is TaskStatus.FAILED


async def test_list_tasks_filters_by_name_and_a_half_open_time_range(settings: Settings) -> None:
    async with AsyncOmniQ(settings) as app:
        alpha = [await app.enqueue("alpha", i) for i in range(3)]
        beta = await app.enqueue("beta", 0, queue="other")
        tasks = {task.id: task for task in await app.list_tasks(limit=10)}
        assert [t.id for t in await app.list_tasks(name="alpha", limit=10)] == alpha[::-1]
        assert [t.id for t in await app.list_tasks(name="beta", queue="other")] == [beta]
        assert await app.list_tasks(name="beta", queue="default") == []
        assert await app.list_tasks(name="alpha", status="failed") == []
        middle = tasks[alpha[1]].created_at
        newer = [t.id for t in await app.list_tasks(name="alpha", since=middle, limit=10)]
        older = [t.id for t in await app.list_tasks(name="alpha", until=middle, limit=10)]
        assert alpha[1] in newer and alpha[1] not in older  # since inclusive, until exclusive
        assert sorted(newer + older) == sorted(alpha)
        assert [t.id for t in await app.list_tasks(since=utcnow() + timedelta(hours=1))] == []


async def test_paging_by_cursor_never_skips_or_repeats_under_inserts(settings: Settings) -> None:
    async with AsyncOmniQ(settings) as app:
        first_ids = {await app.enqueue("f", i) for i in range(7)}
        seen: list[str] = []
        after: str | None = None
        while True:
            page = await app.list_tasks(name="f", limit=3, after=after)
            if not page:
                break
            seen += [task.id for task in page]
            after = page_cursor(page[-1].created_at, page[-1].id)
            await app.enqueue("f", 100)  # newer than every page: must not show up later in this walk
        assert len(seen) == len(set(seen)) == 7 and set(seen) == first_ids


async def test_list_tasks_refuses_bad_paging_arguments_before_any_backend_call(settings: Settings) -> None:
    async with AsyncOmniQ(settings) as app:
        with pytest.raises(ConfigurationError, match="not a page cursor"):
            await app.list_tasks(after="garbage")
        with pytest.raises(ConfigurationError, match="offset"):
            await app.list_tasks(name="f", offset=5)
        with pytest.raises(ConfigurationError, match="limit"):
            await app.list_tasks(name="f", limit=0)
        with pytest.raises(ConfigurationError, match="status"):
            await app.list_tasks("nope", name="f")


async def test_queue_stats_counts_statuses_ready_age_and_throughput(settings: Settings) -> None:
    runs: list[int] = []
    async with AsyncOmniQ(settings) as app:
        app.register(lambda n: n, name="ok")
        _flaky(app, runs)
        await app.enqueue("flaky", 1)  # fails
        await app.enqueue("ok", 1)  # succeeds
        await app.run_worker(burst=True)
        await app.enqueue("ok", 2, queue="later")
        await app.enqueue("ok", 3, queue="later", delay=3600)
        stats = {entry.queue: entry for entry in await app.queue_stats()}
        assert list(stats) == ["default", "later"]
        default, later = stats["default"], stats["later"]
        assert set(default.counts) == {status.value for status in TaskStatus}
        assert (default.counts["succeeded"], default.counts["failed"], default.counts["pending"]) == (1, 1, 0)
        assert len(default.completed_per_minute) == THROUGHPUT_MINUTES
        assert sum(default.completed_per_minute) == 2 and default.oldest_ready_age is None
        assert later.counts["pending"] == 2 and sum(later.completed_per_minute) == 0
        assert later.oldest_ready_age is not None and 0 <= later.oldest_ready_age < 60


async def test_list_workers_and_whether_the_registry_is_shared(settings: Settings) -> None:
    async with AsyncOmniQ(settings) as app:
        assert app.shared_worker_registry is (Capability.WORKER_REGISTRY in app.task_queue.capabilities)
        now = utcnow()
        info = WorkerInfo(
            id="operator-test-worker",
            hostname=socket.gethostname(),
            pid=1,
            queues=("default",),
            pool="async",
            concurrency=4,
            version="0",
            started_at=now,
            heartbeat_at=now,
        )
        await app.task_queue.register_worker(info, 30.0)
        try:
            assert "operator-test-worker" in [worker.id for worker in await app.list_workers()]
        finally:
            await app.task_queue.unregister_worker(info.id)
        assert "operator-test-worker" not in [worker.id for worker in await app.list_workers()]


def test_the_sync_app_has_the_operator_api(settings: Settings) -> None:
    runs: list[int] = []
    with OmniQ(settings) as app:

        @app.task(name="flaky", max_retries=0)
        def flaky(n: int) -> int:
            runs.append(n)
            if len(runs) == 1:
                raise RuntimeError("first run fails")
            return n

        task_id = flaky.enqueue(5)
        app.worker(burst=True).run()
        assert [t.id for t in app.list_tasks(status="failed", name="flaky")] == [task_id]
        assert app.retry(task_id) is True
        app.worker(burst=True).run()
        result = app.get_result(task_id, wait=True, timeout=10)
        assert result is not None and result.result == 5
        assert [entry.queue for entry in app.queue_stats()] == ["default"]
        assert isinstance(app.list_workers(), list) and isinstance(app.shared_worker_registry, bool)
