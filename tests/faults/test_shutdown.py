"""Stopping real worker processes: a second signal releases the task, once, and the worker never claims again."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from omniq import EventType, TaskStatus

from .conftest import Cluster, wait_until

pytestmark = pytest.mark.slow


def test_second_sigint_releases_the_task_once_and_it_runs_once_elsewhere(cluster: Cluster, tmp_path: Path) -> None:
    # A long idle wait keeps a claim in flight while the task is released: it must not take the task back.
    cluster.env["OMNIQ_POLL_INTERVAL"] = "3"
    cluster.env["OMNIQ_LEASE_DURATION"] = "60"  # recovery by lease expiry would hide a lost release
    cluster.env["OMNIQ_HEARTBEAT_INTERVAL"] = "5"
    log = tmp_path / "first-worker.log"
    with cluster.producer() as app:
        task_id = app.enqueue("held_once", 1, 60.0)
        worker = cluster.worker(log_file=log)
        # The task's own marker, not its RUNNING status: a claim sets that before the worker starts the task
        # (and a claim still in flight when the stop comes is handed back unstarted, with no events).
        started = Path(f"{cluster.log}.held-1")
        wait_until(started.exists, 30, "the task to start")
        worker.send_signal(signal.SIGINT)
        wait_until(lambda: "stopping gracefully" in log.read_text(), 30, "the first signal to be handled")
        worker.send_signal(signal.SIGINT)
        worker.wait(30)
        output = log.read_text()
        assert worker.returncode == 0, output
        assert "stopped after 0 tasks" in output, output  # handed back, not processed

        task = app.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING, output
        assert task.attempts == 0  # released: no attempt burnt
        held = (task.started_at, task.worker_id, task.lease_token, task.lease_expires_at)
        assert held == (None, None, None, None)
        history = [(e.type, e.attempt) for e in app.get_events(task_id) if e.type is not EventType.ENQUEUED]
        assert history == [(EventType.STARTED, 1), (EventType.RELEASED, 1)], output

        second = cluster.worker("--burst")
        second_output, _ = second.communicate(timeout=60)
        assert second.returncode == 0, second_output
        result = app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.attempts == 1
    assert cluster.completions() == {1: 1}
