"""Workflows: signatures, chain, group and chord (omniq.workflows) through the app, eager mode and sync code.

Real worker pools in this process, on the memory engine (the reference of
``Capability.DEPENDENCIES``), SQLite, and a queue and results on different
engines; tests/faults/test_workflows.py runs them in worker processes on
every multi-process engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq import (
    AsyncOmniQ,
    ConfigurationError,
    EventType,
    OmniQ,
    Settings,
    TaskArgumentError,
    TaskStatus,
    WorkflowFailed,
    WorkflowNotFinished,
    chain,
    chord,
    current_task,
    group,
)

pytestmark = pytest.mark.anyio


def register(app: AsyncOmniQ | OmniQ) -> dict[str, Any]:
    @app.task(name="wf.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="wf.total")
    async def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="wf.fail", max_retries=0)
    def fail(value: object) -> None:
        raise ValueError(f"cannot take {value!r}")

    @app.task(name="wf.whoami")
    def whoami(value: object) -> list[object]:
        return [value, current_task().workflow_id]

    return {"add": add, "total": total, "fail": fail, "whoami": whoami}


async def drain(app: AsyncOmniQ) -> None:
    with anyio.fail_after(60):
        await app.run_worker(concurrency=4, burst=True)


async def test_chain_group_and_chord_pass_results() -> None:
    async with AsyncOmniQ(backend="memory", url="wf-shapes") as app:
        t = register(app)
        add, total = t["add"], t["total"]
        linear = await chain(add.s(1, 2), add.s(10), add.si(5, 5), t["whoami"].s()).enqueue()
        piped = await (add.s(1, 1) | add.s(1)).enqueue()
        parallel = await group(add.s(i, i) for i in range(5)).enqueue()
        fan_in = await chord([add.s(i, 1) for i in range(4)], total.s()).enqueue()
        nested = await chain(add.s(0, 1), group(add.s(10), chain(add.s(20), add.s(300))), total.s()).enqueue()
        await drain(app)
        assert await linear.get() == [10, linear.id]
        assert await piped.get() == 3
        assert await parallel.get() == [0, 2, 4, 6, 8]
        assert await fan_in.get() == 10
        assert await nested.get() == 11 + 321
        assert len(nested.task_ids) == 5 and nested.result_ids == [nested.task_ids[-1]]
        for handle in (linear, parallel, fan_in, nested):
            for task_id in handle.task_ids:
                task = await app.get_task(task_id)
                assert task is not None and task.workflow_id == handle.id
        callback = await app.get_task(fan_in.result_ids[0])
        assert callback is not None and callback.depends_on == tuple(fan_in.task_ids[:4])
        kinds = [e.type for e in await app.get_events(callback.id)]
        assert kinds.count(EventType.STARTED) == 1 and EventType.RELEASED not in kinds, "claimed once, when ready"


async def test_a_dependant_waits_in_the_engine() -> None:
    async with AsyncOmniQ(backend="memory", url="wf-waiting") as app:
        t = register(app)
        handle = await chord([t["add"].s(1, 1), t["add"].s(2, 2)], t["total"].s()).enqueue()
        callback = await app.get_task(handle.result_ids[0])
        assert callback is not None and callback.status is TaskStatus.PENDING and callback.waiting == 2
        with pytest.raises(WorkflowNotFinished):
            await handle.get(wait=False)
        with pytest.raises(WorkflowNotFinished):
            await handle.get(timeout=0.2)
        await drain(app)
        assert await handle.get(wait=False) == 6


async def test_a_failure_fails_the_rest_naming_its_parent() -> None:
    async with AsyncOmniQ(backend="memory", url="wf-failure") as app:
        t = register(app)
        handle = await chain(t["add"].s(1, 1), t["fail"].s(), t["add"].s(1), t["add"].s(2)).enqueue()
        await drain(app)
        first, failing, second, third = handle.task_ids
        with pytest.raises(WorkflowFailed) as failed:
            await handle.get()
        assert failed.value.task_id == third and failed.value.status is TaskStatus.FAILED
        assert failed.value.error is not None and failed.value.error.type == "DependencyFailed"
        assert second in failed.value.error.message
        broken = await app.get_result(second)
        assert broken is not None and broken.error is not None
        assert broken.error.type == "DependencyFailed" and f"{failing} (wf.fail, failed)" in broken.error.message
        cause = await app.get_result(failing)
        assert cause is not None and cause.error is not None and cause.error.message == "cannot take 2"


async def test_cancel_by_workflow_id_cancels_what_is_left() -> None:
    async with AsyncOmniQ(backend="memory", url="wf-cancel") as app:
        t = register(app)
        handle = await chain(t["add"].s(1, 1), t["add"].s(1), t["add"].s(1)).enqueue()
        assert await app.cancel(handle.id)
        for task_id in handle.task_ids:
            task = await app.get_task(task_id)
            assert task is not None and task.status is TaskStatus.CANCELLED
        assert not await app.cancel(handle.id), "nothing left to cancel"
        assert not await app.cancel("0" * 32)
        found = await app.workflow(handle.id)
        assert found is not None and found.task_ids == handle.task_ids
        assert await app.workflow("0" * 32) is None
        with pytest.raises(WorkflowFailed) as failed:
            await found.get(wait=False)
        assert failed.value.status is TaskStatus.CANCELLED


async def test_bad_workflows_are_refused_and_enqueue_nothing() -> None:
    async with AsyncOmniQ(backend="memory", url="wf-bad") as app:
        t = register(app)
        add = t["add"]
        with pytest.raises(ValueError, match="at least one"):
            chain()
        with pytest.raises(ValueError, match="at least one"):
            group([])
        with pytest.raises(TypeError, match="signatures"):
            chain(add.s(1, 1), "wf.add")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="must end in one task"):
            await group(add.s(1, 1), group(add.s(2, 2))).enqueue()
        with pytest.raises(TaskArgumentError, match="wf.add"):
            await chain(add.s(1, 1), add.s(1, 2)).enqueue()  # the parent's value makes three arguments
        with pytest.raises(ConfigurationError, match="depends_on"):
            await chain(add.s(1, 1), add.s(1).set(depends_on="f" * 32)).enqueue()
        assert await app.count_tasks() == 0


async def test_across_engines_and_in_sqlite(tmp_path: Path) -> None:
    # The queue on SQLite, results and events in files: members read their parents' results there.
    settings = Settings(
        backend="sqlite",
        base_dir=tmp_path,
        result_storage_type="file",
        event_storage_type="file",
    )
    async with AsyncOmniQ(settings) as app:
        t = register(app)
        handle = await chord([t["add"].s(i, 1) for i in range(20)], t["total"].s()).enqueue()
        assert (await chain(t["add"].s(2, 3), t["add"].s(4)).enqueue()) is not None
        await drain(app)
        assert await handle.get(timeout=10) == sum(range(1, 21))


async def test_eager_mode_runs_workflows_at_enqueue() -> None:
    async with AsyncOmniQ(backend="memory", url="wf-eager", eager=True) as app:
        t = register(app)
        handle = await chord([t["add"].s(i, i) for i in range(3)], t["total"].s()).enqueue()
        assert await handle.get(wait=False) == 6
        failing = await chain(t["fail"].si(0), t["add"].s(1)).enqueue()
        with pytest.raises(WorkflowFailed) as failed:
            await failing.get(wait=False)
        assert failed.value.error is not None and failed.value.error.type == "DependencyFailed"


def test_sync_code_enqueues_and_waits() -> None:
    with OmniQ(backend="memory", url="wf-sync") as app:
        t = register(app)
        handle = chain(t["add"].s(1, 2), app.signature("wf.add", 3)).enqueue()
        fan_in = chord(group(t["add"].s(i, 0) for i in range(4)), t["total"].s()).enqueue()
        pool = app.worker(concurrency=2)
        pool.start()
        try:
            assert handle.get(timeout=30) == 6
            assert fan_in.get(timeout=30) == 6
            found = app.workflow(handle.id)
            assert found is not None and found.get(wait=False) == 6
        finally:
            pool.stop(10)
