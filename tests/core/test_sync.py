"""OmniQ (sync) delegates to AsyncOmniQ through a blocking portal; the two surfaces must not drift."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import anyio
import pytest

from omniq import AsyncOmniQ, OmniQ, Settings

#: AsyncOmniQ members that have no sync twin on purpose.
ASYNC_ONLY = {
    "register",
    "task",
    "resolve",
    "decode_args",
    "record_events",
    "task_queue",
    "result_storage",
    "event_storage",
    "functions",
    "settings",
    "serializer",
    "allowed_modules",
}


#: return types the sync façade wraps in its own sync twin.
SYNC_RETURNS = {
    "TaskFunction[Any, Any]": "SyncTaskFunction[Any, Any]",
    "AsyncWorkerPool": "SyncWorkerPool",
    "WorkflowHandle": "SyncWorkflowHandle",
    "WorkflowHandle | None": "SyncWorkflowHandle | None",
}


def _public_methods(cls: type) -> dict[str, Any]:
    return {name: member for name, member in vars(cls).items() if not name.startswith("_") and callable(member)}


def test_sync_surface_matches_async_surface() -> None:
    async_methods = _public_methods(AsyncOmniQ)
    sync_methods = _public_methods(OmniQ)
    missing = set(async_methods) - set(sync_methods) - ASYNC_ONLY
    assert not missing, f"OmniQ lacks {sorted(missing)}"
    for name in set(async_methods) & set(sync_methods) - ASYNC_ONLY - {"from_env", "from_yaml"}:
        a_params = list(inspect.signature(async_methods[name]).parameters.values())
        s_params = list(inspect.signature(sync_methods[name]).parameters.values())
        assert [(p.name, p.kind, p.default) for p in a_params] == [(p.name, p.kind, p.default) for p in s_params], name
        # the typed signature too: what mypy and IDEs show for the sync method is the async one's
        assert [p.annotation for p in a_params] == [p.annotation for p in s_params], name
        a_return = inspect.signature(async_methods[name]).return_annotation
        s_return = inspect.signature(sync_methods[name]).return_annotation
        assert SYNC_RETURNS.get(a_return, a_return) == s_return, name
        assert not inspect.iscoroutinefunction(sync_methods[name]), name


def test_sync_app_in_a_plain_script(make_settings: Any) -> None:
    with OmniQ(make_settings()) as app:

        @app.task
        def mul(a: int, b: int) -> int:
            return a * b

        task_id = mul.enqueue(6, 7)
        pool = app.worker(concurrency=2)
        pool.start()
        assert pool.running
        result = app.get_result(task_id, wait=True, timeout=10)
        pool.stop(timeout=5)
        assert not pool.running
    assert result is not None and result.result == 42


def test_sync_app_works_while_another_event_loop_runs(make_settings: Any) -> None:
    async def main() -> Any:
        # calling blocking code from a coroutine is what users do in notebooks and legacy apps
        with OmniQ(make_settings()) as app:
            app.register(lambda: "from inside a loop", name="f")
            task_id = app.enqueue("f")
            app.worker(burst=True).run()
            return app.get_result(task_id)

    result = anyio.run(main)
    assert result is not None and result.result == "from inside a loop"


def test_pool_start_in_a_thread_like_the_seed_project(make_settings: Any) -> None:
    app = OmniQ(make_settings())
    try:
        app.register(lambda x: x + 1, name="inc")
        pool = app.worker(concurrency=2)
        thread = threading.Thread(target=pool.start)
        thread.start()
        task_id = app.enqueue("inc", 1)
        result = app.get_result(task_id, wait=True, timeout=10)
        assert result is not None and result.result == 2
        pool.stop()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        app.close()
    with pytest.raises(RuntimeError, match="closed"):
        app.enqueue("inc", 1)


def test_from_env_builds_sync_and_async_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_BACKEND", "memory")
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "3")
    assert AsyncOmniQ.from_env().settings.max_workers == 3
    app = OmniQ.from_env(max_workers=4)
    try:
        assert app.settings.backend == "memory" and app.settings.max_workers == 4
    finally:
        app.close()
    assert AsyncOmniQ().settings == Settings.load()


def _triple(x: int) -> int:
    return 3 * x


def test_a_sync_handle_of_another_app_registers_and_enqueues_as_its_function() -> None:
    with OmniQ(backend="memory", url="sync-handle-origin") as origin:
        handle = origin.task(_triple)

        async def main() -> None:
            async with AsyncOmniQ(backend="memory", url="sync-handle-other") as other:
                registered = other.register(handle)
                assert registered.func is _triple and registered.name == handle.name
                task_id = await other.enqueue(handle, 5)  # by the handle: no "different function" error
                await other.worker(burst=True).start()
                result = await other.get_result(task_id, wait=True, timeout=10)
                assert result is not None and result.result == 15

        anyio.run(main)
