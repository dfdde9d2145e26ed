"""AsyncOmniQ end to end on the memory backend, with real in-process worker pools."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import anyio
import pytest

from omniq import (
    ConfigurationError,
    EventType,
    PayloadTooLargeError,
    SerializationError,
    TaskNotFoundError,
    TaskStatus,
    hookimpl,
    plugins,
)
from omniq.models import utcnow

pytestmark = pytest.mark.anyio


async def test_enqueue_run_and_get_result(make_app: Any) -> None:
    async with make_app() as app:

        @app.task
        async def add(a: int, b: int) -> int:
            return a + b

        task_id = await add.enqueue(2, b=3)
        assert isinstance(task_id, str)
        assert await app.get_result(task_id) is None  # not run yet
        await app.worker(concurrency=4, burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None
        assert result.status is TaskStatus.SUCCEEDED
        assert result.result == 5
        assert result.attempts == 1
        task = await app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.SUCCEEDED


async def test_sync_functions_run_in_threads_and_plain_callables_enqueue(make_app: Any) -> None:
    import threading

    main_thread = threading.get_ident()
    async with make_app() as app:

        def where() -> bool:
            return threading.get_ident() != main_thread

        task_id = await app.enqueue(where)
        await app.worker(burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None and result.result is True


async def test_enqueue_by_registered_name_and_many(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda x: x * 2, name="double")
        one = await app.enqueue("double", 21)
        many = await app.enqueue_many("double", [(1,), (2,), {"x": 3}, [4]])
        await app.worker(burst=True).start()
        assert (await app.get_result(one)).result == 42
        assert [(await app.get_result(i)).result for i in many] == [2, 4, 6, 8]


async def test_get_result_waits_for_a_running_worker(make_app: Any) -> None:
    async with make_app() as app:

        @app.task
        async def slow() -> str:
            await anyio.sleep(0.2)
            return "done"

        pool = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            await pool.wait_started()
            task_id = await slow.enqueue()
            result = await app.get_result(task_id, wait=True, timeout=10)
            assert result is not None and result.result == "done"
            await pool.stop()
        # No task and no result under this id: nothing could end the wait (TaskNotFoundError);
        # read without waiting, an unknown id is None, as an unfinished task's result is.
        with pytest.raises(TaskNotFoundError):
            await app.get_result("no-such-task", wait=True, timeout=0.3)
        assert await app.get_result("no-such-task") is None


async def test_max_retries_means_retries_after_the_first_attempt(make_app: Any) -> None:
    calls: list[int] = []
    async with make_app() as app:

        @app.task(max_retries=2)
        def flaky() -> None:
            calls.append(1)
            raise RuntimeError("boom")

        task_id = await flaky.enqueue()
        await app.worker(burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None
        assert result.status is TaskStatus.FAILED
        assert len(calls) == 3
        assert result.attempts == 3
        assert result.error is not None and result.error.type == "RuntimeError" and "boom" in result.error.traceback
        types = [e.type for e in await app.get_events(task_id)]
        assert types.count(EventType.RETRYING) == 2
        assert types[-1] is EventType.FAILED


async def test_retry_then_success(make_app: Any) -> None:
    attempts: list[int] = []
    async with make_app() as app:

        @app.task(max_retries=3)
        def second_time_lucky() -> str:
            attempts.append(1)
            if len(attempts) < 2:
                raise ValueError("transient")
            return "ok"

        task_id = await second_time_lucky.enqueue()
        await app.worker(burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None and result.result == "ok" and result.attempts == 2


async def test_unknown_task_is_recorded_and_the_worker_carries_on(make_app: Any) -> None:
    producer = make_app()
    async with producer, make_app() as worker_app:

        @producer.task(name="only.in.producer")
        def hidden() -> None: ...

        @worker_app.task(name="known")
        def known() -> int:
            return 1

        unknown_id = await producer.enqueue("only.in.producer")
        known_id = await producer.enqueue("known")
        await worker_app.worker(burst=True).start()
        failed = await producer.get_result(unknown_id)
        assert failed is not None and failed.status is TaskStatus.FAILED
        assert failed.error is not None and failed.error.type == "UnknownTaskError" and failed.attempts == 1
        ok = await producer.get_result(known_id)
        assert ok is not None and ok.status is TaskStatus.SUCCEEDED


async def test_corrupted_payload_fails_once_with_a_deserialization_error(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        good = await app.enqueue("f")
        task = app._build_task("f", (), {}, app.functions["f"].default_options)
        task.payload = b"\x07msgpack\xc1\xc1\xc1"
        bad = await app.task_queue.enqueue(task)
        await app.worker(burst=True).start()
        result = await app.get_result(bad)
        assert result is not None and result.status is TaskStatus.FAILED
        assert result.error is not None and result.error.type == "SerializationError"
        assert result.attempts == 1
        assert (await app.get_result(good)).status is TaskStatus.SUCCEEDED


async def test_bad_input_at_enqueue_raises_and_stores_nothing(make_app: Any) -> None:
    async with make_app(max_payload_size=1000) as app:
        app.register(lambda x: x, name="f")
        with pytest.raises(SerializationError):
            await app.enqueue("f", object())
        with pytest.raises(PayloadTooLargeError):
            await app.enqueue("f", "x" * 5000)
        with pytest.raises(ConfigurationError):
            await app.enqueue("f", 1, cron="not a cron")
        with pytest.raises(ConfigurationError):
            await app.enqueue("f", 1, interval=-1)
        with pytest.raises(TypeError, match="arguments"):
            await app.enqueue("f", 1, 2)  # f takes one argument
        assert await app.count_tasks() == 0


async def test_async_timeout_fails_the_attempt(make_app: Any) -> None:
    async with make_app() as app:

        @app.task(timeout=0.2, max_retries=0)
        async def sleepy() -> None:
            await anyio.sleep(30)

        task_id = await sleepy.enqueue()
        start = time.monotonic()
        await app.worker(burst=True).start()
        assert time.monotonic() - start < 20
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.FAILED
        assert result.error is not None and result.error.type == "TaskTimeoutError"


async def test_thread_timeout_releases_the_slot(make_app: Any) -> None:
    async with make_app() as app:
        import threading

        release = threading.Event()

        @app.task(timeout=0.2, max_retries=0)
        def blocking() -> None:
            release.wait(30)

        @app.task
        def quick() -> int:
            return 7

        slow_id = await blocking.enqueue()
        quick_id = await quick.enqueue()
        await app.worker(concurrency=1, pool="thread", burst=True).start()
        release.set()
        assert (await app.get_result(slow_id)).error.type == "TaskTimeoutError"
        assert (await app.get_result(quick_id)).result == 7


async def test_eta_delay_and_priority(make_app: Any) -> None:
    order: list[str] = []
    async with make_app() as app:

        @app.task
        def record(name: str) -> None:
            order.append(name)

        await record.options(priority=0).enqueue("low")
        await record.options(priority=10).enqueue("high")
        later = await record.options(delay=timedelta(seconds=0.3)).enqueue("later")
        task = await app.get_task(later)
        assert task is not None and task.eta is not None and task.eta > utcnow()
        await app.worker(concurrency=1, burst=True).start()
        assert order[:2] == ["high", "low"]
        # burst mode does not wait for tasks scheduled in the future
        assert "later" not in order
        await anyio.sleep(0.35)
        await app.worker(concurrency=1, burst=True).start()
        assert order[-1] == "later"


async def test_unique_key_returns_the_first_id_while_pending(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: None, name="f")
        first = await app.enqueue("f", unique_key="report-42")
        assert await app.enqueue("f", unique_key="report-42") == first
        await app.worker(burst=True).start()
        assert await app.enqueue("f", unique_key="report-42") != first


async def test_task_ttl_expires_unrun_tasks(make_app: Any) -> None:
    ran: list[int] = []
    async with make_app() as app:
        app.register(lambda: ran.append(1), name="f")
        task_id = await app.enqueue("f", ttl=0.05)
        await anyio.sleep(0.1)
        await app.worker(burst=True).start()
        assert ran == []
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.EXPIRED
        assert (await app.get_task(task_id)).status is TaskStatus.EXPIRED


async def test_result_ttl(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        task_id = await app.enqueue("f", result_ttl=1.5)
        await app.worker(burst=True).start()
        assert (await app.result_storage.get(task_id)) is not None
        await anyio.sleep(1.6)
        assert await app.result_storage.get(task_id) is None


async def test_dependencies_wait_and_failures_propagate(make_app: Any) -> None:
    order: list[str] = []
    async with make_app() as app:

        @app.task
        def step(name: str) -> None:
            order.append(name)

        @app.task(max_retries=0)
        def broken() -> None:
            raise RuntimeError("no")

        # the dependant is enqueued first and has the higher priority, yet runs last
        first = await step.options(delay=0.2).enqueue("first")
        then = await step.options(depends_on=[first], priority=5).enqueue("then")
        bad = await broken.enqueue()
        orphan = await step.options(depends_on=bad).enqueue("orphan")
        await app.worker(burst=True).start()
        assert order == ["first", "then"]
        assert (await app.get_result(then)).status is TaskStatus.SUCCEEDED
        failed = await app.get_result(orphan)
        assert failed is not None and failed.status is TaskStatus.FAILED
        assert failed.error is not None and failed.error.type == "DependencyFailed" and bad in failed.error.message


async def test_cancel_pending_and_running(make_app: Any) -> None:
    async with make_app() as app:
        started = anyio.Event()

        @app.task
        async def long() -> None:
            started.set()
            await anyio.sleep(30)

        pending = await long.options(delay=60).enqueue()
        assert await app.cancel(pending) is True
        assert await app.cancel(pending) is False
        assert (await app.get_result(pending)).status is TaskStatus.CANCELLED

        running = await long.enqueue()
        pool = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            await started.wait()
            assert await app.cancel(running) is True
            # the worker notices at its next heartbeat and frees the slot
            with anyio.fail_after(10):
                while pool._running:
                    await anyio.sleep(0.05)
            await pool.stop()
        assert (await app.get_task(running)).status is TaskStatus.CANCELLED


async def test_interval_schedule_runs_repeatedly_and_can_be_paused(make_app: Any) -> None:
    runs: list[float] = []
    async with make_app() as app:

        @app.task
        def tick() -> int:
            runs.append(time.monotonic())
            return len(runs)

        schedule_id = await tick.options(interval=0.1).enqueue()
        schedule = await app.get_schedule(schedule_id)
        assert schedule is not None and schedule.interval == 0.1
        pool = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            with anyio.fail_after(10):
                while len(runs) < 3:
                    await anyio.sleep(0.05)
            latest = await app.get_result(schedule_id)
            assert latest is not None and latest.result >= 3 - 1
            assert await app.pause_schedule(schedule_id)
            await anyio.sleep(0.3)  # let an in-flight run finish
            paused_at = len(runs)
            await anyio.sleep(0.4)
            assert len(runs) == paused_at
            assert await app.resume_schedule(schedule_id)
            with anyio.fail_after(10):
                while len(runs) <= paused_at:
                    await anyio.sleep(0.05)
            assert await app.cancel_schedule(schedule_id)
            await pool.stop()
        assert (await app.get_schedule(schedule_id)).status is TaskStatus.CANCELLED


async def test_interval_fires_once_per_tick_with_many_workers(make_app: Any) -> None:
    runs: list[int] = []
    async with make_app() as app:
        app.register(lambda: runs.append(1), name="tick")
        schedule_id = await app.enqueue("tick", interval=0.2)
        pools = [app.worker(concurrency=4) for _ in range(3)]
        async with anyio.create_task_group() as tg:
            for pool in pools:
                tg.start_soon(pool.start)
            await anyio.sleep(1.0)
            await app.cancel_schedule(schedule_id)
            for pool in pools:
                await pool.stop()
        # five ticks in one second, give or take one at each end; many workers must not multiply them
        assert 3 <= len(runs) <= 7


async def test_graceful_stop_releases_unfinished_tasks_without_burning_attempts(make_app: Any) -> None:
    async with make_app(shutdown_grace=0.2) as app:
        started = anyio.Event()

        @app.task
        async def forever() -> None:
            started.set()
            await anyio.sleep(60)

        task_id = await forever.enqueue()
        pool = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            await started.wait()
            await pool.stop()
        task = await app.get_task(task_id)
        assert task is not None
        assert task.status is TaskStatus.PENDING
        assert task.attempts == 0
        assert task.lease_token is None


async def test_lease_expiry_reruns_an_abandoned_task(make_app: Any) -> None:
    async with make_app(lease_duration=0.5, heartbeat_interval=0.2) as app:
        app.register(lambda: "second run", name="f")
        task_id = await app.enqueue("f")
        # a worker that claims and then vanishes without finishing or heartbeating
        abandoned = await app.task_queue.claim(["default"], 1, lease=0.3, worker_id="ghost")
        assert [t.id for t in abandoned] == [task_id]
        pool = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            result = await app.get_result(task_id, wait=True, timeout=10)
            await pool.stop()
        assert result is not None and result.result == "second run" and result.attempts == 2


async def test_events_can_be_disabled(make_app: Any) -> None:
    async with make_app(events_enabled=False) as app:
        app.register(lambda: 1, name="f")
        task_id = await app.enqueue("f")
        await app.worker(burst=True).start()
        assert (await app.get_result(task_id)).status is TaskStatus.SUCCEEDED
        assert await app.get_events(task_id) == []


async def test_events_record_the_lifecycle(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: 1, name="f")
        task_id = await app.enqueue("f")
        await app.worker(burst=True).start()
        types = [e.type for e in await app.get_events(task_id)]
        assert types == [EventType.ENQUEUED, EventType.STARTED, EventType.SUCCEEDED]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def omniq_task_enqueued(self, task: Any) -> None:
        self.seen.append("enqueued")

    @hookimpl
    def omniq_task_started(self, task: Any, worker_id: str) -> None:
        self.seen.append("started")

    @hookimpl
    def omniq_task_succeeded(self, task: Any, result: Any, worker_id: str) -> None:
        self.seen.append("succeeded")

    @hookimpl
    def omniq_worker_started(self, worker_id: str, queues: tuple[str, ...]) -> None:
        raise RuntimeError("a broken observer must not break the worker")


async def test_lifecycle_hooks_reach_observers_and_their_errors_are_contained(make_app: Any) -> None:
    recorder = Recorder()
    plugins.register(recorder, name="test-recorder")
    try:
        async with make_app() as app:
            app.register(lambda: 1, name="f")
            task_id = await app.enqueue("f")
            await app.worker(burst=True).start()
            assert (await app.get_result(task_id)).status is TaskStatus.SUCCEEDED
    finally:
        plugins.get_plugin_manager().unregister(name="test-recorder")
    assert recorder.seen == ["enqueued", "started", "succeeded"]


async def test_process_pool_runs_tasks_and_kills_overrunning_children(make_app: Any) -> None:
    async with make_app() as app:
        import os

        @app.task
        def pid() -> int:
            return os.getpid()

        @app.task(timeout=0.5, max_retries=0)
        def hang() -> None:
            time.sleep(60)

        pid_id = await pid.enqueue()
        hang_id = await hang.enqueue()
        start = time.monotonic()
        await app.worker(concurrency=2, pool="process", burst=True).start()
        assert time.monotonic() - start < 30
        result = await app.get_result(pid_id)
        assert result is not None and result.result != os.getpid()
        hung = await app.get_result(hang_id)
        assert hung is not None and hung.error is not None and hung.error.type == "TaskTimeoutError"


async def test_heartbeats_keep_a_long_blocking_task_leased(make_app: Any) -> None:
    # The lease (0.6 s) is far shorter than the task (1.5 s of blocking, non-async code):
    # only heartbeats from the worker loop keep another worker from running it again.
    runs: list[int] = []
    async with make_app(lease_duration=0.6, heartbeat_interval=0.15, sweep_interval=0.1) as app:

        @app.task
        def long_blocking() -> str:
            runs.append(1)
            time.sleep(1.5)
            return "once"

        task_id = await long_blocking.enqueue()
        pools = [app.worker(concurrency=2) for _ in range(2)]
        async with anyio.create_task_group() as tg:
            for pool in pools:
                tg.start_soon(pool.start)
            result = await app.get_result(task_id, wait=True, timeout=20)
            for pool in pools:
                await pool.stop()
        assert result is not None and result.result == "once" and result.attempts == 1
        assert runs == [1]


async def test_app_built_from_component_instances() -> None:
    from omniq import AsyncOmniQ, Settings
    from omniq.backends.memory import MemoryEventStorage, MemoryResultStorage, MemoryStore, MemoryTaskQueue

    store = MemoryStore()
    app = AsyncOmniQ(
        Settings(backend="nope-never-resolved"),
        task_queue=MemoryTaskQueue(store=store),
        result_storage=MemoryResultStorage(store=store),
        event_storage=MemoryEventStorage(store=store),
    )
    async with app:
        app.register(lambda: "built from instances", name="f")
        task_id = await app.enqueue("f")
        await app.worker(burst=True).start()
        assert (await app.get_result(task_id)).result == "built from instances"  # type: ignore[union-attr]
    assert await MemoryTaskQueue(store=store).count(status=TaskStatus.SUCCEEDED) == 1


async def test_workers_delete_expired_results_and_old_events(make_app: Any) -> None:
    async with make_app(event_ttl=0.2) as app:
        app.register(lambda: 1, name="f")
        task_id = await app.enqueue("f", result_ttl=0.2)
        await app.worker(burst=True).start()
        store = app.result_storage.store
        assert task_id in store.results
        await anyio.sleep(0.3)
        pool = app.worker()
        pool.housekeeping_interval = 0.05
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            with anyio.fail_after(10):
                while task_id in store.results:
                    await anyio.sleep(0.05)
            await pool.stop()
        assert await app.get_events(task_id) == []
