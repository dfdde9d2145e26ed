"""The sync API's request path: on engines with ``Capability.BLOCKING_ENQUEUE`` an enqueue runs in the caller's thread.

Nothing else changes for the caller: the same tasks, events and lifecycle hooks,
with the hooks now run in the caller's thread (so a tracing hook sees the
caller's context), and workers woken as by any enqueue.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq import OmniQ, Settings, hookimpl, plugins
from omniq.capabilities import Capability
from omniq.models import EventType, TaskStatus

SERVERS = ("redis", "postgres", "nats")


@pytest.fixture(params=["sqlite", "file", *(pytest.param(name, marks=pytest.mark.servers) for name in SERVERS)])
def blocking_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a store of this test's own on each engine with ``Capability.BLOCKING_ENQUEUE``."""
    backend: str = request.param
    if backend in ("sqlite", "file"):
        yield Settings(backend=backend, base_dir=tmp_path / "data", poll_interval=0.2)
        return
    from tests.faults.conftest import drop_server_data

    url: str = request.getfixturevalue(f"{backend}_url")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield Settings(backend=backend, url=url, key_prefix=prefix, poll_interval=0.2)
    anyio.run(drop_server_data, backend, url, prefix)


class ThreadRecorder:
    """Notes the thread each producer hook runs in, and stamps it into the task's headers."""

    def __init__(self) -> None:
        self.enqueued: dict[str, str] = {}

    @hookimpl
    def omniq_task_headers(self, task: Any) -> dict[str, str]:
        return {"thread": threading.current_thread().name}

    @hookimpl
    def omniq_task_enqueued(self, task: Any) -> None:
        self.enqueued[task.id] = threading.current_thread().name


def test_threads_enqueue_through_their_own_calls_and_nothing_is_lost(blocking_settings: Settings) -> None:
    recorder = ThreadRecorder()
    plugins.register(recorder, name="test-thread-recorder")
    ids: dict[str, list[str]] = {}
    try:
        with OmniQ(blocking_settings) as app:
            assert Capability.BLOCKING_ENQUEUE in app.async_app.task_queue.capabilities
            add = app.task(name="add")(lambda a, b: a + b)

            def produce(name: str, n: int) -> None:
                mine = [app.enqueue("add", i, 1) for i in range(n)]
                mine += [add.enqueue(100, i) for i in range(n)]
                mine += app.enqueue_many("add", [(i, 2) for i in range(n)])
                ids[name] = mine

            threads = [
                threading.Thread(target=produce, args=(f"producer-{k}", 10), name=f"producer-{k}") for k in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert sorted(ids) == [f"producer-{k}" for k in range(4)]
            app.worker(burst=True, concurrency=8).run()
            app.flush_events()
            for name, mine in ids.items():
                assert len(set(mine)) == 30
                for task_id in mine:
                    task = app.get_task(task_id)
                    assert task is not None and task.status is TaskStatus.SUCCEEDED
                    assert task.headers == {"thread": name}  # built in the caller's thread ...
                    assert recorder.enqueued[task_id] == name  # ... and announced there
                    assert EventType.ENQUEUED in {e.type for e in app.get_events(task_id)}
            results = [app.get_result(i) for i in ids["producer-0"]]
            assert [r.result for r in results if r is not None] == [
                *(i + 1 for i in range(10)),
                *(100 + i for i in range(10)),
                *(i + 2 for i in range(10)),
            ]
    finally:
        plugins.get_plugin_manager().unregister(name="test-thread-recorder")


def test_an_engine_without_the_capability_enqueues_through_the_loop(make_settings: Any) -> None:
    recorder = ThreadRecorder()
    plugins.register(recorder, name="test-thread-recorder")
    try:
        with OmniQ(make_settings()) as app:  # the memory engine: its state belongs to the loop
            assert Capability.BLOCKING_ENQUEUE not in app.async_app.task_queue.capabilities
            app.register(lambda: 1, name="f")
            task_id = app.enqueue("f")
            app.worker(burst=True).run()
            assert app.get_result(task_id).result == 1  # type: ignore[union-attr]
    finally:
        plugins.get_plugin_manager().unregister(name="test-thread-recorder")
    assert recorder.enqueued[task_id] == "omniq-portal"


def test_reads_run_in_the_callers_thread_while_the_loop_is_busy(blocking_settings: Settings) -> None:
    """``get_task`` and ``get_result`` (no ``wait``) answer with the app's loop thread held up.

    The loop thread is blocked on a ``threading.Event`` that this thread sets
    only after its reads returned (a watchdog sets it after 60 s, so a read
    that went through the loop fails the test instead of hanging it).
    """
    with OmniQ(blocking_settings) as app:
        assert Capability.BLOCKING_READS in app.async_app.task_queue.capabilities
        assert Capability.BLOCKING_READS in app.async_app.result_storage.capabilities
        app.task(name="double")(lambda x: {"twice": 2 * x})
        done, lost = app.enqueue("double", 21), app.enqueue("double", 5)
        pending = app.enqueue("double", 1, queue="nobody")
        app.worker(burst=True, queues=["default"]).run()
        assert app.async_app.result_storage is not None
        app._call(app.async_app.result_storage.delete, lost)  # a worker that died between the two writes
        release, watchdog_fired = threading.Event(), threading.Event()

        def watchdog() -> None:
            if not release.wait(60):
                watchdog_fired.set()
                release.set()

        async def hold_the_loop() -> None:
            release.wait()  # blocks the loop thread itself

        threading.Thread(target=watchdog, daemon=True).start()
        app._portal.portal.start_task_soon(hold_the_loop)
        try:
            task, waiting, unknown = app.get_task(done), app.get_task(pending), app.get_task(uuid.uuid4().hex)
            result, from_record = app.get_result(done), app.get_result(lost)
            none_yet, none_ever = app.get_result(pending), app.get_result(uuid.uuid4().hex)
        finally:
            release.set()
        assert not watchdog_fired.is_set(), "a read waited for the loop thread"
        assert task is not None and task.status is TaskStatus.SUCCEEDED and task.id == done
        assert waiting is not None and waiting.status is TaskStatus.PENDING and unknown is None
        assert result is not None and result.result == {"twice": 42}  # decoded as the async path decodes
        assert from_record is not None and from_record.status is TaskStatus.SUCCEEDED and from_record.task_id == lost
        assert none_yet is None and none_ever is None
        assert app.get_result(done, wait=True, timeout=5) == result  # waiting still goes through the loop
