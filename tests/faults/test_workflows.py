"""Workflows (chain, group, chord) run by real worker processes, on every multi-process engine.

The producer knows the tasks by name only (``app.signature("add", 1, 2)``); the
functions live in faultapp, in the workers. On an engine with
``Capability.DEPENDENCIES`` a member waits in the engine until its parents
end: each member is claimed once (one STARTED event, never RELEASED).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from omniq import EventType, TaskStatus, WorkflowFailed, chain, chord, group

from .conftest import Cluster, wait_until


def test_results_flow_through_chains_groups_and_chords(cluster: Cluster) -> None:
    with cluster.producer() as app:
        s = app.signature
        linear = chain(s("add", 1, 2), s("add", 10), s("add", 5, 5).set(immutable=True), s("workflow_of")).enqueue()
        fan_in = chord(group(s("add", i, i) for i in range(30)), s("total")).enqueue()
        nested = group(chain(s("add", i, 1), s("add", 100)) for i in range(3)).enqueue()
        cluster.worker("--concurrency", "4")
        cluster.worker("--concurrency", "4", "--pool", "process")
        assert linear.get(timeout=60) == [10, linear.id]  # the member sees its workflow's id
        assert fan_in.get(timeout=60) == sum(2 * i for i in range(30))
        assert nested.get(timeout=60) == [101, 102, 103]
        for handle in (linear, fan_in, nested):
            for task_id in handle.task_ids:
                task = app.get_task(task_id)
                assert task is not None and task.status is TaskStatus.SUCCEEDED
                assert task.workflow_id == handle.id and task.waiting == 0
        callback = fan_in.result_ids[0]

        def callback_events() -> list[EventType] | None:  # workers write events in batches, after the result
            kinds = [e.type for e in app.get_events(callback)]
            return kinds if EventType.SUCCEEDED in kinds else None

        kinds = wait_until(callback_events, 30, "the callback's events")
        assert kinds.count(EventType.STARTED) == 1 and EventType.RELEASED not in kinds, kinds
        found = app.workflow(fan_in.id)
        assert found is not None and found.get(timeout=5) == 30 * 29


def test_a_failed_member_fails_what_depends_on_it(cluster: Cluster) -> None:
    with cluster.producer() as app:
        s = app.signature
        bad = s("fail_with", "boom")
        handle = chain(s("add", 1, 1), bad, s("add", 1), s("add", 2)).enqueue()
        cluster.worker("--concurrency", "2")
        with pytest.raises(WorkflowFailed) as failed:
            handle.get(timeout=60)
        first, failing, second, third = handle.task_ids
        assert failed.value.task_id == third
        assert failed.value.error is not None and failed.value.error.type == "DependencyFailed"
        assert second in failed.value.error.message  # the parent it waited on
        failure = app.get_result(failing, wait=True, timeout=30)
        assert failure is not None and failure.status is TaskStatus.FAILED
        assert failure.error is not None and failure.error.type == "ValueError"
        dependant = app.get_result(second, wait=True, timeout=30)
        assert dependant is not None and dependant.error is not None
        assert dependant.error.type == "DependencyFailed" and failing in dependant.error.message
        assert "fail_with" in dependant.error.message  # named by its task too
        parent = app.get_result(first, wait=True, timeout=30)
        assert parent is not None and parent.result == 2


def test_cancelling_a_workflow_cancels_every_unfinished_member(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "never"
    with cluster.producer() as app:
        s = app.signature
        handle = chord(group([s("wait_for", str(marker)), s("add", 1, 1)]), s("total")).enqueue()
        cluster.worker("--concurrency", "4")
        gate, quick, callback = handle.task_ids
        wait_until(
            lambda: (t := app.get_task(gate)) is not None and t.status is TaskStatus.RUNNING, 60, "the gate runs"
        )
        done = app.get_result(quick, wait=True, timeout=30)
        assert done is not None and done.result == 2
        assert app.cancel(handle.id)
        for task_id in (gate, callback):
            result = app.get_result(task_id, wait=True, timeout=30)
            assert result is not None and result.status is TaskStatus.CANCELLED, task_id
        with pytest.raises(WorkflowFailed) as failed:
            handle.get(timeout=30)
        assert failed.value.status is TaskStatus.CANCELLED
        assert not app.cancel(handle.id), "nothing left to cancel"
