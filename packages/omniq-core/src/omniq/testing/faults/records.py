"""Tasks no worker can run: a poison task, a corrupted payload, an unknown name. Each fails once; the worker carries on."""

from __future__ import annotations

import signal
import subprocess

from omniq.models import Task, TaskStatus, new_id
from omniq.testing.faults.cluster import Cluster, FaultTests

__all__ = ["BadTaskTests"]


class BadTaskTests(FaultTests):
    """Real ``omniq worker`` processes meet tasks that kill them, cannot be decoded, or name no function."""

    def test_task_that_kills_its_process_ends_failed_instead_of_looping(self, cluster: Cluster) -> None:
        """The poison task: attempts are counted at claim, so it reaches FAILED (LeaseExpired) after its last one."""
        with cluster.producer() as app:
            task_id = app.enqueue("suicide", max_retries=1)  # at most two attempts
            done = app.enqueue("record", 99)
            for _ in range(6):
                worker = cluster.worker()
                try:
                    worker.wait(timeout=8)  # it dies when it runs the task
                except subprocess.TimeoutExpired:
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(30)
                task = app.get_task(task_id)
                assert task is not None
                if task.status is TaskStatus.FAILED:
                    break
            assert task is not None and task.status is TaskStatus.FAILED
            assert task.attempts == 2
            assert task.error is not None and task.error.type == "LeaseExpired"
            result = app.get_result(task_id)
            assert result is not None and result.status is TaskStatus.FAILED
            assert app.get_result(done, wait=True, timeout=30).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]

    def test_corrupted_payload_fails_once_and_the_worker_carries_on(self, cluster: Cluster) -> None:
        with cluster.producer() as app:
            bad = Task(id=new_id(), func="record", payload=b"\x07msgpack\xc1not-msgpack", max_retries=3)
            app._call(app.async_app.task_queue.enqueue, bad)
            good = app.enqueue("record", 5)
            worker = cluster.worker("--burst")
            output, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0, output
            result = app.get_result(bad.id)
            assert result is not None and result.status is TaskStatus.FAILED and result.attempts == 1
            assert result.error is not None and result.error.type == "SerializationError"
            assert app.get_result(good).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
        assert cluster.completions() == {5: 1}

    def test_unknown_task_fails_once_and_the_worker_carries_on(self, cluster: Cluster) -> None:
        """A task whose name the worker's app does not register (a producer ahead of its workers) is not retried."""
        with cluster.producer() as app:
            unknown = app.enqueue("not.registered", 1, max_retries=3)
            good = app.enqueue("record", 6)
            worker = cluster.worker("--burst")
            output, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0, output
            result = app.get_result(unknown)
            assert result is not None and result.status is TaskStatus.FAILED and result.attempts == 1, output
            assert result.error is not None and result.error.type == "UnknownTaskError"
            assert not result.error.retryable
            assert app.get_result(good).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
        assert cluster.completions() == {6: 1}
