"""``omniq.report_progress`` from tasks in real worker processes, read by ``get_task`` and ``omniq inspect``, every engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from omniq import TaskStatus

from .conftest import HERE, Cluster, wait_until


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_running_task_shows_its_latest_progress(cluster: Cluster, tmp_path: Path, pool: str) -> None:
    marker = tmp_path / "go-on"
    with cluster.producer() as app:
        task_id = app.enqueue("progress_until", str(marker))
        cluster.worker("--pool", pool, "--concurrency", "2")

        def reported() -> object:
            task = app.get_task(task_id)
            return task is not None and task.progress is not None and task.progress.done == 3 and task

        task = wait_until(reported, 60, "the task's progress to show")
        assert task.status is TaskStatus.RUNNING
        assert (task.progress.total, task.progress.message) == (10, "step 3: exporting")
        assert task.progress.fraction == pytest.approx(0.3)
        assert task.progress.at >= task.started_at
        inspect = subprocess.run(
            [sys.executable, "-m", "omniq", "inspect", task_id],
            env=cluster.env,
            cwd=str(HERE),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "3/10 (30%) step 3: exporting" in inspect.stdout, inspect.stdout

        marker.touch()
        result = app.get_result(task_id, wait=True, timeout=60)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.result == "finished"
        finished = app.get_task(task_id)
        assert finished is not None and finished.progress is None  # shown while it runs only
