"""The lifecycle seam: every event reaches a plugin registered at run time, through real workers.

Each test registers a plugin object with ``omniq.plugins.register`` before the
app connects (the dispatchers are built at connect and at worker start) and
unregisters it after. The engines are real: memory, and SQLite for the main
walk through every event.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pluggy
import pytest

from omniq import AsyncOmniQ, Settings, hookspecs, plugins
from omniq.hookspecs import hookimpl
from omniq.lifecycle import EVENTS, Lifecycle
from omniq.models import Task, TaskError, TaskResult, TaskStatus
from omniq.monitoring import WorkerInfo
from omniq.worker import task_log

from .conftest import FAST

pytestmark = pytest.mark.anyio

_SPAN: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)


class Recorder:
    """Implements every lifecycle hook and records the calls (name, arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.runs_entered: list[str] = []
        self.runs_exited: list[str] = []

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == event]

    def _add(self, event: str, **kwargs: Any) -> None:
        self.calls.append((event, kwargs))

    @hookimpl
    def omniq_task_headers(self, task: Task) -> dict[str, str] | None:
        self._add("task_headers", task=task)
        return {"traceparent": f"00-{task.id}-01"}

    @hookimpl
    def omniq_task_enqueued(self, task: Task) -> None:
        self._add("task_enqueued", task=task)

    @hookimpl
    def omniq_task_cancelled(self, task: Task) -> None:
        self._add("task_cancelled", task=task)

    @hookimpl
    def omniq_task_started(self, task: Task, worker_id: str) -> None:
        self._add("task_started", task=task, worker_id=worker_id)

    @hookimpl
    def omniq_task_run(self, task: Task, worker_id: str) -> contextlib.AbstractContextManager[None]:
        self._add("task_run", task=task, worker_id=worker_id)

        @contextlib.contextmanager
        def span() -> Iterator[None]:
            self.runs_entered.append(task.id)
            token = _SPAN.set(f"span-{task.id}")
            try:
                yield
            finally:
                _SPAN.reset(token)
                self.runs_exited.append(task.id)

        return span()

    @hookimpl
    def omniq_task_succeeded(self, task: Task, result: TaskResult, worker_id: str) -> None:
        self._add("task_succeeded", task=task, result=result, worker_id=worker_id)

    @hookimpl
    def omniq_task_failed(self, task: Task, error: TaskError, worker_id: str) -> None:
        self._add("task_failed", task=task, error=error, worker_id=worker_id)

    @hookimpl
    def omniq_task_retried(self, task: Task, error: TaskError, worker_id: str, delay: float) -> None:
        self._add("task_retried", task=task, error=error, worker_id=worker_id, delay=delay)

    @hookimpl
    def omniq_task_released(self, task: Task, worker_id: str) -> None:
        self._add("task_released", task=task, worker_id=worker_id)

    @hookimpl
    def omniq_task_expired(self, task: Task) -> None:
        self._add("task_expired", task=task)

    @hookimpl
    def omniq_task_lease_lost(self, task: Task, worker_id: str) -> None:
        self._add("task_lease_lost", task=task, worker_id=worker_id)

    @hookimpl
    def omniq_worker_started(self, worker_id: str, queues: tuple[str, ...]) -> None:
        self._add("worker_started", worker_id=worker_id, queues=queues)

    @hookimpl
    def omniq_worker_heartbeat(self, worker: WorkerInfo) -> None:
        self._add("worker_heartbeat", worker=worker)

    @hookimpl
    def omniq_worker_stopped(self, worker_id: str) -> None:
        self._add("worker_stopped", worker_id=worker_id)


class Raiser:
    """Raises in every hook (and its run context raises on enter)."""

    @hookimpl
    def omniq_task_headers(self, task: Task) -> dict[str, str]:
        raise RuntimeError("headers")

    @hookimpl
    def omniq_task_enqueued(self, task: Task) -> None:
        raise RuntimeError("enqueued")

    @hookimpl
    def omniq_task_started(self, task: Task, worker_id: str) -> None:
        raise RuntimeError("started")

    @hookimpl
    def omniq_task_run(self, task: Task, worker_id: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            raise RuntimeError("run")
            yield  # pragma: no cover

        return broken()

    @hookimpl
    def omniq_task_succeeded(self, task: Task, result: TaskResult, worker_id: str) -> None:
        raise RuntimeError("succeeded")

    @hookimpl
    def omniq_worker_started(self, worker_id: str, queues: tuple[str, ...]) -> None:
        raise RuntimeError("worker started")

    @hookimpl
    def omniq_worker_heartbeat(self, worker: WorkerInfo) -> None:
        raise RuntimeError("heartbeat")


@contextlib.contextmanager
def registered(plugin: object) -> Iterator[None]:
    plugins.register(plugin)
    try:
        yield
    finally:
        plugins.get_plugin_manager().unregister(plugin)


async def until(condition: Any, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_worker(app: AsyncOmniQ, **options: Any) -> AsyncIterator[Any]:
    pool = app.worker(**options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.start)
        await pool.wait_started()
        try:
            yield pool
        finally:
            await pool.stop()


@pytest.fixture(params=["memory", "sqlite"])
def engine_app(request: Any, make_app: Any, tmp_path: Path) -> Any:
    if request.param == "memory":
        return make_app
    return lambda **overrides: AsyncOmniQ(Settings(backend="sqlite", base_dir=tmp_path, **{**FAST, **overrides}))


async def test_a_plugin_receives_every_event_with_its_arguments(engine_app: Any) -> None:
    recorder = Recorder()
    with registered(recorder):
        async with engine_app(heartbeat_interval=0.2, lease_duration=1.5) as app:

            async def ok() -> int:
                return 7

            async def boom() -> None:
                raise ValueError("nope")

            async def slow() -> str | None:
                await anyio.sleep(30)
                return _SPAN.get()

            app.register(ok, name="ok")
            app.register(boom, name="boom")
            app.register(slow, name="slow")
            expired_id = await app.enqueue("ok", ttl=0.05)
            await anyio.sleep(0.2)  # its ttl passes before any worker runs
            ok_id = await app.enqueue("ok")
            boom_id = await app.enqueue("boom", max_retries=1)
            [enqueued] = [k["task"] for k in recorder.named("task_enqueued") if k["task"].id == ok_id]
            assert enqueued.headers == {"traceparent": f"00-{ok_id}-01"}
            stored = await app.get_task(ok_id)
            assert stored is not None and stored.headers == enqueued.headers
            assert {k["task"].id for k in recorder.named("task_headers")} == {expired_id, ok_id, boom_id}
            assert {k["task"].id for k in recorder.named("task_enqueued")} == {expired_id, ok_id, boom_id}

            async with running_worker(app) as pool:
                wid = pool.worker_id

                async def settled() -> bool:
                    return bool(recorder.named("task_failed")) and bool(recorder.named("task_succeeded"))

                await until(settled)
                slow_id = await app.enqueue("slow")
                await until(lambda: _async(any(k["task"].id == slow_id for k in recorder.named("task_started"))))
                assert await app.cancel(slow_id)
                await until(lambda: _async(bool(recorder.named("task_lease_lost"))))
                await until(lambda: _async(bool(recorder.named("worker_heartbeat"))))

        [started_worker] = recorder.named("worker_started")
        assert started_worker == {"worker_id": wid, "queues": ("default",)}
        assert recorder.named("worker_stopped") == [{"worker_id": wid}]
        [succeeded] = recorder.named("task_succeeded")
        assert succeeded["task"].id == ok_id and succeeded["worker_id"] == wid
        assert succeeded["task"].started_at is not None and succeeded["task"].func == "ok"
        assert succeeded["task"].queue == "default" and succeeded["task"].created_at is not None
        assert succeeded["result"].status is TaskStatus.SUCCEEDED
        assert succeeded["task"].headers == {"traceparent": f"00-{ok_id}-01"}  # carried to the worker
        [retried] = recorder.named("task_retried")
        assert retried["task"].id == boom_id and retried["task"].attempts == 1
        assert retried["error"].type == "ValueError" and retried["error"].message == "nope"
        assert isinstance(retried["delay"], float) and 0 <= retried["delay"] <= 1
        [failed] = recorder.named("task_failed")
        assert failed["task"].id == boom_id and failed["task"].attempts == 2 and failed["error"].type == "ValueError"
        assert [k["task"].id for k in recorder.named("task_expired")] == [expired_id]
        assert [k["task"].id for k in recorder.named("task_cancelled")] == [slow_id]
        assert recorder.named("task_cancelled")[0]["task"].status is TaskStatus.CANCELLED
        assert [(k["task"].id, k["worker_id"]) for k in recorder.named("task_lease_lost")] == [(slow_id, wid)]
        heartbeat = recorder.named("worker_heartbeat")[-1]["worker"]
        assert isinstance(heartbeat, WorkerInfo) and heartbeat.id == wid and heartbeat.processed >= 3
        assert heartbeat.failed == 1
        started = {k["task"].id for k in recorder.named("task_started")}
        assert {ok_id, boom_id, slow_id} <= started and expired_id in started
        ran = [k["task"].id for k in recorder.named("task_run")]
        assert sorted(ran) == sorted(recorder.runs_entered) == sorted(recorder.runs_exited)
        assert {ok_id, boom_id, slow_id} <= set(ran)


async def _async(value: bool) -> bool:
    return value


async def test_a_task_stopped_by_shutdown_is_released(make_app: Any) -> None:
    recorder = Recorder()
    with registered(recorder):
        async with make_app() as app:

            async def slow() -> None:
                await anyio.sleep(30)

            app.register(slow, name="slow")
            task_id = await app.enqueue("slow")
            pool = app.worker()
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.start)
                await until(lambda: _async(bool(recorder.named("task_started"))))
                await pool.stop(timeout=0.1)
    [released] = recorder.named("task_released")
    assert released["task"].id == task_id and released["worker_id"] == pool.worker_id


@pytest.mark.parametrize("pool_kind", ["async", "thread"])
async def test_the_run_context_wraps_the_function_where_it_runs(make_app: Any, pool_kind: str) -> None:
    """A contextvar set by an ``omniq_task_run`` context is seen by the task, in the thread pool too."""

    def sync_span() -> str | None:
        return _SPAN.get()

    async def async_span() -> str | None:
        return _SPAN.get()

    with registered(Recorder()):
        async with make_app() as app:
            app.register(sync_span, name="sync_span")
            app.register(async_span, name="async_span")
            ids = [await app.enqueue("sync_span"), await app.enqueue("async_span")]
            with anyio.fail_after(15):
                await app.worker(burst=True, pool=pool_kind).start()
            for task_id in ids:
                result = await app.get_result(task_id)
                assert result is not None and result.status is TaskStatus.SUCCEEDED
                assert app.serializer.loads(result.payload) == f"span-{task_id}"


async def test_a_raising_plugin_fails_no_task(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    with registered(Raiser()), registered(recorder), caplog.at_level(logging.ERROR, logger="omniq.lifecycle"):
        async with make_app(heartbeat_interval=0.1) as app:

            async def ok() -> int:
                return 1

            app.register(ok, name="ok")
            task_id = await app.enqueue("ok")
            async with running_worker(app):
                await until(lambda: _async(bool(recorder.named("worker_heartbeat"))))
                await until(lambda: _async(bool(recorder.named("task_succeeded"))))
            result = await app.get_result(task_id)
            assert result is not None and result.status is TaskStatus.SUCCEEDED
    # every other observer still saw every event (one raising does not silence the rest)
    assert [k["task"].id for k in recorder.named("task_enqueued")] == [task_id]
    assert recorder.runs_entered == recorder.runs_exited == [task_id]
    failed_in = {r.getMessage().split(" failed in ")[1].split(";")[0] for r in caplog.records}
    assert {"omniq_task_headers", "omniq_task_enqueued", "omniq_task_started", "omniq_task_run"} <= failed_in
    assert {"omniq_task_succeeded", "omniq_worker_started", "omniq_worker_heartbeat"} <= failed_in


def test_a_hook_no_plugin_implements_is_none() -> None:
    """Decided once, when the dispatcher is built: the call site skips a None attribute."""
    bare = pluggy.PluginManager("omniq")
    bare.add_hookspecs(hookspecs)
    lifecycle = Lifecycle(bare)
    assert lifecycle.names == frozenset()
    assert all(getattr(lifecycle, event) is None for event in EVENTS)
    assert all(getattr(Lifecycle.empty(), event) is None for event in EVENTS)
    # the default manager holds the built-in task log (succeeded, failed, ...) and nothing for the rest
    default = Lifecycle()
    assert default.task_started is None and default.task_enqueued is None and default.task_run is None
    assert default.task_succeeded is not None
    assert plugins.get_plugin_manager().get_plugin(task_log.PLUGIN_NAME) is task_log
    with registered(Recorder()):
        assert Lifecycle().names == frozenset(EVENTS)
    assert Lifecycle().task_started is None


async def test_a_worker_is_in_the_registry_while_it_runs(engine_app: Any) -> None:
    async with engine_app(heartbeat_interval=0.1) as app:

        async def ok() -> int:
            return 1

        async def boom() -> None:
            raise ValueError("x")

        app.register(ok, name="ok")
        app.register(boom, name="boom")
        await app.enqueue("ok")
        await app.enqueue("boom", max_retries=0)
        async with running_worker(app, concurrency=3) as pool:

            async def counted() -> bool:
                mine = [w for w in await app.task_queue.list_workers() if w.id == pool.worker_id]
                return bool(mine) and mine[0].processed == 2

            await until(counted)
            [info] = [w for w in await app.task_queue.list_workers() if w.id == pool.worker_id]
            assert info.failed == 1 and info.in_flight == 0 and info.concurrency == 3
            assert info.queues == ("default",) and info.pool == "async" and info.pid > 0 and info.version
            assert info.heartbeat_at >= info.started_at
        assert pool.worker_id not in [w.id for w in await app.task_queue.list_workers()]


def test_an_implementation_gets_the_arguments_it_names_in_any_order() -> None:
    """Call sites pass the hookspec's arguments by position; each implementation gets what it names."""
    seen: list[Any] = []

    class Subset:
        @hookimpl
        def omniq_task_retried(self, delay: float, task: Task) -> None:
            seen.append((delay, task.id))

    class Wrapper:
        @hookimpl(wrapper=True)
        def omniq_task_headers(self, task: Task) -> Any:
            results = yield
            seen.append(("wrapped", task.id))
            return results

    bare = pluggy.PluginManager("omniq")
    bare.add_hookspecs(hookspecs)
    bare.register(Subset())
    bare.register(Recorder())
    task = Task(id="t1", func="f")
    lifecycle = Lifecycle(bare)
    assert lifecycle.task_retried is not None and lifecycle.task_headers is not None
    lifecycle.task_retried(task, TaskError(type="E", message="m"), "w", 1.5)
    assert seen == [(1.5, "t1")]
    assert lifecycle.task_headers(task) == [{"traceparent": "00-t1-01"}]
    bare.register(Wrapper())  # a wrapper: the hook is called through pluggy, with the same results
    lifecycle = Lifecycle(bare)
    assert lifecycle.task_headers is not None
    assert lifecycle.task_headers(task) == [{"traceparent": "00-t1-01"}]
    assert seen[-1] == ("wrapped", "t1")


async def test_a_failing_registry_never_stops_the_worker(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with make_app(heartbeat_interval=0.05) as app:
        calls: list[str] = []

        async def away(*args: Any) -> None:
            calls.append("down")
            raise ConnectionError("engine away")

        app.task_queue.register_worker = away
        app.task_queue.unregister_worker = away

        async def ok() -> int:
            return 1

        app.register(ok, name="ok")
        task_id = await app.enqueue("ok")
        with caplog.at_level(logging.WARNING, logger="omniq.worker"):
            async with running_worker(app):
                await until(lambda: _async(len(calls) >= 4))
                result = await app.get_result(task_id, wait=True, timeout=10)
                assert result is not None and result.status is TaskStatus.SUCCEEDED
    failures = [r.getMessage() for r in caplog.records if "registry update failed" in r.getMessage()]
    assert len(failures) == 1 and "engine away" in failures[0]  # once per outage, not at every heartbeat
    assert any("removing it from the registry failed" in r.getMessage() for r in caplog.records)
